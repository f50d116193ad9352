"""Issue 15: durable state. The actormesh durable counter against a raw nats-py
loop doing the same work, and what passivated keys and activations cost.

1. Throughput (``tell``). Two contenders, each unit on a fresh ``nats-server``
   (same binary and settings: JetStream, file storage, default sync) and a
   fresh worker process, repetitions interleaved (raw, actormesh, raw, ...),
   medians reported:

   - ``raw``: `bench.raw_state_worker` -- the plain per-message loop:
     continuous pull (`bench.raw_worker.consume_continuous`), decode, the key's
     cached value and KV revision (``kv.get`` on the key's first message), a
     compare-and-set write (JetStream publish to ``$KV.<bucket>.<key>`` with
     ``Nats-Expected-Last-Subject-Sequence``, awaiting the PubAck), then ack.
     One write in flight at a time.
   - ``actormesh``: ``python -m actormesh worker actormesh_counter:Counter``
     (the example counter with `state: CounterState`, default settings: one
     commit for the messages queued on a key, at most 256 messages held);
   - not baselines, to show where the time goes: ``raw-batched``, the raw
     worker with the same batching by hand (``--commit batched``) under the
     same bound (its consumer's max_ack_pending = 256), and
     ``actormesh-prefetch``, actormesh with ``--prefetch 1000`` (deeper
     batches when many keys share the prefetch).

   Both mailboxes are at actormesh's default bounds (bench_mesh.STREAM). THE
   SAME raw pipelined publisher (`bench._clients.RawPublisher`: a unique
   ``Nats-Msg-Id`` each, 1,024 PubAcks in flight, full-mailbox refusals backed
   off and resent) sends the same payload (``Inc``: ``{"type":"Inc","by":1}``)
   to both, in two cases: N tells spread over K keys (``k<i mod K>``), and N
   tells to one hot key. A warm-up (one tell per key; 100 to the hot key)
   activates every key first. The clock runs from the first publish until the
   consumer has nothing pending or unacked (polled every 20 ms). CPU per
   message of each process (publisher = this driver, worker, nats-server) over
   the same span, and tells per KV write (the bucket stream's last sequence).
   At the end of each unit the stored values are read back from the bucket:
   every key must hold exactly the tells sent to it.

2. Many keys (``keys``): one worker serving `bench.state_actors:StateCounter`
   (the same counter, passivated after ``--idle-after`` seconds idle). Worker
   RSS idle, after a 1,000-key warm-up (passivated again), after activating M
   new keys (one tell each; M = 100,000), and after all of them are passivated
   (the worker's heartbeats say how many instances are live). Then one tell to
   each of the M passivated keys (activation: load + commit), and at once one
   more to each (live keys): worker CPU per message of each phase; the
   difference is the cost of an activation.

Run ``python -m bench.bench_state [--quick] [--only tell,keys] [--repeats N]``
or ``python -m bench --only state``. Progress goes to stderr.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import msgspec
import nats
from nats.aio.msg import Msg

from bench._clients import WINDOW, RawPublisher
from bench._proc import MeshWorker, WorkerProcess, load_footer, run_loop, self_cpu
from bench.bench_mesh import STREAM, CpuMeter

CONTENDERS = ("raw", "actormesh", "raw-batched", "actormesh-prefetch")
LABELS = {
    "raw": "raw nats-py, per-message loop (baseline)",
    "actormesh": "actormesh (actormesh_counter:Counter, defaults)",
    "raw-batched": "raw nats-py, batched per key, 256 held",
    "actormesh-prefetch": "actormesh, `--prefetch 1000`",
}
#: Messages a worker holds at once: actormesh's default `prefetch`, and what the
#: batched raw worker is held to (its consumer's max_ack_pending) so that both
#: batch under the same bound; `actormesh-prefetch` raises it to STREAM's 1,000.
HELD = 256
PREFETCH = 1000
CASES = ("keys", "hot")
RAW_BATCH = 256
POLL = 0.02
MiB = 1024 * 1024
#: Issue 15's target: actormesh tells/s at least this times raw's.
TARGET = 1.0


def log(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


@dataclass(frozen=True)
class Target:
    """Where a contender's worker reads from and writes its state to."""

    stream: str
    durable: str
    base: str
    bucket: str


