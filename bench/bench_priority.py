"""Issue 19 item 8: message priority. How long an urgent message waits behind a
backlog of normal ones.

One fresh ``nats-server`` (JetStream, file storage) and one worker process
(``python -m actormesh worker bench.bench_priority:Busy``: a keyless actor whose
mailbox has `MailboxConfig(priorities=True)`, default `WorkerConfig`:
concurrency 64, prefetch 256; the handler sleeps 1 ms, an I/O-like handler).

Each trial: pause the type (JetStream consumer pause, `actormesh pause`), tell
a backlog of B normal messages (B = 10,000; pipelined ``tell_many``), resume,
wait until the worker holds messages of it (consumer info, off the clock), and
``ask`` a `Ping`; the figure is the ask's round trip (sent to
answered). Three cases, trials interleaved:

- ``normal`` (the baseline): the Ping sent at normal priority. It is behind the
  backlog in the same consumer, so it waits for the backlog to be handled.
- ``high``: the same Ping with ``priority="high"``: its own subject and
  consumer, picked before the normal messages the worker holds.
- ``idle``: a high Ping to an empty mailbox, for the floor.

Between trials the mailbox drains completely. p50 and p99 are nearest-rank over
the trials (few trials: p99 is the worst one).

Run ``python -m bench.bench_priority [--quick] [--trials N] [--backlog B]`` or
``python -m bench --only priority``. ``--quick`` runs 3 trials per case instead
of 10 (the backlog stays 10,000: it is the figure asked for). Progress goes to
stderr, the table to stdout.
"""

from __future__ import annotations

import argparse
import asyncio
import math
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, ClassVar

from actormesh import Actor, MailboxConfig, Message
from bench._proc import load_footer

ACTOR = "busy"
CASES = ("normal", "high", "idle")
LABELS = {
    "normal": "Ping at normal priority behind the backlog (baseline)",
    "high": 'Ping with priority="high" behind the backlog',
    "idle": 'Ping with priority="high", empty mailbox (floor)',
}
HANDLER_SLEEP = 0.001


class Work(Message):
    n: int


class Ping(Message):
    pass


class Busy(Actor):
    """The benchmark's actor (imported by the worker process)."""

    actor_type = ACTOR
    keyless = True
    mailbox: ClassVar[MailboxConfig] = MailboxConfig(
        priorities=True, max_msgs=100_000, max_ack_pending=1000
    )

    async def work(self, msg: Work) -> None:
        await asyncio.sleep(HANDLER_SLEEP)

    async def ping(self, msg: Ping) -> str:
        return "pong"


