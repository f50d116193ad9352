"""Issue 14 (and issue 2): actormesh against raw nats-py and FastStream 0.7.

Every *unit* (one contender, one repetition) gets a fresh ``nats-server``
(JetStream, file storage, default sync) and a fresh worker process, and the
repetitions are interleaved (every contender once, then again, ...) so all
see the same conditions. Every stream is at actormesh's DEFAULT mailbox bounds
(`MailboxConfig()`: 10,000 messages, 256 MiB, discard new).

Contenders (`CONTENDERS`): the raw nats-py worker with a continuous pull (the
baseline every ratio is taken against), actormesh (`bench.actors:BenchSink`,
key ``k1``), the raw ``fetch(256)`` worker, FastStream 0.7 (max_workers=1, its
default and best), and actormesh again fed by its own ``tell_many`` (the sender
path; tells only).

1. tell throughput: N tells of 128-byte payloads, each with a unique
   ``Nats-Msg-Id``, sent by THE SAME raw pipelined publisher
   (`bench._clients.RawPublisher`) into each contender's own stream (except the
   ``tell_many`` row), timed from the first publish to the worker's own
   timestamp of the N-th handled message; full-mailbox refusals are counted;
2. asks: throughput with 256 in flight, and sequential latency p50/p99, each
   contender with its own client (raw: a durable request);
3. worker RSS: idle (a few seconds after it is pulling) and peak under the
   tell load (sampled every 50 ms).

CPU per message of each process (publisher or asker, worker, nats-server) is
reported beside every rate. Run ``python -m bench.bench_mesh [--quick]
[--only tell,ask,rss] [--repeats N] [--json PATH]`` or ``make bench``.
Progress goes to stderr; the tables (`bench._mesh_report`) to stdout.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import nats
import psutil
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg

from bench._clients import (
    PAYLOAD,
    WINDOW,
    FastStreamClient,
    MeshClient,
    RawPublisher,
    blob_payload,
)
from bench._mesh_report import render, summarize
from bench._proc import WorkerProcess, stop_process

ROOT = Path(__file__).resolve().parent.parent
SECTIONS = ("tell", "ask", "rss")

# One stream/consumer setting for all: actormesh's MailboxConfig() defaults
# (bench/actors.py BENCH_MAILBOX is MailboxConfig()).
MiB = 1024 * 1024
STREAM = {
    "max_msgs": 10_000,
    "max_bytes": 256 * MiB,
    "max_msg_size": MiB,
    "duplicate_window": 120.0,
    "ack_wait": 30.0,
    "max_deliver": 5,
    "max_ack_pending": 1000,
}
FETCH_BATCH = 256
ASK_IN_FLIGHT = 256
IDLE_SECONDS = 3.0
PROGRESS_SUBJECT = "bench.progress"


def log(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


# -- the contenders -------------------------------------------------------------------


@dataclass(frozen=True)
class Target:
    """Where a contender's worker reads from."""

    stream: str
    durable: str
    subject: str


@dataclass(frozen=True)
class Contender:
    key: str
    label: str
    #: The worker process: actormesh | raw | faststream.
    worker: str
    #: The raw worker's pull: continuous | fetch.
    pull: str = ""
    #: Who sends the tells: "raw" (the shared RawPublisher) or "tell_many".
    teller: str = "raw"
    asks: bool = True


CONTENDERS = (
    Contender("raw", "raw nats-py, continuous pull", "raw", pull="continuous"),
    Contender("actormesh", "actormesh (BenchSink, key k1)", "actormesh"),
    Contender("raw-fetch", "raw nats-py, fetch(256)", "raw", pull="fetch"),
    Contender("faststream", "FastStream 0.7.8, max_workers=1", "faststream"),
    Contender(
        "tell_many",
        "actormesh, fed by its own `tell_many`",
        "actormesh",
        teller="tell_many",
        asks=False,
    ),
)
BY_KEY = {c.key: c for c in CONTENDERS}