TARGETS = {
    "raw": Target("RAW_STATE", "raw", "raw.state.", "RAW_STATE"),
    "raw-batched": Target("RAW_STATE", "raw", "raw.state.", "RAW_STATE"),
    "actormesh-prefetch": Target("BENCH_MBOX_COUNTER", "counter", "bench.mbox.counter.", ""),
    "actormesh": Target("BENCH_MBOX_COUNTER", "counter", "bench.mbox.counter.", ""),
}


def _inc_payload() -> bytes:
    from actormesh_counter import Inc

    return msgspec.json.encode(Inc())


def _stored_value(contender: str, data: bytes) -> int:
    """The counter value an entry holds (raw: {"value": n}; actormesh: its envelope)."""
    if contender.startswith("raw"):
        return int(json.loads(data)["value"])
    from actormesh._state import StateEnvelope

    env = msgspec.json.decode(data, type=StateEnvelope)
    return int(json.loads(bytes(env.state))["value"])


def _worker(contender: str, url: str, logdir: Path) -> WorkerProcess:
    if contender.startswith("actormesh"):
        worker = MeshWorker("actormesh_counter:Counter", url, logdir)
        if contender == "actormesh-prefetch":
            worker.cmd += ["--prefetch", str(PREFETCH)]
        return worker
    t = TARGETS[contender]
    cmd = [sys.executable, "-m", "bench.raw_state_worker", "--url", url, "--stream", t.stream]
    cmd += ["--subject", t.base + "*", "--durable", t.durable, "--bucket", t.bucket]
    cmd += ["--batch", str(RAW_BATCH)]
    cmd += ["--commit", "batched" if contender == "raw-batched" else "per-message"]
    for key, value in STREAM.items():
        if contender == "raw-batched" and key == "max_ack_pending":
            value = HELD
        cmd += [f"--{key.replace('_', '-')}", str(value)]
    log_path = logdir / f"worker-{contender}-state-{time.monotonic_ns()}.log"
    return WorkerProcess(contender, cmd, {}, log_path)


async def drained(
    js: Any, worker: WorkerProcess, t: Target, timeout: float, tag: str = "", n: int = 0
) -> None:
    """Wait until the consumer has nothing pending or unacked; log each fifth of `n`."""
    deadline = time.monotonic() + timeout
    first = None
    shown = 0
    while time.monotonic() < deadline:
        info = await js.consumer_info(t.stream, t.durable)
        if not info.num_pending and not info.num_ack_pending:
            return
        if not worker.alive():
            raise RuntimeError(f"{worker.name} worker exited:\n{worker.log_tail()}")
        if tag and n and info.ack_floor is not None:
            acked = info.ack_floor.consumer_seq or 0
            first = acked if first is None else first
            fifth = (acked - first) * 5 // n
            if fifth > shown:
                shown = fifth
                log(f"[{tag}] ~{acked - first:,}/{n:,} acked")
        await asyncio.sleep(POLL)
    raise TimeoutError(f"{tag or worker.name}: the mailbox did not drain in {timeout:.0f}s")


# -- 1. throughput ------------------------------------------------------------------


def _key_fn(case: str, keys: int) -> Callable[[int], str]:
    if case == "hot":
        return lambda i: "hot"
    return lambda i: f"k{i % keys}"


