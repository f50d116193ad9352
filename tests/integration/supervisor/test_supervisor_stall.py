"""A consumer that stops making progress while its worker still heartbeats is
detected and recovered; a blocked event loop shows in the worker's health."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from actormesh import Mesh
from actormesh_supervisor import Supervisor
from tests.actors_supervisor import (
    EventLog,
    child,
    meshfile,
    options,
    read_ledger,
    snapshot_workers,
    wait_until,
)

pytestmark = pytest.mark.integration


async def test_stalled_consumer_is_detected_and_recovered(
    nats_url: str, mesh_prefix: str, tmp_path: Path
) -> None:
    ledger = tmp_path / "ledger.txt"
    one_at_a_time = ["--concurrency", "1", "--prefetch", "1"]
    group = {"name": "g", "backoff_min": 0.01,
             "children": [child("ledger", ledger=ledger, args=one_at_a_time)]}  # fmt: skip
    mf = meshfile(mesh_prefix, [group], stall_after=1.5)
    sup = Supervisor(options(nats_url, mesh_prefix, tmp_path, mf))
    async with EventLog.listen(nats_url, mesh_prefix) as events, sup:
        old_pid = sup.slots["ledger-1"].pid
        mesh = await Mesh.connect(nats_url, prefix=mesh_prefix)
        try:
            ref = mesh.ref("ledger", None)
            await ref.tell(json.dumps({"type": "Hang", "id": "hang"}).encode())
            ids = [f"w{i}" for i in range(5)]
            for msg_id in ids:
                await ref.tell(json.dumps({"type": "Work", "id": msg_id}).encode())
            await events.wait("failed", worker="ledger-1", timeout=20)
            failed = events.of("failed", worker="ledger-1")[0]
            assert failed.detail["cause"] == "stall"
            assert "no progress" in failed.reason
            await events.wait("restarted", worker="ledger-1", timeout=20)
            await wait_until(
                lambda: {"hang", *ids} <= {r[0] for r in read_ledger(ledger)}, 30,
                what="the stalled messages handled after the restart",
            )  # fmt: skip
        finally:
            await mesh.close()
        assert sup.slots["ledger-1"].pid != old_pid
        assert sup.mailboxes is not None
        await wait_until(lambda: not sup.mailboxes.views["ledger"].stalled, 10, what="unstalled")


async def test_blocked_event_loop_shows_in_health(
    nats_url: str, mesh_prefix: str, tmp_path: Path
) -> None:
    ledger = tmp_path / "ledger.txt"
    group = {"name": "g", "children": [child("ledger", ledger=ledger)]}
    # Misses generous enough that a 0.8 s block is a symptom, not a death.
    mf = meshfile(mesh_prefix, [group], heartbeat_misses=12, loop_lag_warning=0.3)
    sup = Supervisor(options(nats_url, mesh_prefix, tmp_path, mf))
    async with sup:
        mesh = await Mesh.connect(nats_url, prefix=mesh_prefix)
        try:
            await mesh.ref("ledger", None).tell(
                json.dumps({"type": "Block", "id": "b", "ms": 800}).encode()
            )
            await wait_until(
                lambda: snapshot_workers(sup)["ledger-1"]["health"] == "blocked", 10,
                what="the blocked loop to show",
            )  # fmt: skip
            assert snapshot_workers(sup)["ledger-1"]["loop_lag"] > 0.3
            assert sup.slots["ledger-1"].state == "running"
        finally:
            await mesh.close()
