"""Issue 4: what tracing costs. Tell throughput through one worker process, tracing off vs on.

"On" is the production setup, end to end: the driver's Mesh is instrumented
(a PRODUCER span per tell, W3C context in the headers) and the worker runs
with ``OTEL_TRACES_EXPORTER=otlp`` (a CONSUMER span per message), both
exporting OTLP over http/protobuf with the default batch settings to a
collector stub in a process of its own (``bench.otlp_collector``), which
stores the request bodies and decodes them only after the timed part (to
count the spans). Two more modes split the cost: "sampled" keeps 1% of the
traces (every message still carries its context), and "header" records
nothing and only carries a constant ``traceparent`` on every tell, which is
what the W3C header costs nats-py and the broker before any span is made.

Every unit (one mode, one repetition) gets a fresh ``nats-server`` and a fresh
worker process; each repetition runs every mode once, in reverse order every
other time (off, on, on, off, ...), so the modes see the same conditions and
drift favours none of them, and each mode is compared with the "off" unit of
its own repetition (the median of those ratios is the result). A unit: warm
up, then N tells to a keyless actor (handlers run concurrently), timed from
the first publish to the worker's own timestamp of the N-th handled message
(the actor reports on core NATS every ``STEP`` messages).

The driver sends in two ways, each measured on its own (``--api``): pipelined
with ``tell_many`` (up to 1024 PubAcks awaited at once, the fastest way in,
where tracing's cost weighs most), and ``tell`` from 64 concurrent senders,
each awaiting its PubAck (a span per tell from publish to PubAck).

``python -m bench.bench_tracing [--quick] [--messages N] [--repeats R] [--modes ...]
[--api tell_many,tell] [--json PATH]``
Target: throughput with tracing on at most 15% below off. Progress to stderr.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import statistics
import sys
import time
from pathlib import Path
from typing import Any

from actormesh import Actor, Context, MailboxConfig, Message
from actormesh._hooks import NO_SPAN

ROOT = Path(__file__).resolve().parent.parent
TARGET_SLOWDOWN = 0.15
STEP = 500
PROGRESS = "benchtrace.progress"
MiB = 1024 * 1024


class Tick(Message):
    n: int = 0


class TraceSink(Actor):
    """Counts ticks; every STEP of them says how many and when, on core NATS."""

    actor_type = "tracesink"
    keyless = True
    mailbox = MailboxConfig(max_msgs=1_000_000, max_bytes=1024 * MiB)
    count = 0

    async def tick(self, msg: Tick, ctx: Context) -> None:
        TraceSink.count += 1
        if TraceSink.count % STEP == 0:
            body = json.dumps({"count": TraceSink.count, "t": time.time()}).encode()
            await ctx.mesh.nc.publish(PROGRESS, body)


def log(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


class Collector:
    """An OTLP/HTTP receiver in a process of its own, as a real collector would be.

    It keeps the request bodies while the clock runs and decodes them only
    when asked for the counts (off the clock).
    """

    def __init__(self) -> None:
        self.url = ""
        self._proc: asyncio.subprocess.Process | None = None

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    async def start(self) -> None:
        self._proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "bench.otlp_collector",
            stdout=asyncio.subprocess.PIPE,
            env={**os.environ, "PYTHONPATH": str(ROOT)},
        )
        assert self._proc.stdout is not None
        line = await asyncio.wait_for(self._proc.stdout.readline(), 30)
        if not line.startswith(b"http://"):
            raise RuntimeError(f"the collector stub did not start: {line!r}")
        self.url = line.decode().strip()

    async def stop(self) -> None:
        if self._proc is not None and self._proc.returncode is None:
            self._proc.terminate()
            await self._proc.wait()

    async def take_counts(self) -> dict[str, int]:
        """Spans received since the last call, by kind."""
        reader, writer = await asyncio.open_connection(*self.url[7:].split(":"))
        writer.write(b"GET /counts HTTP/1.0\r\n\r\n")
        body = (await reader.read()).partition(b"\r\n\r\n")[2]
        writer.close()
        counts: dict[str, int] = json.loads(body)
        return counts


#: mode -> head-sampling ratio (None: tracing off). The driver makes the root
#: spans, so its ratio decides; the worker follows its parent (parentbased_*).
#: "header" traces nothing and only carries a constant W3C `traceparent` header
#: on every tell: what propagating the context costs before any span is made.
MODES: dict[str, float | None] = {"off": None, "on": 1.0, "sampled": 0.01, "header": None}


class HeaderOnly:
    """The hooks' `Tracer` that adds a constant `traceparent` and records nothing."""

    TRACEPARENT = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"

    def producer(self, *, destination: str, headers: dict[str, str], operation: str) -> Any:
        headers["traceparent"] = self.TRACEPARENT
        return NO_SPAN

    def sent(self, *, destination: str, headers: dict[str, str], operation: str) -> None:
        headers["traceparent"] = self.TRACEPARENT

    def consumer(self, **_: Any) -> Any:
        return NO_SPAN