async def _verify(js: Any, contender: str, bucket: str, expected: dict[str, int]) -> str:
    from actormesh._state import kv_key

    kv = await js.key_value(bucket)
    wrong = []
    for key, want in expected.items():
        entry = await kv.get(kv_key(key))
        got = _stored_value(contender, entry.value or b"")
        if got != want:
            wrong.append(f"{key}={got} (want {want})")
    if wrong:
        return f"WRONG: {len(wrong)}/{len(expected)} keys, e.g. {', '.join(wrong[:3])}"
    return f"ok ({len(expected)} keys, {sum(expected.values()):,} tells)"


async def run_unit(
    contender: str, case: str, n: int, keys: int, tag: str, logdir: Path
) -> dict[str, Any]:
    from actormesh.testing import NatsServer

    t = TARGETS[contender]
    key_of = _key_fn(case, keys)
    warm = 100 if case == "hot" else keys
    async with NatsServer() as server:
        nc = await nats.connect(server.url, name="bench-control")
        js = nc.jetstream()
        worker = _worker(contender, server.url, logdir)
        pub = RawPublisher(t.base + "k0", _inc_payload())
        try:
            worker.start()
            await worker.wait_pulling(js, t.stream, t.durable)
            await pub.start(server.url)
            await pub.tell(warm, subject_of=lambda i: t.base + key_of(i))
            await drained(js, worker, t, 120.0)
            cpu = CpuMeter(worker, server.pid)  # type: ignore[arg-type]
            refused = pub.refusals
            cpu.start()
            t0 = time.perf_counter()
            await pub.tell(n, subject_of=lambda i: t.base + key_of(i))
            published = time.perf_counter() - t0
            await drained(js, worker, t, max(300.0, n / 100), tag, n)
            seconds = time.perf_counter() - t0
            out: dict[str, Any] = cpu.per_message_us(n)
            out.update(
                rate=n / seconds,
                seconds=seconds,
                publish_seconds=published,
                refusals=pub.refusals - refused,
            )
            expected: dict[str, int] = {}
            for i in [*range(warm), *range(n)]:
                expected[key_of(i)] = expected.get(key_of(i), 0) + 1
            bucket = t.bucket or _mesh_bucket("counter")
            out["check"] = await _verify(js, contender, bucket, expected)
            # Every KV write takes a sequence of the bucket's stream.
            info = await js.stream_info(f"KV_{bucket}")
            out["tells_per_write"] = (warm + n) / max(1, info.state.last_seq)
        finally:
            await pub.close()
            await worker.stop()
            with contextlib.suppress(Exception):
                await nc.close()
    log(
        f"[{tag}] {n:,} tells in {seconds:.2f}s = {out['rate']:,.0f}/s, "
        f"{out['tells_per_write']:.2f} tells per KV write, CPU us/msg "
        f"publisher {out['cpu_client_us']:.0f} worker {out['cpu_worker_us']:.0f} "
        f"broker {out['cpu_server_us']:.0f}, {out['refusals']:,} refusals; check {out['check']}"
    )
    return out


def _mesh_bucket(actor_type: str) -> str:
    from actormesh._subjects import Subjects

    return str(Subjects("bench").state_bucket(actor_type))


def _summarize(rows: dict[tuple[str, str], list[dict[str, Any]]]) -> list[dict[str, Any]]:
    """Medians per (case, contender) over the repetitions."""
    summary: list[dict[str, Any]] = []
    for case in CASES:
        for contender in CONTENDERS:
            runs = rows.get((case, contender), [])
            if not runs:
                continue
            row: dict[str, Any] = {"case": case, "contender": contender, "runs": len(runs)}
            row["label"] = LABELS[contender]
            fields = ("rate", "publish_seconds", "seconds")
            for field in (*fields, "cpu_client_us", "cpu_worker_us", "cpu_server_us"):
                row[field] = statistics.median(r[field] for r in runs)
            row["rates"] = [r["rate"] for r in runs]
            row["refusals"] = statistics.median(r["refusals"] for r in runs)
            row["tells_per_write"] = statistics.median(r["tells_per_write"] for r in runs)
            row["checks"] = sorted({r["check"].split(" (")[0] for r in runs})
            summary.append(row)
    return summary