def log(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def nearest_rank(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[max(0, math.ceil(q * len(ordered)) - 1)]


async def _drained(js: Any, stream: str, timeout: float = 300.0) -> None:
    deadline = time.monotonic() + timeout
    names = [ACTOR, f"{ACTOR}_high", f"{ACTOR}_low"]
    while time.monotonic() < deadline:
        infos = [await js.consumer_info(stream, n) for n in names]
        if all(not i.num_pending and not i.num_ack_pending for i in infos):
            return
        await asyncio.sleep(0.05)
    raise TimeoutError("the mailbox did not drain")


async def _busy(js: Any, stream: str, timeout: float = 30.0) -> None:
    """Off the clock: wait until the worker holds normal messages (it is working on
    the backlog), so the Ping is sent behind it, not before it arrived."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if (await js.consumer_info(stream, ACTOR)).num_ack_pending:
            return
        await asyncio.sleep(0.001)
    raise TimeoutError("the worker took no message of the backlog")


async def _trial(mesh: Any, case: str, backlog: int) -> float:
    from actormesh.lowlevel import pause_actor_type, resume_actor_type

    ref = mesh.ref(ACTOR)
    if case != "idle":
        await pause_actor_type(mesh, ACTOR)
        await ref.tell_many(Work(n=n) for n in range(backlog))
        await resume_actor_type(mesh, ACTOR)
        await _busy(mesh.js, mesh.subjects.mailbox_stream(ACTOR))
    priority = "normal" if case == "normal" else "high"
    t0 = time.perf_counter()
    reply = await ref.ask(Ping(), timeout=300.0, priority=priority)
    seconds = time.perf_counter() - t0
    if reply != "pong":
        raise RuntimeError(f"unexpected reply {reply!r}")
    await _drained(mesh.js, mesh.subjects.mailbox_stream(ACTOR))
    return seconds


async def run(trials: int, backlog: int, logdir: Path) -> dict[str, list[float]]:
    from actormesh import Mesh
    from actormesh.testing import NatsServer
    from bench._proc import MeshWorker

    out: dict[str, list[float]] = {c: [] for c in CASES}
    async with NatsServer() as server:
        worker = MeshWorker("bench.bench_priority:Busy", server.url, logdir)
        mesh = await Mesh.connect(server.url, prefix="bench")
        try:
            worker.start()
            await worker.wait_pulling(mesh.js, mesh.subjects.mailbox_stream(ACTOR), f"{ACTOR}_high")
            # Warm-up: the worker's first messages (imports, first pulls) off the clock.
            await _trial(mesh, "normal", min(backlog, 1000))
            for i in range(trials):
                for case in CASES:
                    seconds = await _trial(mesh, case, backlog)
                    out[case].append(seconds)
                    log(f"[priority] trial {i + 1}/{trials} {case}: {seconds * 1000:.1f} ms")
        finally:
            await mesh.close()
            await worker.stop()
    return out


def render(results: dict[str, list[float]], backlog: int, trials: int) -> list[str]:
    lines = [
        f"Latency of one ask behind a backlog of {backlog:,} normal messages "
        f"({trials} trials per case; handler sleeps {HANDLER_SLEEP * 1000:g} ms, "
        "concurrency 64, prefetch 256)",
        "",
        "| case | p50 ms | p99 ms | min ms | max ms |",
        "|---|---:|---:|---:|---:|",
    ]
    for case in CASES:
        ms = [s * 1000 for s in results[case]]
        lines.append(
            f"| {LABELS[case]} | {nearest_rank(ms, 0.5):.1f} | {nearest_rank(ms, 0.99):.1f} "
            f"| {min(ms):.1f} | {max(ms):.1f} |"
        )
    normal = nearest_rank(results["normal"], 0.5)
    high = nearest_rank(results["high"], 0.5)
    lines += ["", f"p50 speed-up of high over normal: {normal / high:.0f}x"]
    return lines


def _parse(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench.bench_priority", description=__doc__)
    p.add_argument("--quick", action="store_true", help="3 trials per case instead of 10")
    p.add_argument("--trials", type=int, default=0, help="trials per case")
    p.add_argument("--backlog", type=int, default=10_000, help="normal messages ahead")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    from bench._proc import run_loop

    args = _parse(argv)
    trials = args.trials or (3 if args.quick else 10)
    logdir = Path(tempfile.mkdtemp(prefix="actormesh-bench-priority-"))
    load = os.getloadavg()
    log(f"[priority] backlog {args.backlog:,}, {trials} trials per case, load {load[0]:.2f}")
    started = time.monotonic()
    results: dict[str, list[float]] = run_loop(run(trials, args.backlog, logdir))
    result: dict[str, Any] = {
        "name": "priority",
        "quick": args.quick,
        "backlog": args.backlog,
        "trials": trials,
        "seconds_by_case": results,
        "p50_ms": {c: nearest_rank(v, 0.5) * 1000 for c, v in results.items()},
        "p99_ms": {c: nearest_rank(v, 0.99) * 1000 for c, v in results.items()},
        "seconds": round(time.monotonic() - started, 1),
        "load_start": load,
        "load_end": os.getloadavg(),
        "worker_logs": str(logdir),
    }
    lines = render(results, args.backlog, trials)
    lines += load_footer(load, result["load_end"])
    result["markdown"] = "\n".join(lines)
    return result


if __name__ == "__main__":
    print(main(sys.argv[1:])["markdown"])
