"""Issue 14 item 4: many keys. What a keyed instance costs in memory, and what a
message to a new key costs against one to an existing key.

One ``nats-server`` and one worker process serving the example counter
(``python -m actormesh --prefix bench worker actormesh_counter:Counter``: one
``Counter`` instance per key, default settings, default mailbox of 10,000
messages). The driver sends ``Inc`` (``{"type":"Inc","by":1}``) with the shared
raw pipelined publisher (`bench._clients.RawPublisher`: a unique
``Nats-Msg-Id`` each, 1,024 PubAcks in flight, a full mailbox backed off and
resent with the same id; refusals are counted), in phases, each timed until
the worker has acked everything (the consumer has nothing pending):

0. warm-up: 1,000 messages to 1,000 keys (``w0`` ...), then the worker's RSS
   ("before", 2 s after the drain);
1. new keys: one message to each of N distinct keys (``k0`` ... ``k<N-1>``;
   N = 100,000, 10,000 with ``--quick``): worker RSS after; growth / N is the
   memory per keyed instance (with whatever per-key bookkeeping the worker
   keeps);
2. existing keys: one more message to each of the same N keys;
3. one hot key: N messages to one existing key (``hot``, created in warm-up).

Worker CPU (user + system) per message of each phase is the cost of a message
to a new key, to an existing (idle) key, and to a busy key. At the end two asks
check the state (``Get`` on ``k0`` is 2, on ``hot`` is N + 1).

Run: ``python -m bench.bench_keys [--quick]`` or ``python -m bench --only keys``.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import msgspec
import nats

from bench._clients import RawPublisher
from bench._proc import MeshWorker, run_loop, self_cpu

PREFIX = "bench"
BASE = f"{PREFIX}.mbox.counter."
STREAM, DURABLE = "BENCH_MBOX_COUNTER", "counter"
WARM = 1_000
MiB = 1024 * 1024


def log(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


async def _phase(
    name: str, n: int, key: Any, pub: RawPublisher, js: Any, worker: MeshWorker
) -> dict[str, Any]:
    refused, wcpu, dcpu = pub.refusals, worker.cpu(), self_cpu()
    t0 = time.perf_counter()
    await pub.tell(n, subject_of=lambda i: BASE + key(i))
    await worker.drained(js, STREAM, DURABLE, timeout=600.0)
    seconds = time.perf_counter() - t0
    out = {
        "phase": name,
        "messages": n,
        "seconds": round(seconds, 2),
        "rate": n / seconds,
        "worker_cpu_us": (worker.cpu() - wcpu) / n * 1e6,
        "driver_cpu_us": (self_cpu() - dcpu) / n * 1e6,
        "refusals": pub.refusals - refused,
    }
    log(
        f"[keys] {name}: {n:,} in {seconds:.2f}s = {out['rate']:,.0f}/s, worker "
        f"{out['worker_cpu_us']:.1f} us/msg, {out['refusals']:,} refusals"
    )
    return out


async def _check(url: str, n: int) -> str:
    from actormesh import Mesh
    from actormesh_counter import Counter, Get

    mesh = await Mesh.connect(url, prefix=PREFIX)
    try:
        k0 = await mesh.ref(Counter, "k0").ask(Get(), timeout=30.0)
        hot = await mesh.ref(Counter, "hot").ask(Get(), timeout=30.0)
    finally:
        await mesh.close()
    ok = k0 == 2 and hot == n + 1
    return f"k0={k0} hot={hot} ({'ok' if ok else 'WRONG: expected 2 and ' + str(n + 1)})"


async def run(n: int) -> dict[str, Any]:
    from actormesh.testing import NatsServer
    from actormesh_counter import Inc

    async with NatsServer() as server:
        nc = await nats.connect(server.url, name="bench-control")
        js = nc.jetstream()
        worker = MeshWorker("actormesh_counter:Counter", server.url, Path(tempfile.mkdtemp()))
        pub = RawPublisher(BASE + "k0", msgspec.json.encode(Inc()))
        worker.start()
        try:
            await worker.wait_pulling(js, STREAM, DURABLE)
            await asyncio.sleep(2.0)
            rss_idle = worker.rss()
            await pub.start(server.url)
            warm = await _phase("warm-up", WARM, lambda i: f"w{i}", pub, js, worker)
            await pub.tell(1, subject_of=lambda i: BASE + "hot")
            await worker.drained(js, STREAM, DURABLE, timeout=600.0)
            await asyncio.sleep(2.0)
            rss_before = worker.rss()
            phases = [warm]
            phases.append(await _phase("new keys", n, lambda i: f"k{i}", pub, js, worker))
            await asyncio.sleep(2.0)
            rss_after = worker.rss()
            phases.append(await _phase("existing keys", n, lambda i: f"k{i}", pub, js, worker))
            phases.append(await _phase("one hot key", n, lambda i: "hot", pub, js, worker))
            await asyncio.sleep(1.0)
            rss_end = worker.rss()
            check = await _check(server.url, n)
        finally:
            await pub.close()
            await worker.stop()
            await nc.close()
    return {
        "keys": n,
        "rss_idle_mb": rss_idle / MiB,
        "rss_before_mb": rss_before / MiB,
        "rss_after_mb": rss_after / MiB,
        "rss_end_mb": rss_end / MiB,
        "bytes_per_instance": (rss_after - rss_before) / n,
        "phases": phases,
        "check": check,
    }


def render(r: dict[str, Any]) -> str:
    n = r["keys"]
    lines = [
        f"Many keys: the example counter (`actormesh_counter:Counter`), {n:,} distinct keys.",
        "",
        "| worker RSS | MB |",
        "|---|--:|",
        f"| idle, no instance | {r['rss_idle_mb']:.1f} |",
        f"| before: after warm-up ({WARM:,} + 1 instances) | {r['rss_before_mb']:.1f} |",
        f"| after {n:,} new keyed instances | {r['rss_after_mb']:.1f} |",
        f"| at the end (after {2 * n:,} more messages to existing keys) | {r['rss_end_mb']:.1f} |",
        "",
        f"Growth per keyed instance: {r['bytes_per_instance']:,.0f} bytes "
        f"(({r['rss_after_mb']:.1f} - {r['rss_before_mb']:.1f}) MB / {n:,}).",
        "",
        "| phase | messages | msg/s | worker CPU us/msg | driver CPU us/msg | refusals |",
        "|---|--:|--:|--:|--:|--:|",
    ]
    for p in r["phases"]:
        lines.append(
            f"| {p['phase']} | {p['messages']:,} | {p['rate']:,.0f} | {p['worker_cpu_us']:.1f} "
            f"| {p['driver_cpu_us']:.1f} | {p['refusals']:,} |"
        )
    phases = {p["phase"]: p for p in r["phases"]}
    new, old = phases["new keys"]["worker_cpu_us"], phases["existing keys"]["worker_cpu_us"]
    lines += [
        "",
        f"A message to a new key costs the worker {new:.1f} us against {old:.1f} us to an "
        f"existing idle key ({new / old:.2f}x). State check: {r['check']}.",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    p = argparse.ArgumentParser(prog="bench.bench_keys", description=__doc__)
    p.add_argument("--quick", action="store_true", help="10,000 keys instead of 100,000")
    p.add_argument("--keys", type=int, default=0, help="number of distinct keys")
    args = p.parse_args(argv)
    n = args.keys or (10_000 if args.quick else 100_000)
    started = time.monotonic()
    result = run_loop(run(n))
    result["name"] = "keys"
    result["seconds"] = round(time.monotonic() - started, 1)
    result["markdown"] = render(result)
    return dict(result)


if __name__ == "__main__":
    print(main(sys.argv[1:])["markdown"])