def otel_env(ratio: float, collector: Collector) -> dict[str, str]:
    return {
        "OTEL_TRACES_EXPORTER": "otlp",
        "OTEL_EXPORTER_OTLP_ENDPOINT": collector.url,
        "OTEL_TRACES_SAMPLER": "parentbased_traceidratio",
        "OTEL_TRACES_SAMPLER_ARG": str(ratio),
        # The default queue (2048) can overflow at these rates, and dropped spans
        # would make tracing look cheaper than it is: export them all.
        "OTEL_BSP_MAX_QUEUE_SIZE": "200000",
    }


def _worker_env(url: str, ratio: float | None, collector: Collector) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "ACTORMESH_"))}
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH", "")) if p)
    env["ACTORMESH_LOG_LEVEL"] = "WARNING"
    if ratio is not None:
        env.update(otel_env(ratio, collector))
    return env


#: The processes whose CPU time is counted, in the order the tables show them.
ROLES = ("driver", "worker", "broker", "collector")


def _cpu_seconds(pids: dict[str, int | None]) -> dict[str, float]:
    """CPU seconds (user + system) so far of each role's process (None: this one)."""
    try:
        import psutil
    except ImportError:
        return {}
    out: dict[str, float] = {}
    for role, pid in pids.items():
        t = psutil.Process(pid).cpu_times()
        out[role] = float(t.user + t.system)
    return out


#: How the driver sends: pipelined (`tell_many`, one PubAck window), or
#: `SENDERS` tasks each awaiting the PubAck of its `tell` before the next.
APIS = ("tell_many", "tell")
SENDERS = 64


async def send(ref: Any, count: int, api: str) -> None:
    if api == "tell_many":
        await ref.tell_many(Tick(n=i) for i in range(count))
        return
    numbers = iter(range(count))  # shared: each sender takes the next number

    async def sender() -> None:
        for i in numbers:
            await ref.tell(Tick(n=i))

    await asyncio.gather(*(sender() for _ in range(SENDERS)))


async def one_unit(
    mode: str, messages: int, warmup: int, collector: Collector, unit: int, api: str
) -> dict[str, Any]:
    from actormesh import Mesh
    from actormesh.observability import instrument, tracing_from_env
    from actormesh.testing import NatsServer

    prefix = f"bt{unit}"
    ratio = MODES[mode]
    async with NatsServer() as server:
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "actormesh",
            "--nats-url",
            server.url,
            "--prefix",
            prefix,
            "worker",
            "bench.bench_tracing:TraceSink",
            "--worker-id",
            f"sink{unit}",
            "--concurrency",
            "64",
            "--prefetch",
            "512",
            env=_worker_env(server.url, ratio, collector),
        )
        mesh = await Mesh.connect(server.url, prefix=prefix, name="bench-driver")
        tracing = None
        try:
            if ratio is not None:
                tracing = tracing_from_env(otel_env(ratio, collector), service_name="bench-driver")
                assert tracing is not None
                instrument(mesh, tracing)
            elif mode == "header":
                mesh.tracer = HeaderOnly()
            reached: dict[int, float] = {}
            progressed = asyncio.Event()

            async def on_progress(msg: Any) -> None:
                body = json.loads(msg.data)
                reached[body["count"]] = body["t"]
                progressed.set()

            await mesh.nc.subscribe(PROGRESS, cb=on_progress)
            await mesh.flush()
            ref = mesh.ref(TraceSink)
            while True:  # until the worker has made its mailbox
                try:
                    await ref.tell(Tick(n=-1))
                    break
                except Exception:
                    await asyncio.sleep(0.05)

            async def wait_for(count: int) -> float:
                while count not in reached:
                    progressed.clear()
                    await asyncio.wait_for(progressed.wait(), 120)
                return reached[count]

            await send(ref, warmup - 1, api)
            await wait_for(warmup)
            pids = {
                "driver": None,
                "worker": proc.pid,
                "broker": server.pid,
                "collector": collector.pid,
            }
            cpu_before = _cpu_seconds(pids)
            started = time.time()
            await send(ref, messages, api)
            sent = time.time()
            done = await wait_for(warmup + messages)
            cpu_after = _cpu_seconds(pids)
        finally:
            if proc.returncode is None:
                proc.send_signal(signal.SIGTERM)
            # The worker exports its last spans as it stops.
            await asyncio.wait_for(proc.wait(), 60)
            if tracing is not None:
                mesh.tracer = None
                await tracing.aclose(60)
            await mesh.close()
    seconds = done - started
    result: dict[str, Any] = {
        "mode": mode,
        "api": api,
        "sampling": ratio,
        "messages": messages,
        "seconds": round(seconds, 3),
        "msgs_per_s": round(messages / seconds),
        "send_msgs_per_s": round(messages / (sent - started)),
    }
    # CPU per message is steadier than wall-clock throughput on a shared box, and
    # says where tracing's cost lands. The collector works in every mode (it idles
    # when tracing is off).
    for role, before in cpu_before.items():
        result[f"{role}_cpu_us"] = round((cpu_after[role] - before) / messages * 1e6, 1)
    if ratio is not None:
        result["spans_exported"] = await collector.take_counts()
    return result