TARGETS_BY_WORKER = {
    "actormesh": Target("BENCH_MBOX_BENCHSINK", "benchsink", "bench.mbox.benchsink.k1"),
    "raw": Target("RAW_SINK", "raw", "raw.sink"),
    "faststream": Target("FS_SINK", "fs", "fs.sink"),
}


def worker_command(c: Contender, url: str, step: int) -> list[str]:
    t = TARGETS_BY_WORKER[c.worker]
    if c.worker == "actormesh":
        return [
            sys.executable,
            "-m",
            "actormesh",
            "--nats-url",
            url,
            "--prefix",
            "bench",
            "worker",
            "bench.actors:BenchSink",
        ]
    module = "bench.raw_worker" if c.worker == "raw" else "bench.faststream_worker"
    cmd = [sys.executable, "-m", module, "--url", url, "--stream", t.stream]
    cmd += ["--subject", t.subject, "--durable", t.durable, "--batch", str(FETCH_BATCH)]
    cmd += ["--step", str(step), "--progress", PROGRESS_SUBJECT]
    cmd += ["--pull", c.pull] if c.worker == "raw" else ["--max-workers", "1"]
    for key, value in STREAM.items():
        cmd += [f"--{key.replace('_', '-')}", str(value)]
    return cmd


class Client(Protocol):
    refusals: int

    async def start(self, url: str) -> None: ...
    async def tell(self, n: int) -> None: ...
    async def ask(self, i: int) -> None: ...
    async def close(self) -> None: ...


def make_client(c: Contender, kind: str) -> Client:
    from bench.actors import BenchSink

    t = TARGETS_BY_WORKER[c.worker]
    if c.worker == "actormesh" and (kind == "ask" or c.teller == "tell_many"):
        return MeshClient(BenchSink, "k1")
    if kind == "ask" and c.worker == "faststream":
        return FastStreamClient(t.subject, t.stream)
    payload = blob_payload() if c.worker == "actormesh" else b"T" * PAYLOAD
    return RawPublisher(t.subject, payload)


# -- processes --------------------------------------------------------------------------


class Worker(WorkerProcess):
    """A contender's worker process, told where to report its progress."""

    def __init__(self, c: Contender, url: str, step: int, logdir: Path) -> None:
        self.fw = c.key
        env = {
            "BENCH_STEP": str(step),
            "BENCH_PROGRESS": PROGRESS_SUBJECT,
            "BENCH_NATS_URL": url,
            "ACTORMESH_LOG_LEVEL": "WARNING",
        }
        log_path = logdir / f"worker-{c.key}-{time.monotonic_ns()}.log"
        super().__init__(c.key, worker_command(c, url, step), env, log_path)

    async def stop(self) -> None:
        await stop_process(self.proc, grace=5.0)


class RssSampler:
    """Peak RSS of a process, sampled every `interval` seconds."""

    def __init__(self, worker: Worker, interval: float = 0.05) -> None:
        self.worker = worker
        self.interval = interval
        self.peak = 0
        self._task: asyncio.Task[None] | None = None

    async def _run(self) -> None:
        while True:
            with contextlib.suppress(psutil.Error):
                self.peak = max(self.peak, self.worker.rss())
            await asyncio.sleep(self.interval)

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def stop(self) -> int:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        with contextlib.suppress(psutil.Error):
            self.peak = max(self.peak, self.worker.rss())
        return self.peak


class CpuMeter:
    """CPU seconds (user + system) the driver, the worker and nats-server spend.

    Wall-clock rates on a shared 2-core machine are noisy; CPU per message is
    not, and it says which process a contender loads."""

    ROLES = ("client", "worker", "server")

    def __init__(self, worker: Worker, server_pid: int | None) -> None:
        if worker.ps is None:
            raise RuntimeError("worker not started")
        self.procs = [
            psutil.Process(),
            worker.ps,
            psutil.Process(server_pid) if server_pid else None,
        ]
        self._start: list[float] = []

    def _now(self) -> list[float]:
        out = []
        for p in self.procs:
            try:
                t = p.cpu_times() if p is not None else None
            except psutil.Error:
                t = None
            out.append(t.user + t.system if t is not None else float("nan"))
        return out

    def start(self) -> None:
        self._start = self._now()

    def per_message_us(self, n: int) -> dict[str, float]:
        end = self._now()
        return {
            f"cpu_{role}_us": (b - a) / n * 1e6
            for role, a, b in zip(self.ROLES, self._start, end, strict=True)
        }


