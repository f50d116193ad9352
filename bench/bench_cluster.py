"""Issue 18: the mesh on a three-node JetStream cluster, R3 against R1.

For each replication (R1, then R3) a fresh 3-node cluster on loopback
(`actormesh.testing.NatsCluster`: real nats-server processes, file storage,
default sync) and two worker processes: the actormesh worker serving
``bench.actors:BenchSink`` (``ACTORMESH_REPLICAS`` set, so every stream and
bucket it makes has that many replicas), and the raw nats-py worker of this
module (``--serve-raw``: a continuous pull from a durable consumer of a stream
with the same replicas, echoing durable requests), the ceiling. The driver
(this process) measures, for both:

1. tell throughput: N tells of 128 bytes with unique ``Nats-Msg-Id``s, 1,024
   PubAcks in flight (actormesh: ``ref.tell_many``; raw: ``RawPublisher``),
   from the first publish to the last PubAck (stored and replicated, the
   workers draining meanwhile);
2. ask latency: sequential durable asks (PubAck, then the reply), p50 and p99.

Then, on the R3 cluster, failover time: the actormesh mailbox's leader is
SIGKILLed and one tell (a fixed msg id, retried on `BrokerUnavailable`) is
timed from the kill to its PubAck; the node is restarted and the cluster
settles before the next kill. p50 and p99 over ``--kills`` kills.

Run: ``python -m bench.bench_cluster [--quick]`` or ``python -m bench --only cluster``.
Progress goes to stderr; the table to stdout.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
RAW_STREAM = "RAWC"
RAW_SUBJECT = "rawc.sink"


def progress(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


# -- the raw worker (a process of its own) ----------------------------------------------


async def serve_raw(url: str, replicas: int) -> None:
    """A continuous pull from a durable consumer; echo durable requests, ack all."""
    import nats
    from nats.js.api import AckPolicy, ConsumerConfig, DiscardPolicy, RetentionPolicy, StreamConfig

    nc = await nats.connect(url.split(","), name="bench-raw-cluster")
    js = nc.jetstream()
    with contextlib.suppress(Exception):
        await js.add_stream(
            StreamConfig(
                name=RAW_STREAM,
                subjects=[RAW_SUBJECT],
                num_replicas=replicas,
                retention=RetentionPolicy.WORK_QUEUE,
                max_msgs=10_000,
                discard=DiscardPolicy.NEW,
                duplicate_window=120.0,
            )
        )
    await js.add_consumer(
        RAW_STREAM,
        ConsumerConfig(durable_name="raw", ack_policy=AckPolicy.EXPLICIT, max_ack_pending=1000),
    )
    inbox = nc.new_inbox()
    state = {"asked": 0}

    async def on_msg(msg: Any) -> None:
        if msg.headers and "Status" in msg.headers and not msg.data:
            if msg.headers["Status"] != "100":
                state["asked"] = 0
            return
        state["asked"] -= 1
        reply = (msg.headers or {}).get("Reply-To")
        if reply:
            await nc.publish(reply, msg.data)
        await nc.publish(msg.reply, b"+ACK")

    await nc.subscribe(inbox, cb=on_msg, pending_msgs_limit=-1, pending_bytes_limit=-1)
    next_subject = f"$JS.API.CONSUMER.MSG.NEXT.{RAW_STREAM}.raw"
    while True:
        if state["asked"] < 128:
            want = 256 - max(state["asked"], 0)
            state["asked"] = max(state["asked"], 0) + want
            req = {"batch": want, "expires": 5_000_000_000, "idle_heartbeat": 1_000_000_000}
            await nc.publish(next_subject, json.dumps(req).encode(), reply=inbox)
        await asyncio.sleep(0.002)


# -- the driver --------------------------------------------------------------------------


class Workers:
    """The actormesh and raw worker processes of one cluster."""

    def __init__(self, url: str, first_url: str, replicas: int, logs: Path) -> None:
        from bench._proc import WorkerProcess

        env = {
            "NATS_URL": url,
            "ACTORMESH_PREFIX": "bench",
            "ACTORMESH_REPLICAS": str(replicas),
            "ACTORMESH_LOG_LEVEL": "WARNING",
            "BENCH_NATS_URL": first_url,
        }
        self.procs = [
            WorkerProcess(
                "actormesh",
                [sys.executable, "-m", "actormesh", "worker", "bench.actors:BenchSink"],
                env,
                logs / f"actormesh-r{replicas}.log",
            ),
            WorkerProcess(
                "raw",
                [
                    sys.executable,
                    "-m",
                    "bench.bench_cluster",
                    "--serve-raw",
                    url,
                    "--replicas",
                    str(replicas),
                ],
                env,
                logs / f"raw-r{replicas}.log",
            ),
        ]

    def start(self) -> None:
        for p in self.procs:
            p.start()

    async def stop(self) -> None:
        for p in self.procs:
            if p.proc is not None and p.alive():
                p.proc.terminate()
                with contextlib.suppress(Exception):
                    await asyncio.to_thread(p.proc.wait, 10)
            if p.proc is not None and p.alive():
                p.proc.kill()


async def _answering(client: Any, what: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            await asyncio.wait_for(client.ask(0), 3.0)
            return
        except Exception as exc:
            if time.monotonic() > deadline:
                raise RuntimeError(f"{what} worker does not answer: {exc!r}") from exc
            await asyncio.sleep(0.3)


async def _measure(client: Any, tells: int, asks: int) -> dict[str, float]:
    t0 = time.perf_counter()
    await client.tell(tells)
    rate = tells / (time.perf_counter() - t0)
    lat = []
    for i in range(asks):
        t = time.perf_counter()
        await client.ask(i)
        lat.append((time.perf_counter() - t) * 1000)
    return {"tells_per_s": rate, "ask_p50_ms": pct(lat, 0.5), "ask_p99_ms": pct(lat, 0.99)}


async def one_cluster(replicas: int, args: argparse.Namespace, logs: Path) -> dict[str, Any]:
    from actormesh.testing import NatsCluster
    from bench._clients import MeshClient, RawPublisher, blob_payload

    out: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="bench-cluster-") as store:
        async with NatsCluster(3, store_root=store) as cluster:
            progress(f"R{replicas}: cluster up ({cluster.url})")
            workers = Workers(cluster.url, cluster.urls[0], replicas, logs)
            workers.start()
            from bench.actors import BenchSink

            mesh = MeshClient(BenchSink, "k1", name="bench-cluster", count=False)
            raw = RawPublisher(RAW_SUBJECT, blob_payload())
            try:
                await mesh.start(cluster.urls[0])
                await raw.start(cluster.urls[0])
                await _answering(mesh, "actormesh")
                await _answering(raw, "raw")
                for name, client in (("raw nats-py", raw), ("actormesh", mesh)):
                    progress(f"R{replicas}: {name}: {args.tells} tells, {args.asks} asks")
                    out[name] = await _measure(client, args.tells, args.asks)
                if replicas == 3 and args.kills:
                    out["failover_s"] = await _failovers(cluster, mesh.mesh, args.kills)
            finally:
                await mesh.close()
                await raw.close()
                await workers.stop()
    return out


async def _failovers(cluster: Any, mesh: Any, kills: int) -> list[float]:
    from actormesh import BrokerUnavailable
    from bench.actors import Ping

    stream = mesh.subjects.mailbox_stream("benchsink")
    ref = mesh.ref("benchsink", "k1")
    times = []
    for k in range(kills):
        leader = await cluster.stream_leader(mesh.js, stream)
        victim = cluster.index_of(leader)
        t0 = time.monotonic()
        await cluster.kill(victim)
        while True:
            try:
                await ref.tell(Ping(n=k), msg_id=f"failover-{k}")
                break
            except BrokerUnavailable:
                await asyncio.sleep(0.05)
        times.append(time.monotonic() - t0)
        progress(
            f"failover {k + 1}/{kills}: leader {leader} killed, next acked tell "
            f"after {times[-1]:.2f}s"
        )
        await cluster.restart(victim)
        await cluster.stream_leader(mesh.js, stream)
        await asyncio.sleep(2.0)  # the restarted node catches up before the next kill
    return times


def render(result: dict[str, Any]) -> str:
    lines = [
        "| replicas | client | tells/s | ask p50 ms | ask p99 ms |",
        "|---|---|---:|---:|---:|",
    ]
    for r in ("R1", "R3"):
        for name in ("raw nats-py", "actormesh"):
            m = result[r][name]
            lines.append(
                f"| {r} | {name} | {m['tells_per_s']:,.0f} | {m['ask_p50_ms']:.2f} | "
                f"{m['ask_p99_ms']:.2f} |"
            )
    fo = result["R3"].get("failover_s") or []
    if fo:
        lines.append("")
        lines.append(
            f"failover (R3, mailbox leader SIGKILL to the next acked tell) over {len(fo)} "
            f"kills: p50 {pct(fo, 0.5):.2f}s, p99 {pct(fo, 0.99):.2f}s, "
            f"min {min(fo):.2f}s, max {max(fo):.2f}s, mean {statistics.mean(fo):.2f}s"
        )
    lines.append(f"\nload: {result['uptime']}")
    return "\n".join(lines)


async def run(args: argparse.Namespace) -> dict[str, Any]:
    logs = Path(tempfile.mkdtemp(prefix="bench-cluster-logs-"))
    result: dict[str, Any] = {}
    for replicas in (1, 3):
        result[f"R{replicas}"] = await one_cluster(replicas, args, logs)
    result["logs"] = str(logs)
    return result


def main(argv: list[str] | None = None) -> dict[str, Any]:
    p = argparse.ArgumentParser(prog="bench.bench_cluster", description=__doc__)
    p.add_argument("--quick", action="store_true", help="fewer tells, asks and kills")
    p.add_argument("--tells", type=int, default=None)
    p.add_argument("--asks", type=int, default=None)
    p.add_argument("--kills", type=int, default=None)
    p.add_argument("--serve-raw", metavar="URL", help=argparse.SUPPRESS)
    p.add_argument("--replicas", type=int, default=1, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    try:
        import uvloop

        runner: Any = uvloop.run
    except ImportError:
        runner = asyncio.run
    if args.serve_raw:
        runner(serve_raw(args.serve_raw, args.replicas))
        return {}
    args.tells = args.tells or (5_000 if args.quick else 50_000)
    args.asks = args.asks or (300 if args.quick else 2_000)
    args.kills = args.kills if args.kills is not None else 10
    result: dict[str, Any] = runner(run(args))
    uptime = subprocess.run(["uptime"], capture_output=True, text=True, check=False)  # noqa: S607
    result["uptime"] = uptime.stdout.strip()
    result["markdown"] = render(result)
    return result


if __name__ == "__main__":
    print(main(sys.argv[1:]).get("markdown", ""))