async def run(
    messages: int, warmup: int, repeats: int, modes: list[str], api: str
) -> dict[str, Any]:
    collector = Collector()
    await collector.start()
    units: list[dict[str, Any]] = []
    try:
        unit = 0
        for rep in range(repeats):
            # Every other repetition runs its modes in reverse (off, on | on, off):
            # a machine slowing down or speeding up across a repetition then
            # favours neither mode.
            for mode in modes if rep % 2 == 0 else modes[::-1]:
                unit += 1
                log(f"  [{rep + 1}/{repeats}] tracing {mode}: {messages:,} messages by {api} ...")
                res = await one_unit(mode, messages, warmup, collector, unit, api)
                res["repeat"] = rep
                extra = ""
                if "spans_exported" in res:
                    extra = f", spans exported {res['spans_exported']}"
                cpu = ", ".join(f"{r} {res[f'{r}_cpu_us']}" for r in ROLES if f"{r}_cpu_us" in res)
                log(
                    f"      {res['msgs_per_s']:,} msg/s end to end "
                    f"(send {res['send_msgs_per_s']:,} msg/s), CPU us/msg: {cpu}{extra}"
                )
                units.append(res)
    finally:
        await collector.stop()
    return summarize(units, messages, repeats, modes, api)


def _median(units: list[dict[str, Any]], mode: str, key: str) -> float | None:
    values = [u[key] for u in units if u["mode"] == mode and key in u]
    return round(statistics.median(values), 1) if values else None


def summarize(
    units: list[dict[str, Any]], messages: int, repeats: int, modes: list[str], api: str
) -> dict[str, Any]:
    # Each mode against off of the same repetition: the machine's speed drifts
    # between repetitions far more than between two neighbouring units.
    off_by_repeat = {u["repeat"]: u["msgs_per_s"] for u in units if u["mode"] == "off"}
    rows: list[dict[str, Any]] = []
    for mode in modes:
        rate = _median(units, mode, "msgs_per_s")
        assert rate is not None
        ratios = sorted(
            u["msgs_per_s"] / off_by_repeat[u["repeat"]] for u in units if u["mode"] == mode
        )
        rows.append(
            {
                "tracing": _label(mode),
                "msgs_per_s": rate,
                "vs_off": round(statistics.median(ratios), 3),
                "vs_off_range": (round(ratios[0], 3), round(ratios[-1], 3)),
                "cpu_us_per_msg": {
                    role: value
                    for role in ROLES
                    if (value := _median(units, mode, f"{role}_cpu_us")) is not None
                },
                "runs": [u["msgs_per_s"] for u in units if u["mode"] == mode],
            }
        )
    on = rows[modes.index("on")]
    slowdown = round(1.0 - on["vs_off"], 3)
    summary: dict[str, Any] = {
        "api": api,
        "messages": messages,
        "repeats": repeats,
        "rows": rows,
        "slowdown_on": slowdown,
        "target_slowdown": TARGET_SLOWDOWN,
        "meets_target": slowdown <= TARGET_SLOWDOWN,
        "units": units,
    }
    roles = [role for role in ROLES if role in rows[0]["cpu_us_per_msg"]]
    lines = [
        "| tracing | msg/s (median) | vs off (median, range) | "
        + "".join(f"{role} CPU us/msg | " for role in roles)
        + "runs |",
        "|---|---|---|" + "---|" * len(roles) + "---|",
    ]
    for r in rows:
        cpu = r["cpu_us_per_msg"]
        lines.append(
            f"| {r['tracing']} | {r['msgs_per_s']:,.0f} | {r['vs_off']:.1%} "
            f"({r['vs_off_range'][0]:.0%}-{r['vs_off_range'][1]:.0%}) | "
            + "".join(f"{cpu[role]:.1f} | " for role in roles)
            + f"{', '.join(f'{v:,}' for v in r['runs'])} |"
        )
    lines += [
        "",
        f"Sent by {_API_TEXT[api]}.",
        f"Tracing on (every message traced): {slowdown:.1%} slower than off; "
        f"target at most {TARGET_SLOWDOWN:.0%}: "
        f"{'met' if summary['meets_target'] else 'NOT met'}"
        + (" (one repetition: a smoke run, not a measurement)." if repeats < 3 else "."),
    ]
    for mode, r in zip(modes, rows, strict=True):
        ratio = MODES[mode]
        if ratio is not None and ratio < 1.0:
            lines.append(f"With head sampling at {ratio:.0%}: {_slower(r['vs_off'])}.")
        elif mode == "header":
            lines.append(f"Carrying the traceparent header alone: {_slower(r['vs_off'])}.")
    summary["markdown"] = "\n".join(lines)
    return summary