class Progress:
    """The worker's "handled n at time t" reports, on core NATS."""

    def __init__(self) -> None:
        self.count = 0
        self.at: dict[int, float] = {}
        self._changed = asyncio.Event()
        self.report: Callable[[int], None] | None = None

    async def subscribe(self, nc: NATS) -> None:
        await nc.subscribe(PROGRESS_SUBJECT, cb=self._on)

    async def _on(self, msg: Msg) -> None:
        data = json.loads(msg.data)
        count, t = int(data["count"]), float(data["t"])
        self.at[count] = t
        self.count = max(self.count, count)
        if self.report is not None:
            self.report(count)
        self._changed.set()

    async def wait_for(self, count: int, timeout: float, worker: Worker) -> float:
        """The worker's timestamp of its `count`-th handled tell."""
        deadline = time.monotonic() + timeout
        while self.count < count:
            if not worker.alive():
                raise RuntimeError(f"{worker.fw} worker exited:\n{worker.log_tail()}")
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"{worker.fw}: {self.count}/{count} handled after {timeout}s")
            self._changed.clear()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(min(left, 1.0)):
                    await self._changed.wait()
        return self.at[count]


# -- one unit: a fresh server, a fresh worker ------------------------------------------


@dataclass
class Counts:
    tell: int
    ask: int
    latency: int
    repeats: int

    @property
    def step(self) -> int:
        return max(1, self.tell // 20)


@dataclass
class Unit:
    kind: str
    fw: str
    rep: int
    result: dict[str, Any] = field(default_factory=dict)


async def run_unit(unit: Unit, counts: Counts, sections: set[str], logdir: Path) -> None:
    from actormesh.testing import NatsServer

    c = BY_KEY[unit.fw]
    tag = f"{unit.kind}/{unit.fw} {unit.rep + 1}/{counts.repeats}"
    async with NatsServer() as server:
        nc = await nats.connect(server.url, name="bench-control")
        js = nc.jetstream()
        progress = Progress()
        await progress.subscribe(nc)
        worker = Worker(c, server.url, counts.step, logdir)
        client = make_client(c, unit.kind)
        try:
            worker.start()
            target = TARGETS_BY_WORKER[c.worker]
            await worker.wait_pulling(js, target.stream, target.durable)
            await client.start(server.url)
            cpu = CpuMeter(worker, server.pid)
            if unit.kind == "tell":
                await _tell_unit(unit, counts, sections, tag, worker, client, progress, cpu)
            else:
                await _ask_unit(unit, counts, tag, worker, client, cpu)
        finally:
            await client.close()
            await worker.stop()
            with contextlib.suppress(Exception):
                await nc.close()


async def _tell_unit(
    unit: Unit,
    counts: Counts,
    sections: set[str],
    tag: str,
    worker: Worker,
    client: Client,
    progress: Progress,
    cpu: CpuMeter,
) -> None:
    n, step = counts.tell, counts.step
    if "rss" in sections:
        await asyncio.sleep(IDLE_SECONDS)
        unit.result["rss_idle"] = worker.rss()
    timeout = max(120.0, n / 200)
    # Warm-up: one step's worth, fully handled before the clock starts.
    await client.tell(step)
    await progress.wait_for(step, timeout, worker)
    shown = n // 5

    def report(count: int) -> None:
        done = count - step
        if done > 0 and (done % shown == 0 or done == n):
            log(f"[{tag}] {done:,}/{n:,} handled")

    progress.report = report
    sampler = RssSampler(worker)
    sampler.start()
    refused = client.refusals
    cpu.start()
    t0 = time.time()
    async with asyncio.timeout(timeout):
        await client.tell(n)
    published = time.time()
    t_end = await progress.wait_for(step + n, timeout, worker)
    unit.result.update(cpu.per_message_us(n))
    unit.result["rss_peak"] = await sampler.stop()
    if getattr(client, "counts_refusals", True):
        unit.result["refusals"] = client.refusals - refused
    seconds = t_end - t0
    unit.result.update(rate=n / seconds, seconds=seconds, publish_seconds=published - t0)
    log(
        f"[{tag}] {n:,} tells in {seconds:.2f}s = {n / seconds:,.0f}/s "
        f"(publisher done at {published - t0:.2f}s, {unit.result.get('refusals', 'n/a')} refusals)"
    )


async def _run_concurrent(
    total: int,
    in_flight: int,
    op: Callable[[int], Awaitable[None]],
    on_done: Callable[[int], None] | None = None,
) -> None:
    counter = itertools.count()
    done = 0

    async def lane() -> None:
        nonlocal done
        while (i := next(counter)) < total:
            await op(i)
            done += 1
            if on_done is not None:
                on_done(done)

    await asyncio.gather(*(lane() for _ in range(min(in_flight, total))))


async def _ask_unit(
    unit: Unit, counts: Counts, tag: str, worker: Worker, client: Client, cpu: CpuMeter
) -> None:
    n = counts.ask
    await _run_concurrent(min(n, 2 * ASK_IN_FLIGHT), ASK_IN_FLIGHT, client.ask)  # warm-up
    shown = max(1, n // 5)

    def report(done: int) -> None:
        if done % shown == 0:
            log(f"[{tag}] {done:,}/{n:,} asks answered ({ASK_IN_FLIGHT} in flight)")

    cpu.start()
    t0 = time.perf_counter()
    await _run_concurrent(n, ASK_IN_FLIGHT, client.ask, report)
    seconds = time.perf_counter() - t0
    unit.result.update(cpu.per_message_us(n))
    unit.result.update(rate=n / seconds, seconds=seconds)
    log(f"[{tag}] {n:,} asks in {seconds:.2f}s = {n / seconds:,.0f}/s")
    # Sequential latency, after the worker has caught its breath.
    await asyncio.sleep(0.2)
    for i in range(min(50, counts.latency)):
        await client.ask(i)
    lat: list[float] = []
    for i in range(counts.latency):
        s = time.perf_counter()
        await client.ask(i)
        lat.append(time.perf_counter() - s)
    lat.sort()
    unit.result.update(
        p50_ms=_pct(lat, 50) * 1e3, p99_ms=_pct(lat, 99) * 1e3, mean_ms=statistics.fmean(lat) * 1e3
    )
    log(
        f"[{tag}] sequential ask latency over {len(lat):,}: p50 "
        f"{unit.result['p50_ms']:.2f} ms, p99 {unit.result['p99_ms']:.2f} ms"
    )


def _pct(sorted_values: list[float], p: float) -> float:
    if not sorted_values:
        return float("nan")
    k = min(len(sorted_values) - 1, max(0, round(p / 100 * len(sorted_values)) - 1))
    return sorted_values[k]


# -- the whole run ---------------------------------------------------------------------


def machine() -> dict[str, Any]:
    cpu = ""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    versions: dict[str, str] = {}
    from importlib.metadata import PackageNotFoundError, version

    for pkg in ("actormesh", "nats-py", "faststream", "msgspec", "uvloop"):
        with contextlib.suppress(PackageNotFoundError):
            versions[pkg] = version(pkg)
    with contextlib.suppress(Exception):
        from actormesh._server import find_nats_server

        out = subprocess.run(
            [find_nats_server(), "--version"],
            capture_output=True,
            text=True,
            timeout=10,
            check=False,
        )
        versions["nats-server"] = out.stdout.strip().split()[-1]
    return {
        "cpus": os.cpu_count(),
        "cpu": cpu,
        "memory_gb": round(psutil.virtual_memory().total / 2**30, 1),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "versions": versions,
    }


async def run_all(counts: Counts, sections: set[str], only: list[str]) -> dict[str, Any]:
    logdir = Path(tempfile.mkdtemp(prefix="actormesh-bench-"))
    units: list[Unit] = []
    errors: list[str] = []
    tell_reps = counts.repeats if "tell" in sections else (1 if "rss" in sections else 0)
    ask_reps = counts.repeats if "ask" in sections else 0
    plan = [("tell", r) for r in range(tell_reps)] + [("ask", r) for r in range(ask_reps)]
    started = time.monotonic()
    for kind, rep in plan:
        for c in CONTENDERS:  # interleaved: every repetition sees all contenders in turn
            if c.key not in only or (kind == "ask" and not c.asks):
                continue
            unit = Unit(kind, c.key, rep)
            reps = tell_reps if kind == "tell" else ask_reps
            try:
                await run_unit(
                    unit,
                    Counts(counts.tell, counts.ask, counts.latency, reps),
                    sections,
                    logdir,
                )
                units.append(unit)
            except Exception as exc:
                msg = f"{kind}/{c.key} rep {rep + 1}: {type(exc).__name__}: {exc}"
                log(f"!! {msg}")
                errors.append(msg)

    out: dict[str, Any] = {
        "name": "mesh",
        "counts": {
            "tells": counts.tell,
            "asks": counts.ask,
            "ask_in_flight": ASK_IN_FLIGHT,
            "latency_asks": counts.latency,
            "repeats": counts.repeats,
            "payload_bytes": PAYLOAD,
            "window": WINDOW,
            "fetch_batch": FETCH_BATCH,
        },
        "stream": STREAM,
        "sections": sorted(sections),
        "contenders": [
            {"key": c.key, "label": c.label, "asks": c.asks} for c in CONTENDERS if c.key in only
        ],
        "errors": errors,
        "seconds": round(time.monotonic() - started, 1),
        "worker_logs": str(logdir),
        "load": os.getloadavg(),
        "results": summarize(
            [(u.kind, u.fw, u.result) for u in units], [c.key for c in CONTENDERS], sections
        ),
    }
    out["markdown"] = render(out)
    return out


def _parse(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="bench.bench_mesh",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--quick", action="store_true", help="10x smaller counts (a smoke run)")
    p.add_argument("--only", default="", help="comma list of: tell, ask, rss")
    p.add_argument(
        "--contenders",
        default=",".join(BY_KEY),
        help=f"comma list of contenders (default all: {','.join(BY_KEY)})",
    )
    p.add_argument("--repeats", type=int, default=3, help="runs per throughput figure")
    p.add_argument("--json", metavar="PATH", help="also write the result here")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = _parse(argv)
    sections = {s.strip() for s in args.only.split(",") if s.strip()} or set(SECTIONS)
    unknown = sections - set(SECTIONS)
    if unknown:
        raise SystemExit(f"--only: unknown section(s) {sorted(unknown)}; use {SECTIONS}")
    only = [k.strip() for k in args.contenders.split(",") if k.strip()]
    if set(only) - set(BY_KEY):
        raise SystemExit(f"--contenders: unknown {sorted(set(only) - set(BY_KEY))}")
    scale = 10 if args.quick else 1
    counts = Counts(
        tell=100_000 // scale, ask=20_000 // scale, latency=2_000 // scale, repeats=args.repeats
    )
    log(
        f"[mesh] tells {counts.tell:,}, asks {counts.ask:,} ({ASK_IN_FLIGHT} in flight), "
        f"latency {counts.latency:,}, {counts.repeats} repeats, sections {sorted(sections)}, "
        f"load {os.getloadavg()[0]:.2f}"
    )
    try:
        import uvloop

        out = uvloop.run(run_all(counts, sections, only))
    except ImportError:
        out = asyncio.run(run_all(counts, sections, only))
    out["machine"] = machine()
    out["quick"] = args.quick
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(out, indent=2, default=str))
    return out


if __name__ == "__main__":
    result = main(sys.argv[1:])
    print(result["markdown"])
    sys.exit(1 if result["errors"] else 0)