def _ratios(summary: list[dict[str, Any]]) -> dict[str, float]:
    ratios: dict[str, float] = {}
    by = {(r["case"], r["contender"]): r for r in summary}
    for case in CASES:
        am, raw = by.get((case, "actormesh")), by.get((case, "raw"))
        if am and raw:
            ratios[f"{case}_rate"] = am["rate"] / raw["rate"]
            ratios[f"{case}_worker_cpu"] = am["cpu_worker_us"] / raw["cpu_worker_us"]
        pre = by.get((case, "actormesh-prefetch"))
        if pre and raw:
            ratios[f"{case}_rate_prefetch"] = pre["rate"] / raw["rate"]
        batched = by.get((case, "raw-batched"))
        if am and batched:
            ratios[f"{case}_rate_vs_batched"] = am["rate"] / batched["rate"]
            ratios[f"{case}_worker_cpu_vs_batched"] = am["cpu_worker_us"] / batched["cpu_worker_us"]
    return ratios


async def run_tell(n: int, keys: int, repeats: int, logdir: Path) -> dict[str, Any]:
    rows: dict[tuple[str, str], list[dict[str, Any]]] = {}
    errors: list[str] = []
    for rep in range(repeats):
        for case in CASES:
            for contender in CONTENDERS:
                tag = f"state {case}/{contender} {rep + 1}/{repeats}"
                try:
                    res = await run_unit(contender, case, n, keys, tag, logdir)
                    rows.setdefault((case, contender), []).append(res)
                except Exception as exc:
                    msg = f"{tag}: {type(exc).__name__}: {exc}"
                    log(f"!! {msg}")
                    errors.append(msg)
    summary = _summarize(rows)
    ratios = _ratios(summary)
    return {
        "tells": n,
        "keys": keys,
        "repeats": repeats,
        "rows": summary,
        "ratios": ratios,
        "errors": errors,
    }


# -- 2. many keys, passivation, activation ----------------------------------------------


class Heartbeats:
    """The worker's live instance count, from its heartbeats (one a second)."""

    def __init__(self) -> None:
        self.instances = -1
        self.passivated = 0
        self.at = 0.0

    async def _on(self, msg: Msg) -> None:
        data = json.loads(msg.data)
        self.instances = int(data.get("instances", -1))
        self.passivated = int(data.get("passivated", 0))
        self.at = time.monotonic()

    async def subscribe(self, nc: Any, actor_type: str) -> None:
        await nc.subscribe(f"bench.sys.hb.{actor_type}.>", cb=self._on)

    async def fresh(self) -> int:
        """The instance count of a heartbeat sent after now."""
        since = time.monotonic()
        for _ in range(100):
            if self.at > since:
                break
            await asyncio.sleep(0.05)
        return self.instances

    async def until_empty(self, timeout: float, worker: WorkerProcess) -> float:
        """Wait until no instance is live; the seconds it took."""
        t0 = time.monotonic()
        while time.monotonic() - t0 < timeout:
            if await self.fresh() == 0:
                return time.monotonic() - t0
            if not worker.alive():
                raise RuntimeError(f"worker exited:\n{worker.log_tail()}")
        raise TimeoutError(f"{self.instances} instances still live after {timeout:.0f}s")