_API_TEXT = {
    "tell_many": "`tell_many` (pipelined, up to 1024 PubAcks awaited at once)",
    "tell": f"`tell` from {SENDERS} concurrent senders, each awaiting its PubAck",
}


def _slower(vs_off: float) -> str:
    return f"{1.0 - vs_off:.1%} slower" if vs_off <= 1.0 else f"{vs_off - 1.0:.1%} faster (noise)"


def _label(mode: str) -> str:
    ratio = MODES[mode]
    if mode == "header":
        return "header only (traceparent carried, no spans)"
    return mode if ratio is None else f"{mode} ({ratio:.0%} sampled)"


def main(argv: list[str] | None = None) -> dict[str, Any]:
    p = argparse.ArgumentParser(
        prog="python -m bench.bench_tracing",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--quick", action="store_true", help="10x fewer messages, one repeat")
    p.add_argument("--messages", type=int, default=50_000)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument(
        "--modes",
        default=",".join(MODES),
        help=f"comma list of {', '.join(MODES)} (off and on are needed for the ratio)",
    )
    p.add_argument(
        "--api",
        default=",".join(APIS),
        help=f"comma list of {', '.join(APIS)}: how the driver sends (pipelined, or "
        f"{SENDERS} senders each awaiting its tell); each is measured on its own",
    )
    p.add_argument("--json", metavar="PATH", help="also write the result here")
    args = p.parse_args(argv)
    messages = args.messages // 10 if args.quick else args.messages
    repeats = 1 if args.quick else args.repeats
    warmup = max(STEP, (messages // 10) // STEP * STEP)
    modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    if not {"off", "on"} <= set(modes) or not set(modes) <= set(MODES):
        p.error(f"--modes: give off, on and optionally sampled (got {args.modes!r})")
    apis = [a.strip() for a in args.api.split(",") if a.strip()]
    if not apis or not set(apis) <= set(APIS):
        p.error(f"--api: give {' and/or '.join(APIS)} (got {args.api!r})")
    try:
        import uvloop  # the CLI's loop too: measure what the worker runs on
    except ImportError:
        runner: Any = asyncio.run
    else:
        runner = uvloop.run
    by_api: dict[str, Any] = {}
    for api in apis:
        log(
            f"bench_tracing: {messages:,} messages by {api} x {repeats} repeats per mode, "
            f"warm-up {warmup:,}"
        )
        by_api[api] = runner(run(messages, warmup, repeats, modes, api))
        log(by_api[api]["markdown"])
    # The top-level figures are the first way of sending's (`tell_many` by default);
    # the target counts as met only if every way measured meets it.
    first = by_api[apis[0]]
    result = {
        **{k: v for k, v in first.items() if k != "markdown"},
        "meets_target": all(r["meets_target"] for r in by_api.values()),
        "by_api": {api: {k: v for k, v in r.items() if k != "units"} for api, r in by_api.items()},
        "markdown": "\n\n".join(r["markdown"] for r in by_api.values()),
    }
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    out = main()
    print(out["markdown"])
