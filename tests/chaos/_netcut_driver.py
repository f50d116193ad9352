"""The network-cut chaos run, from inside the test's hub network namespace
(`test_cluster_netcut` starts it with ``ip netns exec <hub> python -m
tests.chaos._netcut_driver ...``): the load, a worker process, the cut of the
mailbox leader's link on the hub's bridge for `--cut` seconds, the heal, and
the checks' raw figures, printed as one JSON line on stdout."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

from actormesh import Mesh
from tests.actors_cluster import Tallier
from tests.chaos._failover_load import (
    KEYS,
    Load,
    dead_letters,
    mailbox_empty,
    poison,
    total,
    worker_process,
)


async def stream_leader(mesh: Mesh, stream: str, timeout: float = 30.0) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(Exception):
            msg = await mesh.nc.request(f"$JS.API.STREAM.INFO.{stream}", b"", timeout=1)
            leader = json.loads(msg.data).get("cluster", {}).get("leader")
            if leader:
                return str(leader)
        await asyncio.sleep(0.1)
    raise AssertionError(f"stream {stream} has no leader")


def link(veth: str, state: str) -> None:
    subprocess.run(["ip", "link", "set", veth, state], check=True)  # noqa: S607


async def run(args: argparse.Namespace) -> dict[str, Any]:
    veths = dict(zip(args.names.split(","), args.veths.split(","), strict=True))
    mesh = await Mesh.connect(
        args.url, prefix=args.prefix, name="netcut-sender", publish_timeout=20.0,
        ping_interval=1, max_outstanding_pings=3,
    )  # fmt: skip
    deadline = time.monotonic() + 30
    while True:  # the cluster has a metadata leader (the worker creates R3 streams)
        try:
            await mesh.js.account_info()
            break
        except Exception:
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.2)
    stop = asyncio.Event()
    load = Load(mesh)
    stream = mesh.subjects.mailbox_stream(Tallier.actor_type)
    log = Path(tempfile.mkdtemp(prefix="netcut-")) / "worker.log"
    cut = ""
    try:
        async with worker_process(args.url, args.prefix, log):
            await total(mesh, "a")
            replicas = (await mesh.js.stream_info(stream)).config.num_replicas
            producing = asyncio.create_task(load.run(stop))
            await asyncio.sleep(3.0)
            leader = await stream_leader(mesh, stream)
            cut = veths[leader]
            cut_at = time.monotonic()
            link(cut, "down")
            poisoned = asyncio.create_task(poison(mesh, 1))
            await asyncio.sleep(args.cut)
            link(cut, "up")
            cut = ""
            await asyncio.wait_for(poisoned, 30)
            await asyncio.sleep(3.0)
            stop.set()
            await producing
            await load.settle(45)
            await mailbox_empty(mesh, 40)
            totals = {key: await total(mesh, key) for key in KEYS}
            letters = await dead_letters(mesh)
        return {
            "replicas": replicas,
            "cut_leader": leader,
            "sent": load.sent,
            "acked": len(load.acked),
            "expected": dict(Counter(load.acked.values())),
            "totals": totals,
            "wrong": load.wrong,
            "retries": dict(load.retries),
            "recovery_s": load.recovery(cut_at),
            "dead_letters": [letter.error_type for letter in letters],
            "worker_log": str(log),
        }
    finally:
        if cut:
            link(cut, "up")
        stop.set()
        await mesh.close()


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--url", required=True)
    p.add_argument("--prefix", required=True)
    p.add_argument("--names", required=True, help="server names, comma-separated")
    p.add_argument("--veths", required=True, help="each server's link on the hub bridge")
    p.add_argument("--cut", type=float, default=10.0)
    args = p.parse_args()
    result = asyncio.run(run(args))
    print(json.dumps(result), flush=True)
    sys.exit(0)


if __name__ == "__main__":
    main()
