"""Issue 2: actormesh against raw nats-py (the ceiling) and FastStream 0.7 (the peer).

Three measurements, one machine, one run; every unit (one contender, one
repetition) gets a fresh ``nats-server`` (JetStream, file storage, default
sync) and a fresh worker process, and the repetitions are interleaved
(actormesh, raw, FastStream, actormesh, ...) so all three see the same
conditions:

1. tell throughput: N tells of 128-byte payloads to one worker process,
   timed from the first publish to the worker's own timestamp of the N-th
   handled message (the worker publishes its count and time on core NATS every
   ``step`` messages; the driver waits for count = warm-up + N);
2. asks: throughput with 256 in flight, and sequential latency p50/p99;
3. worker RSS: idle (a few seconds after it is pulling) and peak under the
   tell load (sampled every 50 ms).

Run ``python -m bench.bench_mesh [--quick] [--only tell,ask,rss] [--json PATH]``
or ``make bench``. Progress goes to stderr; the table to stdout.

One module of about 1,000 lines on purpose: the three contenders' drivers, the
shared publisher and the report must be read side by side to trust that every
contender is measured the same way.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import json
import os
import platform
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import msgspec
import nats
import psutil
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg

ROOT = Path(__file__).resolve().parent.parent
FRAMEWORKS = ("actormesh", "raw", "faststream")
LABELS = {"actormesh": "actormesh", "raw": "raw nats-py", "faststream": "FastStream 0.7"}
SECTIONS = ("tell", "ask", "rss")

# One stream/consumer setting for all three (bench/actors.py BENCH_MAILBOX is the same).
MiB = 1024 * 1024
STREAM = {
    "max_msgs": 1_000_000,
    "max_bytes": 1024 * MiB,
    "max_msg_size": MiB,
    "duplicate_window": 120.0,
    "ack_wait": 30.0,
    "max_deliver": 5,
    "max_ack_pending": 1000,
}
PAYLOAD = 128
WINDOW = 1024
FETCH_BATCH = 256
ASK_IN_FLIGHT = 256
IDLE_SECONDS = 3.0
PROGRESS_SUBJECT = "bench.progress"

# Targets of issue 2.
TARGETS = {
    "tell_vs_raw": 0.8,
    "tell_vs_faststream": 3.0,
    "ask_vs_raw": 1.0,
    "rss_idle_mb": 80.0,
}


def log(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


# -- what each contender needs ------------------------------------------------------


@dataclass(frozen=True)
class Target:
    """Where a contender's worker reads from."""

    stream: str
    durable: str
    subject: str


TARGETS_BY_FW = {
    "actormesh": Target("BENCH_MBOX_BENCHSINK", "benchsink", "bench.mbox.benchsink.k1"),
    "raw": Target("RAW_SINK", "raw", "raw.sink"),
    "faststream": Target("FS_SINK", "fs", "fs.sink"),
}


def worker_command(fw: str, url: str, step: int) -> list[str]:
    t = TARGETS_BY_FW[fw]
    if fw == "actormesh":
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
    module = "bench.raw_worker" if fw == "raw" else "bench.faststream_worker"
    cmd = [
        sys.executable,
        "-m",
        module,
        "--url",
        url,
        "--stream",
        t.stream,
        "--subject",
        t.subject,
        "--durable",
        t.durable,
        "--batch",
        str(FETCH_BATCH),
        "--step",
        str(step),
        "--progress",
        PROGRESS_SUBJECT,
    ]
    for key, value in STREAM.items():
        cmd += [f"--{key.replace('_', '-')}", str(value)]
    return cmd