async def _phase(
    name: str,
    n: int,
    key: Callable[[int], str],
    pub: RawPublisher,
    js: Any,
    worker: WorkerProcess,
    t: Target,
    hb: Heartbeats,
) -> dict[str, Any]:
    refused, wcpu, dcpu = pub.refusals, worker.cpu(), self_cpu()
    passivated = hb.passivated
    t0 = time.perf_counter()
    await pub.tell(n, subject_of=lambda i: t.base + key(i))
    await drained(js, worker, t, max(600.0, n / 50), f"keys {name}", n)
    seconds = time.perf_counter() - t0
    out = {
        "phase": name,
        "messages": n,
        "seconds": round(seconds, 2),
        "rate": n / seconds,
        "worker_cpu_us": (worker.cpu() - wcpu) / n * 1e6,
        "driver_cpu_us": (self_cpu() - dcpu) / n * 1e6,
        "refusals": pub.refusals - refused,
        "live_after": await hb.fresh(),
    }
    # Instances passivated while the phase ran: a "live keys" phase must show none.
    out["passivated_during"] = hb.passivated - passivated
    log(
        f"[keys] {name}: {n:,} in {seconds:.2f}s = {out['rate']:,.0f}/s, worker "
        f"{out['worker_cpu_us']:.1f} us/msg, {out['live_after']:,} live after"
    )
    return out


async def _passivated(
    hb: Heartbeats, idle_after: float, worker: WorkerProcess
) -> tuple[int, float]:
    """Wait until every instance is passivated; the worker's RSS 2 s later, and the wait."""
    log(f"[keys] waiting for {hb.instances:,} instances to passivate (idle_after {idle_after:g}s)")
    waited = await hb.until_empty(idle_after * 2 + 120, worker)
    await asyncio.sleep(2.0)
    return worker.rss(), waited


