"""Benchmark the supervisor (not a test): failure detection and recovery, and its
CPU cost at 1,000 workers.

``python -m bench.bench_supervisor [--quick] [--kills 20] [--json PATH]``

1. Recovery: a supervisor (process backend, heartbeat 1 s, dead after 3 misses)
   runs one worker of `Stamp`, which reports the pid that handled each message.
   While 100 messages/s flow, the worker is SIGKILLed (process exit path) or
   SIGSTOPped (missed-heartbeat path); measured: kill -> `failed` event
   (detection) and kill -> first message handled by the replacement.
2. Cost: 1,000 simulated workers heartbeat at 1 Hz from this process (Heartbeat
   structs on the real subjects) to a supervisor with the `none` backend; its
   CPU is sampled with psutil, without and then with a dashboard SSE client.

Targets: detection < 3 s and handling again < 5 s at p99; < 10% of one core at
1,000 workers. Progress goes to stderr; the result dict to --json.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from actormesh import Actor, Context, Message

ROOT = Path(__file__).resolve().parents[1]
PREFIX = "benchsup"


class Tick(Message):
    n: int


class Stamp(Actor):
    """Reports, on core NATS, which process handled each message."""

    actor_type = "stamp"
    keyless = True

    async def tick(self, msg: Tick, ctx: Context) -> None:
        subject = f"{ctx.mesh.subjects.prefix}.bench.handled"
        await ctx.mesh.nc.publish(subject, f"{os.getpid()} {msg.n}".encode())


def log(text: str) -> None:
    print(f"[bench_supervisor] {text}", file=sys.stderr, flush=True)


def pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    k = max(0, min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1))))
    return ordered[k]


def _toml(prefix: str, groups: str, **sup: Any) -> str:
    lines = ["[mesh]", f'prefix = "{prefix}"', "", "[supervisor]"]
    for k, v in sup.items():
        lines.append(f"{k} = {json.dumps(v)}")
    return "\n".join(lines) + "\n\n" + groups


async def _start_supervisor(tmp: Path, config: str, url: str, *extra: str) -> Any:
    path = tmp / "mesh.toml"
    path.write_text(config)
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH", "")) if p)
    env["ACTORMESH_LOG_LEVEL"] = "WARNING"
    env["ACTORMESH_DASHBOARD_TOKEN"] = "bench-token-0123456789abcdef"
    return await asyncio.create_subprocess_exec(
        sys.executable, "-m", "actormesh_supervisor", "--config", str(path), "--nats-url", url,
        "--runtime-dir", str(tmp / "rt"), *extra, env=env, cwd=ROOT,
    )  # fmt: skip


async def _stop(proc: Any) -> None:
    if proc.returncode is None:
        proc.send_signal(signal.SIGTERM)
        try:
            async with asyncio.timeout(30):
                await proc.wait()
        except TimeoutError:
            proc.kill()
            await proc.wait()


async def _wait_until(pred: Any, timeout: float) -> float:
    deadline = time.monotonic() + timeout
    while not pred():
        if time.monotonic() > deadline:
            raise TimeoutError
        await asyncio.sleep(0.002)
    return time.monotonic()


class _Recovery:
    """What the recovery run watches: handled ticks, `failed` events, worker pids."""

    def __init__(self) -> None:
        import msgspec

        from actormesh import Event, Heartbeat

        self.handled: list[tuple[float, int]] = []
        self.failed: list[tuple[float, Any]] = []
        self.pid: dict[str, int] = {}
        self.running = True
        self.results: dict[str, dict[str, list[float]]] = {
            "SIGKILL": {"detect": [], "handling": []},
            "SIGSTOP": {"detect": [], "handling": []},
        }
        self._dec_evt = msgspec.json.Decoder(Event).decode
        self._dec_hb = msgspec.json.Decoder(Heartbeat).decode
        self._encode = msgspec.json.Encoder().encode

    async def on_handled(self, msg: Any) -> None:
        self.handled.append((time.monotonic(), int(msg.data.split()[0])))

    async def on_failed(self, msg: Any) -> None:
        self.failed.append((time.monotonic(), self._dec_evt(msg.data)))

    async def on_hb(self, msg: Any) -> None:
        hb = self._dec_hb(msg.data)
        if hb.status == "running":
            self.pid[hb.worker] = hb.pid

    async def sender(self, mesh: Any) -> None:
        n = 0
        while self.running:
            n += 1
            try:
                await mesh.ref("stamp", None).tell(self._encode(Tick(n=n)))
            except Exception as exc:  # the mailbox may not exist for the first moment
                log(f"tell failed: {exc!r}")
                await asyncio.sleep(0.5)
            await asyncio.sleep(0.01)

    async def one_fault(self, i: int, how: str, total: int) -> None:
        handled, failed, pid = self.handled, self.failed, self.pid
        victim = pid["stamp-1"]
        await _wait_until(lambda: bool(handled) and handled[-1][1] == victim, 30)
        n_failed = len(failed)
        t0 = time.monotonic()
        os.kill(victim, signal.SIGKILL if how == "SIGKILL" else signal.SIGSTOP)
        await _wait_until(lambda: len(failed) > n_failed, 30)
        t_detect = failed[n_failed][0]
        await _wait_until(lambda: any(p != victim for _, p in handled[-50:]), 30)
        t_back = next(t for t, p in handled if t > t0 and p != victim)
        self.results[how]["detect"].append(t_detect - t0)
        self.results[how]["handling"].append(t_back - t0)
        log(
            f"{how} {i}/{total}: detected {t_detect - t0:.3f}s, "
            f"handling again {t_back - t0:.3f}s ({failed[n_failed][1].detail.get('cause')})"
        )
        if how == "SIGSTOP":
            try:
                os.kill(victim, signal.SIGCONT)
            except ProcessLookupError:
                pass  # fenced by the supervisor, as it should be
        pid.pop("stamp-1", None)
        await _wait_until(lambda: "stamp-1" in pid, 30)
        handled.clear()
        await asyncio.sleep(2.3)  # past reset_after: every kill starts at the min backoff


async def recovery(url: str, *, kills: int, stops: int) -> dict[str, Any]:
    from actormesh import Mesh

    groups = (
        '[[groups]]\nname = "bench"\nintensity = 10000\nperiod = 60\nbackoff_min = 0.1\n'
        'backoff_max = 0.5\nreset_after = 2\n\n[[groups.children]]\nname = "stamp"\n'
        'actor = "bench.bench_supervisor:Stamp"\nshutdown_grace = 2\n'
    )
    config = _toml(PREFIX, groups, heartbeat_interval=1.0, heartbeat_misses=3, intensity=10000,
                   period=60.0)  # fmt: skip
    tmp = Path(tempfile.mkdtemp(prefix="bench-sup-"))
    sup = await _start_supervisor(tmp, config, url, "--no-dashboard")
    mesh = await Mesh.connect(url, prefix=PREFIX)
    run = _Recovery()
    await mesh.nc.subscribe(f"{PREFIX}.bench.handled", cb=run.on_handled)
    await mesh.nc.subscribe(f"{PREFIX}.sys.evt.failed.*", cb=run.on_failed)
    await mesh.nc.subscribe(f"{PREFIX}.sys.hb.stamp.>", cb=run.on_hb)
    task = asyncio.ensure_future(run.sender(mesh))
    try:
        await _wait_until(lambda: "stamp-1" in run.pid and len(run.handled) > 20, 60)
        plan = ["SIGKILL"] * kills + ["SIGSTOP"] * stops
        for i, how in enumerate(plan, 1):
            await run.one_fault(i, how, len(plan))
    finally:
        run.running = False
        await task
        await mesh.close()
        await _stop(sup)
    return _recovery_summary(run.results)


def _recovery_summary(results: dict[str, dict[str, list[float]]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for how, series in results.items():
        if not series["detect"]:
            continue
        out[how] = {
            "samples": len(series["detect"]),
            "detect_p50_s": round(statistics.median(series["detect"]), 3),
            "detect_p99_s": round(pct(series["detect"], 99), 3),
            "handling_p50_s": round(statistics.median(series["handling"]), 3),
            "handling_p99_s": round(pct(series["handling"], 99), 3),
        }
    return out


async def cost(url: str, *, workers: int, seconds: float) -> dict[str, Any]:
    import aiohttp
    import msgspec
    import psutil

    from actormesh import Heartbeat, Mesh
    from actormesh.lowlevel import Subjects

    prefix = PREFIX + "cpu"
    groups = ('[[groups]]\nname = "sim"\nintensity = 100000\n\n[[groups.children]]\n'
              'name = "sim"\nactor = "sim:Sim"\nreplicas = 1\n')  # fmt: skip
    config = _toml(prefix, groups, backend="none", heartbeat_interval=1.0, heartbeat_misses=3,
                   dashboard_port=0)  # fmt: skip
    tmp = Path(tempfile.mkdtemp(prefix="bench-sup-cpu-"))
    sup = await _start_supervisor(tmp, config, url, "--prefix", prefix)
    mesh = await Mesh.connect(url, prefix=prefix)
    subjects = Subjects(prefix)
    encode = msgspec.json.Encoder().encode
    started = time.time()
    running = True
    sent = 0

    async def simulate() -> None:
        nonlocal sent
        seq = 0
        batch = max(1, workers // 20)
        loop = asyncio.get_running_loop()
        next_at = loop.time()
        while running:
            seq += 1
            for base in range(0, workers, batch):
                for i in range(base, min(workers, base + batch)):
                    wid = f"sim-{i:04d}"
                    hb = Heartbeat(
                        worker=wid, actor_type="sim", pid=100000 + i, host="sim", seq=seq,
                        started_at=started, in_flight=i % 3, handled=seq * 10, failed=0,
                        dead_lettered=0, restarts=0, version="bench", status="running",
                        supervisor_child="sim", sent_at=time.time(),
                    )  # fmt: skip
                    await mesh.nc.publish(subjects.heartbeat("sim", wid), encode(hb))
                    sent += 1
                next_at += 1.0 / 20
                await asyncio.sleep(max(0.0, next_at - loop.time()))

    task = asyncio.ensure_future(simulate())
    url_file = tmp / "rt" / f"dashboard-{prefix}-root.url"
    try:
        for _ in range(300):  # the dashboard is up within 30 s or the read below fails
            if url_file.exists():
                break
            await asyncio.sleep(0.1)
        dash = url_file.read_text().strip()
        proc = psutil.Process(sup.pid)
        log(f"{workers} simulated workers heartbeating at 1 Hz; warming up")
        await asyncio.sleep(6)
        async with aiohttp.ClientSession() as http, http.get(dash + "api/state") as r:
            state = await r.json()
        seen = sum(1 for w in state["workers"] if w["supervised"])
        sent0, t0 = sent, time.monotonic()
        proc.cpu_percent(None)
        await asyncio.sleep(seconds)
        idle = proc.cpu_percent(None)
        rate = (sent - sent0) / (time.monotonic() - t0)
        log(
            f"supervisor CPU {idle:.1f}% of one core at {rate:.0f} heartbeats/s "
            f"({seen} workers supervised)"
        )
        async with aiohttp.ClientSession() as http, http.get(dash + "api/stream") as r:
            reader = asyncio.ensure_future(_drain(r))
            await asyncio.sleep(2)
            proc.cpu_percent(None)
            await asyncio.sleep(seconds)
            with_sse = proc.cpu_percent(None)
            reader.cancel()
        log(f"supervisor CPU {with_sse:.1f}% of one core with one dashboard SSE client")
    finally:
        running = False
        await task
        await mesh.close()
        await _stop(sup)
    return {
        "workers": workers,
        "workers_supervised": seen,
        "heartbeats_per_s": round(rate, 1),
        "cpu_percent_of_one_core": round(idle, 2),
        "cpu_percent_with_sse_client": round(with_sse, 2),
    }


async def _drain(resp: Any) -> None:
    async for _ in resp.content.iter_any():
        pass


async def run(args: argparse.Namespace) -> dict[str, Any]:
    from actormesh.testing import NatsServer

    async with NatsServer() as server:
        log(f"nats-server at {server.url}")
        rec = await recovery(server.url, kills=args.kills, stops=args.stops)
        cpu = await cost(server.url, workers=args.workers, seconds=args.seconds)
    rows = []
    for how, r in rec.items():
        rows.append({"what": f"{how} -> detected (p50 / p99 s)",
                     "value": f"{r['detect_p50_s']} / {r['detect_p99_s']}",
                     "target": "< 3 s at p99"})  # fmt: skip
        rows.append({"what": f"{how} -> handling again (p50 / p99 s)",
                     "value": f"{r['handling_p50_s']} / {r['handling_p99_s']}",
                     "target": "< 5 s at p99"})  # fmt: skip
    rows.append({"what": f"CPU at {cpu['workers']} workers x 1 Hz (% of one core)",
                 "value": cpu["cpu_percent_of_one_core"], "target": "< 10%"})  # fmt: skip
    rows.append({"what": "... with one dashboard SSE client",
                 "value": cpu["cpu_percent_with_sse_client"], "target": ""})  # fmt: skip
    return {"recovery": rec, "cpu": cpu, "rows": rows,
            "config": {"heartbeat_interval": 1.0, "heartbeat_misses": 3}}  # fmt: skip


def main(argv: list[str] | None = None) -> dict[str, Any]:
    p = argparse.ArgumentParser(prog="bench_supervisor", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    p.add_argument("--quick", action="store_true", help="5 kills, 3 stops, short CPU sample")
    p.add_argument("--kills", type=int, default=20)
    p.add_argument("--stops", type=int, default=10)
    p.add_argument("--workers", type=int, default=1000)
    p.add_argument("--seconds", type=float, default=15.0, help="CPU sampling window")
    p.add_argument("--json", metavar="PATH", help="write the result here")
    args = p.parse_args(argv)
    if args.quick:
        args.kills, args.stops, args.seconds = 5, 3, 6.0
    result = asyncio.run(run(args))
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2))
    print(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    main()
