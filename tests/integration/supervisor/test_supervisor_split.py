"""No silent split, against a real broker and real processes: the supervisor refuses
replicas of a keyed actor on one partition, and reports a second worker of such a
type started by hand (event, dashboard state, log line); partition workers are fine."""

from __future__ import annotations

import asyncio
import logging
import sys
import time
from pathlib import Path
from typing import Any

import msgspec
import pytest

from actormesh import Mesh, WorkerConfig
from actormesh._meshfile import GrantSpec
from actormesh.lowlevel import ControlReply, ControlRequest
from actormesh.testing import running_worker
from actormesh_supervisor import Supervisor
from actormesh_supervisor._snapshot import snapshot
from tests.actors_split import Add, Tally
from tests.actors_supervisor import (
    ROOT,
    EventLog,
    meshfile,
    options,
    toml_text,
    wait_until,
    worker_env,
)

pytestmark = pytest.mark.integration


def _child(name: str, actor: str, replicas: int) -> dict[str, Any]:
    return {"name": name, "actor": f"tests.actors_split:{actor}", "replicas": replicas,
            "shutdown_grace": 2.0}  # fmt: skip


async def test_the_supervisor_refuses_keyed_replicas_on_one_partition(
    nats_url: str, mesh_prefix: str, tmp_path: Path
) -> None:
    mf = meshfile(mesh_prefix, [{"name": "g", "children": [_child("tally", "Tally", 2)]}])
    config = tmp_path / "mesh.toml"
    config.write_text(toml_text(mf))
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "actormesh_supervisor", "--config", str(config),
        "--nats-url", nats_url, "--prefix", mesh_prefix, "--runtime-dir", str(tmp_path / "rt"),
        "--no-dashboard", env=worker_env(), cwd=ROOT,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    async with asyncio.timeout(60):
        out, err = await proc.communicate()
    assert proc.returncode == 1, (out, err)
    text = err.decode()
    assert "keyed actor on an unpartitioned mailbox" in text
    assert "partitions = 2" in text, text


async def test_a_second_worker_of_a_keyed_type_is_detected_and_reported(
    nats_url: str, mesh_prefix: str, tmp_path: Path, mesh: Mesh, caplog: pytest.LogCaptureFixture
) -> None:
    mf = meshfile(mesh_prefix, [{"name": "g", "children": [_child("tally", "Tally", 1)]}])
    sup = Supervisor(options(nats_url, mesh_prefix, tmp_path, mf))
    caplog.set_level(logging.WARNING, logger="actormesh.supervisor")
    caplog.set_level(logging.WARNING, logger="actormesh.worker")
    async with EventLog.listen(nats_url, mesh_prefix) as events, sup:
        await wait_until(lambda: sup.slots["tally-1"].state == "running", 30, what="tally-1")
        ref = mesh.ref("splittally", "k1")
        await ref.ask(Add(by=1), reply_type=int, timeout=10)
        # The supervised worker alone: keyed, and no split.
        view = sup.views["tally-1"]
        await wait_until(lambda: view.hb.instances == 1, 10, what="tally-1's instance")
        assert view.hb.keyed and view.hb.partition == -1
        assert sup.splits.serving(time.monotonic()) == {}

        # A second worker started by hand, on the same unpartitioned mailbox.
        config = WorkerConfig(worker_id="tally-by-hand", heartbeat_interval=0.25)
        async with running_worker(mesh, Tally, config) as by_hand:
            await events.wait("split_detected", timeout=20)
            [evt] = events.of("split_detected")
            assert evt.actor_type == "splittally"
            assert evt.detail["workers"] == "tally-1,tally-by-hand"
            assert evt.detail["partition"] == "-1"
            assert "partitions=2" in evt.detail["fix"] and "replicas = 2" in evt.detail["fix"]
            assert "tally-1" in evt.reason and "tally-by-hand" in evt.reason

            state = snapshot(sup)
            [split] = state["splits"]
            assert split["workers"] == ["tally-1", "tally-by-hand"]
            workers = {w["id"]: w for w in state["workers"]}
            assert workers["tally-1"]["split_with"] == ["tally-by-hand"]
            assert workers["tally-by-hand"]["split_with"] == ["tally-1"]
            assert workers["tally-by-hand"]["keyed"] is True
            logged = [r.getMessage() for r in caplog.records if "split" in r.getMessage()]
            assert any("tally-1, tally-by-hand" in m and "partitions=2" in m for m in logged)
            # The hand-started worker saw tally-1's heartbeats and warned too.
            assert any(
                m.startswith("worker tally-1 ") and "unpartitioned mailbox" in m for m in logged
            ), logged

            # The worker's own stats say what it serves.
            reply = msgspec.json.decode(
                (
                    await mesh.nc.request(
                        mesh.subjects.control(by_hand.id),
                        msgspec.json.encode(ControlRequest(op="stats")),
                        timeout=5,
                    )
                ).data,
                type=ControlReply,
            )
            assert reply.stats is not None and reply.stats.keyed
            assert (reply.stats.passivated, reply.stats.parked) == (0, 0)
        # The hand-started worker drained: its last heartbeat ends the split.
        await wait_until(lambda: not sup.splits.splits, 10, what="the split to end")
        assert len(events.of("split_detected")) == 1


async def test_one_worker_per_partition_is_no_split(
    nats_url: str, mesh_prefix: str, tmp_path: Path
) -> None:
    groups = [{"name": "g", "children": [_child("parts", "PartitionedTally", 2),
                                         _child("free", "KeylessTally", 2)]}]  # fmt: skip
    sup = Supervisor(options(nats_url, mesh_prefix, tmp_path, meshfile(mesh_prefix, groups)))
    async with sup:
        ids = ["parts-1", "parts-2", "free-1", "free-2"]
        await wait_until(
            lambda: all(sup.slots[i].state == "running" for i in ids), 30, what="the workers"
        )
        parts = sorted(sup.views[i].hb.partition for i in ("parts-1", "parts-2"))
        assert parts == [0, 1]
        assert not sup.views["free-1"].hb.keyed
        # Heartbeats keep coming for longer than a split needs to be reported.
        seen = sup.heartbeats
        await wait_until(lambda: sup.heartbeats >= seen + 16, 20, what="more heartbeats")
        assert sup.splits.splits == {} and sup.splits.detected_total == 0


async def test_the_supervisor_applies_the_mesh_files_grants(
    mesh: Mesh, nats_url: str, mesh_prefix: str, tmp_path: Path
) -> None:
    """A deployment without `actormesh up` (compose) gets the mesh file's grants
    from the supervisor; applying them again only adds."""
    mf = msgspec.structs.replace(
        meshfile(mesh_prefix, []),
        grants=[
            GrantSpec(principal="assistant", tools=["counter.add"]),
            GrantSpec(principal="client", tools=["counter.read"], approval=["counter.clear"]),
        ],
    )
    await mesh.tools.grants.grant("client", "echo.say")
    for _ in range(2):
        sup = Supervisor(options(nats_url, mesh_prefix, tmp_path, mf))
        await sup.start()
        await sup.stop()
    assert (await mesh.tools.grants.get("assistant", fresh=True)).tools == ["counter.add"]
    client = await mesh.tools.grants.get("client", fresh=True)
    assert client.tools == ["echo.say", "counter.read", "counter.clear"]
    assert client.approval == ["counter.clear"]