async def run_keys(n: int, idle_after: float, logdir: Path) -> dict[str, Any]:
    from actormesh.testing import NatsServer

    t = Target("BENCH_MBOX_STATECOUNTER", "statecounter", "bench.mbox.statecounter.", "")
    warm = 1_000
    async with NatsServer() as server:
        nc = await nats.connect(server.url, name="bench-control")
        js = nc.jetstream()
        hb = Heartbeats()
        await hb.subscribe(nc, "statecounter")
        worker = MeshWorker("bench.state_actors:StateCounter", server.url, logdir)
        worker.env["BENCH_IDLE_AFTER"] = str(idle_after)
        pub = RawPublisher(t.base + "w0", _inc_payload())
        try:
            worker.start()
            await worker.wait_pulling(js, t.stream, t.durable)
            await asyncio.sleep(2.0)
            rss_idle = worker.rss()
            await pub.start(server.url)
            phases = [await _phase("warm-up", warm, lambda i: f"w{i}", pub, js, worker, t, hb)]
            await hb.until_empty(idle_after * 2 + 60, worker)
            await asyncio.sleep(2.0)
            rss_before = worker.rss()
            key = lambda i: f"k{i}"  # noqa: E731
            phases.append(await _phase("new keys", n, key, pub, js, worker, t, hb))
            await asyncio.sleep(1.0)
            rss_active = worker.rss()
            rss_passivated, waited = await _passivated(hb, idle_after, worker)
            phases.append(await _phase("passivated keys", n, key, pub, js, worker, t, hb))
            phases.append(await _phase("live keys", n, key, pub, js, worker, t, hb))
            rss_again, _ = await _passivated(hb, idle_after, worker)
            other = lambda i: f"j{i}"  # noqa: E731
            phases.append(await _phase("other new keys", n, other, pub, js, worker, t, hb))
            rss_2n, _ = await _passivated(hb, idle_after, worker)
            passivated_total = hb.passivated
            every = max(1, n // 500)
            sample = {f"k{i}": 3 for i in range(0, n, every)}
            sample |= {f"j{i}": 1 for i in range(0, n, every)}
            check = await _verify(js, "actormesh", _mesh_bucket("statecounter"), sample)
        finally:
            await pub.close()
            await worker.stop()
            with contextlib.suppress(Exception):
                await nc.close()
    return {
        "keys": n,
        "idle_after": idle_after,
        "rss_idle_mb": rss_idle / MiB,
        "rss_before_mb": rss_before / MiB,
        "rss_active_mb": rss_active / MiB,
        "rss_passivated_mb": rss_passivated / MiB,
        "rss_passivated_again_mb": rss_again / MiB,
        "rss_passivated_2n_mb": rss_2n / MiB,
        "bytes_per_live_key": (rss_active - rss_before) / n,
        "bytes_per_passivated_key": (rss_passivated - rss_before) / n,
        "bytes_per_further_passivated_key": (rss_2n - rss_passivated) / n,
        "passivation_seconds": waited,
        "passivated_total": passivated_total,
        "phases": phases,
        "check": check,
    }


# -- the report --------------------------------------------------------------------------


def render_tell(r: dict[str, Any]) -> list[str]:
    lines = [
        f"Durable counter, {r['tells']:,} tells per run ({r['keys']} keys, or one hot key), "
        f"median of {r['repeats']} interleaved runs, each on a fresh nats-server; the same "
        f"raw pipelined publisher ({WINDOW:,} PubAcks in flight) feeds both.",
        "",
        "| case | contender | tells/s | runs | s (publisher done) | CPU us/msg publisher "
        "| worker | broker | tells per KV write | refusals | stored totals |",
        "|---|---|--:|---|--:|--:|--:|--:|--:|--:|---|",
    ]
    for row in r["rows"]:
        runs = ", ".join(f"{x:,.0f}" for x in row["rates"])
        lines.append(
            f"| {row['case']} | {row['label']} | {row['rate']:,.0f} | {runs} "
            f"| {row['seconds']:.2f} ({row['publish_seconds']:.2f}) "
            f"| {row['cpu_client_us']:.0f} | {row['cpu_worker_us']:.0f} "
            f"| {row['cpu_server_us']:.0f} | {row['tells_per_write']:.2f} | {row['refusals']:,.0f} "
            f"| {', '.join(row['checks'])} |"
        )
    lines.append("")
    for case in CASES:
        rate = r["ratios"].get(f"{case}_rate")
        if rate is not None:
            verdict = "meets" if rate >= TARGET else "MISSES"
            line = (
                f"- {case}: actormesh / raw = {rate:.2f}x tells/s ({verdict} the {TARGET:.1f}x "
                f"target), {r['ratios'][f'{case}_worker_cpu']:.2f}x worker CPU per message"
            )
            vs = r["ratios"].get(f"{case}_rate_vs_batched")
            if vs is not None:
                cpu = r["ratios"][f"{case}_worker_cpu_vs_batched"]
                line += f"; against raw batched {vs:.2f}x tells/s, {cpu:.2f}x worker CPU"
            pre = r["ratios"].get(f"{case}_rate_prefetch")
            if pre is not None:
                line += f"; with `--prefetch {PREFETCH}` {pre:.2f}x raw"
            lines.append(line + ".")
    if r["errors"]:
        lines += ["", "Errors: " + "; ".join(r["errors"])]
    return lines


def render_keys(r: dict[str, Any]) -> list[str]:
    n = r["keys"]
    per_100k = r["bytes_per_passivated_key"] * 100_000 / MiB
    lines = [
        f"Many keys: `bench.state_actors:StateCounter` (the example counter, passivated "
        f"after {r['idle_after']:g} s idle), {n:,} keys `k<i>`, then {n:,} others `j<i>`.",
        "",
        "| worker RSS | MB |",
        "|---|--:|",
        f"| idle, no instance | {r['rss_idle_mb']:.1f} |",
        f"| before: 1,000-key warm-up, passivated | {r['rss_before_mb']:.1f} |",
        f"| {n:,} `k` keys live | {r['rss_active_mb']:.1f} |",
        f"| all passivated (took {r['passivation_seconds']:.0f} s) "
        f"| {r['rss_passivated_mb']:.1f} |",
        f"| `k` keys activated again, then passivated again | {r['rss_passivated_again_mb']:.1f} |",
        f"| {n:,} other keys `j` activated, then all passivated ({2 * n:,} keys stored) "
        f"| {r['rss_passivated_2n_mb']:.1f} |",
        "",
        f"Per live key {r['bytes_per_live_key']:,.0f} bytes. After passivation "
        f"{r['bytes_per_passivated_key']:,.0f} bytes per passivated key stay in RSS "
        f"({per_100k:.1f} MB per 100,000); {n:,} more keys activated and passivated "
        f"after that add {r['bytes_per_further_passivated_key']:,.0f} bytes each "
        f"(RSS differences / {n:,}).",
        "",
        "| phase | messages | msg/s | worker CPU us/msg | driver CPU us/msg | refusals "
        "| live after | passivated during |",
        "|---|--:|--:|--:|--:|--:|--:|--:|",
    ]
    for p in r["phases"]:
        lines.append(
            f"| {p['phase']} | {p['messages']:,} | {p['rate']:,.0f} | {p['worker_cpu_us']:.1f} "
            f"| {p['driver_cpu_us']:.1f} | {p['refusals']:,} | {p['live_after']:,} "
            f"| {p['passivated_during']:,} |"
        )
    ph = {p["phase"]: p for p in r["phases"]}
    live = ph["live keys"]["worker_cpu_us"]
    act = ph["passivated keys"]["worker_cpu_us"]
    new = ph["new keys"]["worker_cpu_us"]
    lines += [
        "",
        f"Activation (load + new instance) costs the worker {act - live:.1f} us per key "
        f"({act:.1f} us for a message to a passivated key against {live:.1f} us to a live "
        f"one); a never-written key {new - live:.1f} us. State check: {r['check']}.",
    ]
    return lines


def _parse(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="bench.bench_state",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--quick", action="store_true", help="10x smaller counts (a smoke run)")
    p.add_argument("--only", default="", help="comma list of: tell, keys")
    p.add_argument("--repeats", type=int, default=3, help="runs per throughput figure")
    p.add_argument("--tells", type=int, default=0, help="tells per throughput run")
    p.add_argument("--keys", type=int, default=0, help="keys of the many-keys part")
    p.add_argument("--idle-after", type=float, default=0.0, help="passivation seconds")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = _parse(argv)
    parts = {s.strip() for s in args.only.split(",") if s.strip()} or {"tell", "keys"}
    if parts - {"tell", "keys"}:
        raise SystemExit(f"--only: unknown {sorted(parts - {'tell', 'keys'})}; use tell, keys")
    scale = 10 if args.quick else 1
    tells = args.tells or 50_000 // scale
    keys = args.keys or 100_000 // scale
    idle_after = args.idle_after or (15.0 if args.quick else 120.0)
    logdir = Path(tempfile.mkdtemp(prefix="actormesh-bench-state-"))
    load = os.getloadavg()
    log(
        f"[state] tells {tells:,} x {args.repeats} repeats, many keys {keys:,} "
        f"(idle_after {idle_after:g}s), parts {sorted(parts)}, load {load[0]:.2f}"
    )
    started = time.monotonic()

    async def go() -> dict[str, Any]:
        out: dict[str, Any] = {}
        if "tell" in parts:
            out["tell"] = await run_tell(tells, 100, args.repeats, logdir)
        if "keys" in parts:
            out["keys"] = await run_keys(keys, idle_after, logdir)
        return out

    result: dict[str, Any] = run_loop(go())
    result.update(
        name="state",
        quick=args.quick,
        seconds=round(time.monotonic() - started, 1),
        load_start=load,
        load_end=os.getloadavg(),
        worker_logs=str(logdir),
    )
    lines: list[str] = []
    if "tell" in result:
        lines += render_tell(result["tell"])
    if "keys" in result:
        lines += (["", ""] if lines else []) + render_keys(result["keys"])
    lines += load_footer(load, result["load_end"])
    result["markdown"] = "\n".join(lines)
    return result


if __name__ == "__main__":
    print(main(sys.argv[1:])["markdown"])