class Worker:
    """A worker OS process, its log, and its memory."""

    def __init__(self, fw: str, url: str, step: int, logdir: Path) -> None:
        self.fw = fw
        self.cmd = worker_command(fw, url, step)
        self.env = dict(os.environ)
        self.env.update(
            {
                "BENCH_STEP": str(step),
                "BENCH_PROGRESS": PROGRESS_SUBJECT,
                "BENCH_NATS_URL": url,
                "ACTORMESH_LOG_LEVEL": "WARNING",
                "PYTHONPATH": os.pathsep.join(
                    p for p in (str(ROOT), os.environ.get("PYTHONPATH", "")) if p
                ),
            }
        )
        self.log_path = logdir / f"worker-{fw}-{time.monotonic_ns()}.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self.ps: psutil.Process | None = None

    def start(self) -> None:
        logf = self.log_path.open("wb")
        self.proc = subprocess.Popen(
            self.cmd,
            cwd=ROOT,
            env=self.env,
            stdout=logf,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        logf.close()
        self.ps = psutil.Process(self.proc.pid)

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def rss(self) -> int:
        assert self.ps is not None
        return int(self.ps.memory_info().rss)

    def log_tail(self, lines: int = 20) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    async def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            self.proc.send_signal(signal.SIGTERM)
        for _ in range(100):
            if self.proc.poll() is not None:
                return
            await asyncio.sleep(0.05)
        with contextlib.suppress(ProcessLookupError):
            self.proc.kill()
        await asyncio.to_thread(self.proc.wait)


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
        assert worker.ps is not None
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


# -- the three clients ----------------------------------------------------------------


class Client(Protocol):
    async def start(self, url: str) -> None: ...
    async def tell(self, n: int) -> None: ...
    async def ask(self, i: int) -> None: ...
    async def close(self) -> None: ...


class MeshClient:
    """actormesh: `ref.tell_many` (window 1024) and `ref.ask`."""

    def __init__(self) -> None:
        from bench.actors import BenchSink, Blob, Ping

        self._ping, self._actor = Ping, BenchSink
        pad = PAYLOAD - len(msgspec.json.encode(Blob(data="")))
        self.blob = Blob(data="x" * pad)
        assert len(msgspec.json.encode(self.blob)) == PAYLOAD
        self.mesh: Any = None
        self.ref: Any = None

    async def start(self, url: str) -> None:
        from actormesh import Mesh

        self.mesh = await Mesh.connect(url, prefix="bench")
        self.ref = self.mesh.ref(self._actor, "k1")

    async def tell(self, n: int) -> None:
        await self.ref.tell_many(itertools.repeat(self.blob, n), window=WINDOW)

    async def ask(self, i: int) -> None:
        reply = await self.ref.ask(self._ping(n=i), timeout=30.0)
        assert reply == i

    async def close(self) -> None:
        if self.mesh is not None:
            await self.mesh.close()


class _RawAckError(Exception):
    pass


def _check_puback(msg: Msg) -> None:
    # A PubAck is {"stream":..,"seq":..}; a refusal carries "error"; no body is a 503.
    if not msg.data or b'"error"' in msg.data:
        raise _RawAckError(f"JetStream refused the message: {msg.data!r} {msg.headers}")


class RawClient:
    """raw nats-py: core publish with a reply inbox per message on one wildcard
    subscription, futures, a window of 1024 PubAcks in flight (what tell_many
    does, minus headers, ids and typed errors). Asks are "durable requests": the
    JetStream publish carries a ``Reply-To`` header; the worker replies there."""

    def __init__(self) -> None:
        self.nc: NATS | None = None
        self.subject = TARGETS_BY_FW["raw"].subject
        self.payload = b"T" * PAYLOAD
        self._ids = itertools.count(1)
        self._waiters: dict[str, asyncio.Future[Msg]] = {}
        self._inbox = ""
        self._cut = 0

    async def start(self, url: str) -> None:
        self.nc = await nats.connect(url, name="bench-raw-client")
        self._inbox = self.nc.new_inbox()
        self._cut = len(self._inbox) + 1
        await self.nc.subscribe(
            self._inbox + ".*", cb=self._on, pending_msgs_limit=-1, pending_bytes_limit=-1
        )

    async def _on(self, msg: Msg) -> None:
        fut = self._waiters.pop(msg.subject[self._cut :], None)
        if fut is not None and not fut.done():
            fut.set_result(msg)

    def _future(self) -> tuple[str, str, asyncio.Future[Msg]]:
        token = f"{next(self._ids):x}"
        fut: asyncio.Future[Msg] = asyncio.get_running_loop().create_future()
        self._waiters[token] = fut
        return token, f"{self._inbox}.{token}", fut

    async def tell(self, n: int) -> None:
        assert self.nc is not None
        publish, subject, payload = self.nc.publish, self.subject, self.payload
        pending: deque[asyncio.Future[Msg]] = deque()
        for _ in range(n):
            _, reply, fut = self._future()
            await publish(subject, payload, reply=reply)
            pending.append(fut)
            if len(pending) >= WINDOW:
                _check_puback(await pending.popleft())
        while pending:
            _check_puback(await pending.popleft())

    async def ask(self, i: int) -> None:
        assert self.nc is not None
        ack_token, ack_to, ack = self._future()
        reply_token, reply_to, reply = self._future()
        payload = b"P%021d" % i
        try:
            async with asyncio.timeout(30.0):
                await self.nc.publish(
                    self.subject, payload, reply=ack_to, headers={"Reply-To": reply_to}
                )
                _check_puback(await ack)
                got = await reply
        finally:
            self._waiters.pop(ack_token, None)
            self._waiters.pop(reply_token, None)
        assert got.data == payload

    async def close(self) -> None:
        if self.nc is not None:
            with contextlib.suppress(Exception):
                await self.nc.drain()


class FastStreamClient:
    """FastStream 0.7: ``broker.publish(..., stream=)`` awaited concurrently with
    ``asyncio.gather`` in windows of 1024, and ``broker.request(..., stream=)``."""

    def __init__(self) -> None:
        self.broker: Any = None
        t = TARGETS_BY_FW["faststream"]
        self.subject, self.stream = t.subject, t.stream
        self.payload = b"T" * PAYLOAD

    async def start(self, url: str) -> None:
        from faststream.nats import NatsBroker

        self.broker = NatsBroker(url, logger=None)
        await self.broker.connect()

    async def tell(self, n: int) -> None:
        publish, subject, stream, payload = (
            self.broker.publish,
            self.subject,
            self.stream,
            self.payload,
        )
        for start in range(0, n, WINDOW):
            k = min(WINDOW, n - start)
            await asyncio.gather(
                *(publish(payload, subject, stream=stream, timeout=30.0) for _ in range(k))
            )

    async def ask(self, i: int) -> None:
        payload = b"P%021d" % i
        msg = await self.broker.request(payload, self.subject, stream=self.stream, timeout=30.0)
        assert msg.body == payload, msg.body

    async def close(self) -> None:
        if self.broker is not None:
            with contextlib.suppress(Exception):
                await self.broker.stop()


CLIENTS: dict[str, Callable[[], Client]] = {
    "actormesh": MeshClient,
    "raw": RawClient,
    "faststream": FastStreamClient,
}


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


async def _wait_ready(js: Any, target: Target, worker: Worker, timeout: float = 60.0) -> None:
    """Ready = the durable consumer exists and the worker has a pull waiting on it."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not worker.alive():
            raise RuntimeError(f"{worker.fw} worker exited at startup:\n{worker.log_tail()}")
        with contextlib.suppress(Exception):
            info = await js.consumer_info(target.stream, target.durable)
            if info.num_waiting and info.num_waiting > 0:
                return
        await asyncio.sleep(0.1)
    raise TimeoutError(f"{worker.fw} worker not pulling after {timeout}s:\n{worker.log_tail()}")


async def run_unit(unit: Unit, counts: Counts, sections: set[str], logdir: Path) -> None:
    from actormesh.testing import NatsServer

    tag = f"{unit.kind}/{unit.fw} {unit.rep + 1}/{counts.repeats}"
    async with NatsServer() as server:
        nc = await nats.connect(server.url, name="bench-control")
        js = nc.jetstream()
        progress = Progress()
        await progress.subscribe(nc)
        worker = Worker(unit.fw, server.url, counts.step, logdir)
        client = CLIENTS[unit.fw]()
        try:
            worker.start()
            await _wait_ready(js, TARGETS_BY_FW[unit.fw], worker)
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
    cpu.start()
    t0 = time.time()
    await client.tell(n)
    published = time.time()
    t_end = await progress.wait_for(step + n, timeout, worker)
    unit.result.update(cpu.per_message_us(n))
    unit.result["rss_peak"] = await sampler.stop()
    seconds = t_end - t0
    unit.result.update(rate=n / seconds, seconds=seconds, publish_seconds=published - t0)
    log(
        f"[{tag}] {n:,} tells in {seconds:.2f}s = {n / seconds:,.0f}/s "
        f"(publisher done at {published - t0:.2f}s)"
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


def _median(units: list[Unit], key: str) -> float | None:
    values = [u.result[key] for u in units if key in u.result]
    return statistics.median(values) if values else None


def _cpu(units: list[Unit]) -> dict[str, float] | None:
    """Median CPU microseconds per message, per process, and their sum."""
    out: dict[str, float] = {}
    for role in CpuMeter.ROLES:
        value = _median(units, f"cpu_{role}_us")
        if value is None:
            return None
        out[role] = value
    out["total"] = sum(out.values())
    return out


def _max(units: list[Unit], key: str) -> float | None:
    values = [u.result[key] for u in units if key in u.result]
    return max(values) if values else None


async def run_all(counts: Counts, sections: set[str]) -> dict[str, Any]:
    logdir = Path(tempfile.mkdtemp(prefix="actormesh-bench-"))
    units: list[Unit] = []
    errors: list[str] = []
    tell_reps = counts.repeats if "tell" in sections else (1 if "rss" in sections else 0)
    ask_reps = counts.repeats if "ask" in sections else 0
    plan = [("tell", r) for r in range(tell_reps)] + [("ask", r) for r in range(ask_reps)]
    started = time.monotonic()
    for kind, rep in plan:
        for fw in FRAMEWORKS:  # interleaved: every repetition sees all three in turn
            unit = Unit(kind, fw, rep)
            try:
                await run_unit(
                    unit,
                    Counts(
                        counts.tell,
                        counts.ask,
                        counts.latency,
                        tell_reps if kind == "tell" else ask_reps,
                    ),
                    sections,
                    logdir,
                )
                units.append(unit)
            except Exception as exc:
                msg = f"{kind}/{fw} rep {rep + 1}: {type(exc).__name__}: {exc}"
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
        "errors": errors,
        "seconds": round(time.monotonic() - started, 1),
        "worker_logs": str(logdir),
        "results": {},
    }
    for fw in FRAMEWORKS:
        tells = [u for u in units if u.fw == fw and u.kind == "tell"]
        asks = [u for u in units if u.fw == fw and u.kind == "ask"]
        r: dict[str, Any] = {}
        if "tell" in sections:
            r["tell_rate"] = _median(tells, "rate")
            r["tell_rates"] = [round(u.result["rate"]) for u in tells if "rate" in u.result]
            r["tell_cpu_us"] = _cpu(tells)
        if "ask" in sections:
            r["ask_cpu_us"] = _cpu(asks)
            r["ask_rate"] = _median(asks, "rate")
            r["ask_rates"] = [round(u.result["rate"]) for u in asks if "rate" in u.result]
            r["ask_p50_ms"] = _median(asks, "p50_ms")
            r["ask_p99_ms"] = _median(asks, "p99_ms")
        if "rss" in sections:
            idle = _median(tells, "rss_idle")
            peak = _max(tells, "rss_peak")
            r["rss_idle_mb"] = idle / MiB if idle is not None else None
            r["rss_peak_mb"] = peak / MiB if peak is not None else None
        out["results"][fw] = r
    out["targets"] = check_targets(out["results"], sections)
    out["markdown"] = render(out)
    return out


def _ratio(a: float | None, b: float | None) -> float | None:
    if a is None or b is None or b == 0:
        return None
    return a / b


def check_targets(res: dict[str, dict[str, Any]], sections: set[str]) -> list[dict[str, Any]]:
    am, raw, fs = res["actormesh"], res["raw"], res["faststream"]
    rows: list[tuple[str, float | None, str, Callable[[float], bool]]] = []
    if "tell" in sections:
        rows.append(
            (
                "tell throughput, actormesh / raw",
                _ratio(am["tell_rate"], raw["tell_rate"]),
                f">= {TARGETS['tell_vs_raw']}x",
                lambda v: v >= TARGETS["tell_vs_raw"],
            )
        )
        rows.append(
            (
                "tell throughput, actormesh / FastStream",
                _ratio(am["tell_rate"], fs["tell_rate"]),
                f">= {TARGETS['tell_vs_faststream']}x",
                lambda v: v >= TARGETS["tell_vs_faststream"],
            )
        )
    if "ask" in sections:
        rows.append(
            (
                "ask throughput, actormesh / raw durable request",
                _ratio(am["ask_rate"], raw["ask_rate"]),
                f">= {TARGETS['ask_vs_raw']}x",
                lambda v: v >= TARGETS["ask_vs_raw"],
            )
        )
    if "rss" in sections:
        rows.append(
            (
                "actormesh worker RSS idle (MB)",
                am.get("rss_idle_mb"),
                f"< {TARGETS['rss_idle_mb']:.0f} MB",
                lambda v: v < TARGETS["rss_idle_mb"],
            )
        )
    return [
        {
            "target": name,
            "measured": value,
            "goal": goal,
            "met": None if value is None else bool(ok(value)),
        }
        for name, value, goal, ok in rows
    ]


def _fmt(value: float | None, digits: int = 0) -> str:
    if value is None:
        return "n/a"
    return f"{value:,.{digits}f}"


def _fmt_ratio(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.2f}x"


def _metric_rows(out: dict[str, Any]) -> list[str]:
    res = out["results"]
    am, raw, fs = res["actormesh"], res["raw"], res["faststream"]
    c = out["counts"]
    lines = [
        "| metric | actormesh | raw nats-py | FastStream 0.7 "
        "| actormesh/raw | actormesh/FastStream |",
        "|---|--:|--:|--:|--:|--:|",
    ]

    def row(label: str, key: str, digits: int = 0) -> None:
        a, r, f = am.get(key), raw.get(key), fs.get(key)
        lines.append(
            f"| {label} | {_fmt(a, digits)} | {_fmt(r, digits)} | {_fmt(f, digits)} "
            f"| {_fmt_ratio(_ratio(a, r))} | {_fmt_ratio(_ratio(a, f))} |"
        )

    def cpu_row(label: str, key: str) -> None:
        cells, totals = [], []
        for r in (am, raw, fs):
            v = r.get(key)
            totals.append(v["total"] if v else None)
            cells.append(
                "n/a"
                if not v
                else f"{v['client']:.0f} + {v['worker']:.0f} + {v['server']:.0f} = {v['total']:.0f}"
            )
        lines.append(
            f"| {label} | {' | '.join(cells)} "
            f"| {_fmt_ratio(_ratio(totals[0], totals[1]))} "
            f"| {_fmt_ratio(_ratio(totals[0], totals[2]))} |"
        )

    sections = set(out["sections"])
    reps = c["repeats"]
    if "tell" in sections:
        row(
            f"tell throughput, {c['tells']:,} x {c['payload_bytes']} B (msg/s, median of {reps})",
            "tell_rate",
        )
        cpu_row("CPU per tell, us: publisher + worker + nats-server", "tell_cpu_us")
    if "ask" in sections:
        row(
            f"ask throughput, {c['asks']:,} asks, {c['ask_in_flight']} in flight "
            f"(asks/s, median of {reps})",
            "ask_rate",
        )
        cpu_row("CPU per ask, us: asker + worker + nats-server", "ask_cpu_us")
        row(
            f"sequential ask latency p50 (ms, {c['latency_asks']:,} asks)",
            "ask_p50_ms",
            2,
        )
        row("sequential ask latency p99 (ms)", "ask_p99_ms", 2)
    if "rss" in sections:
        row("worker RSS idle (MB)", "rss_idle_mb", 1)
        row("worker RSS peak under tell load (MB)", "rss_peak_mb", 1)
    return lines


def _run_lines(res: dict[str, Any]) -> list[str]:
    runs = []
    for fw in FRAMEWORKS:
        parts = []
        if res[fw].get("tell_rates"):
            parts.append("tell " + ", ".join(f"{v:,}" for v in res[fw]["tell_rates"]))
        if res[fw].get("ask_rates"):
            parts.append("ask " + ", ".join(f"{v:,}" for v in res[fw]["ask_rates"]))
        if parts:
            runs.append(f"- {LABELS[fw]} runs: " + "; ".join(parts))
    return runs


def _target_rows(targets: list[dict[str, Any]]) -> list[str]:
    lines = ["", "| target | goal | measured | met |", "|---|---|--:|---|"]
    for t in targets:
        measured = t["measured"]
        shown = (
            "n/a"
            if measured is None
            else (f"{measured:.1f} MB" if "MB" in t["goal"] else f"{measured:.2f}x")
        )
        met = {True: "yes", False: "**no**", None: "n/a"}[t["met"]]
        lines.append(f"| {t['target']} | {t['goal']} | {shown} | {met} |")
    return lines


def render(out: dict[str, Any]) -> str:
    lines = _metric_rows(out)
    lines += [
        "",
        "Ratios are actormesh / other: above 1 is better for throughput, worse for CPU, "
        "latency and RSS. CPU is user + system time of each process over the timed run, "
        "per message.",
        "",
    ]
    lines.extend(_run_lines(out["results"]))
    if out["targets"]:
        lines += _target_rows(out["targets"])
    if out["errors"]:
        lines += ["", "Errors:"] + [f"- {e}" for e in out["errors"]]
    return "\n".join(lines)


def _parse(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="bench.bench_mesh",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--quick", action="store_true", help="10x smaller counts (a smoke run)")
    p.add_argument("--only", default="", help="comma list of: tell, ask, rss")
    p.add_argument("--repeats", type=int, default=3, help="runs per throughput figure")
    p.add_argument("--json", metavar="PATH", help="also write the result here")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = _parse(argv)
    sections = {s.strip() for s in args.only.split(",") if s.strip()} or set(SECTIONS)
    unknown = sections - set(SECTIONS)
    if unknown:
        raise SystemExit(f"--only: unknown section(s) {sorted(unknown)}; use {SECTIONS}")
    scale = 10 if args.quick else 1
    counts = Counts(
        tell=100_000 // scale, ask=20_000 // scale, latency=2_000 // scale, repeats=args.repeats
    )
    log(
        f"[mesh] tells {counts.tell:,}, asks {counts.ask:,} ({ASK_IN_FLIGHT} in flight), "
        f"latency {counts.latency:,}, {counts.repeats} repeats, sections {sorted(sections)}"
    )
    try:
        import uvloop

        out = uvloop.run(run_all(counts, sections))
    except ImportError:
        out = asyncio.run(run_all(counts, sections))
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
