"""Restart semantics against a real broker and real processes: intensity and
escalation (to the events stream, a parent supervisor's mesh, a webhook),
restart types, the strategies' order, and the observe-only backend."""

from __future__ import annotations

import asyncio
import os
import signal
import time
from pathlib import Path
from typing import Any

import msgspec
import pytest
from aiohttp import web

from actormesh import Heartbeat, Mesh
from actormesh.lowlevel import Subjects, ensure_system_streams
from actormesh_supervisor import Supervisor
from actormesh_supervisor._history import load_events
from tests.actors_supervisor import EventLog, child, meshfile, options, wait_until

pytestmark = pytest.mark.integration


def _sh(script: str) -> list[str]:
    return ["/bin/sh", "-c", script]


async def test_crash_loop_restarts_exactly_intensity_times_then_escalates(
    nats_url: str, mesh_prefix: str, tmp_path: Path
) -> None:
    hooks: list[dict[str, Any]] = []

    async def hook(request: web.Request) -> web.Response:
        hooks.append(await request.json())
        return web.json_response({"ok": True})

    app = web.Application()
    app.router.add_post("/hook", hook)
    # A bounded teardown: a failing assertion must fail the test, not hang it.
    runner = web.AppRunner(app, shutdown_timeout=5.0)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    parent = mesh_prefix + "p"
    group = {
        "name": "crashy", "intensity": 3, "period": 60, "backoff_min": 0.05,
        "backoff_max": 0.2,
        "children": [{"name": "loop", "command": _sh("sleep 0.2; exit 2")}],
    }  # fmt: skip
    mf = meshfile(mesh_prefix, [group], parent_prefix=parent,
                  webhook=f"http://127.0.0.1:{port}/hook")  # fmt: skip
    sup = Supervisor(options(nats_url, mesh_prefix, tmp_path, mf))
    probe = await Mesh.connect(nats_url, prefix=parent)
    await ensure_system_streams(probe.js, Subjects(parent))
    try:
        async with EventLog.listen(nats_url, mesh_prefix) as events, sup:
            await events.wait("escalated", timeout=20)
            await asyncio.sleep(1.0)  # long enough for several more restarts, were any due
            assert len(events.of("restarted", child="loop")) == 3
            assert len(events.of("failed", child="loop")) == 4
            escalated = events.of("escalated")
            assert len(escalated) == 1
            assert escalated[0].group == "crashy"
            assert escalated[0].detail["scope"] == "group"
            assert sup.groups["crashy"].failed
            assert sup.slots["loop-1"].state == "failed"
            # The order on the stream: 3 x (failed, restarted), then failed, escalated.
            kinds = [e.kind for _, e in events.events if e.source.startswith("supervisor:")]
            assert kinds[-2:] == ["failed", "escalated"]
            await wait_until(lambda: len(hooks) == 1, 10, what="the webhook POST")
            assert hooks[0]["kind"] == "escalated" and hooks[0]["group"] == "crashy"
        stored = await load_events(probe.js, Subjects(parent), limit=10)
        assert [e.kind for e in stored] == ["escalated"]
        assert stored[0].detail["prefix"] == mesh_prefix
    finally:
        await probe.close()
        await runner.cleanup()


async def test_restart_types(nats_url: str, mesh_prefix: str, tmp_path: Path) -> None:
    group = {
        "name": "types", "intensity": 50, "backoff_min": 0.05, "backoff_max": 0.1,
        "children": [
            {"name": "perm", "restart": "permanent", "command": _sh("sleep 0.3; exit 0")},
            {"name": "trans-ok", "restart": "transient", "command": _sh("sleep 0.3; exit 0")},
            {"name": "trans-bad", "restart": "transient", "command": _sh("sleep 0.3; exit 1")},
            {"name": "temp", "restart": "temporary", "command": _sh("sleep 0.3; exit 1")},
        ],
    }  # fmt: skip
    sup = Supervisor(options(nats_url, mesh_prefix, tmp_path, meshfile(mesh_prefix, [group])))
    async with EventLog.listen(nats_url, mesh_prefix) as events, sup:
        await events.wait("restarted", child="perm", timeout=15)
        await events.wait("restarted", child="trans-bad", timeout=15)
        await wait_until(
            lambda: sup.slots["trans-ok-1"].state == "stopped"
            and sup.slots["temp-1"].state == "stopped",
            10, what="transient(ok) and temporary children to stay stopped",
        )  # fmt: skip
        assert events.of("restarted", child="trans-ok") == []
        assert events.of("restarted", child="temp") == []
        # A normal exit is not a failure; an abnormal one is.
        assert events.of("failed", child="perm") == []
        assert events.of("failed", child="temp")


async def test_one_for_all_and_rest_for_one_restart_the_right_children_in_order(
    nats_url: str, mesh_prefix: str, tmp_path: Path
) -> None:
    ledger = tmp_path / "ledger.txt"

    def kids(*names: str) -> list[dict[str, Any]]:
        return [child(n, ledger=ledger, shutdown_grace=3.0) for n in names]

    groups = [
        {"name": "all", "strategy": "one_for_all", "backoff_min": 0.01,
         "children": kids("a", "b", "c")},
        {"name": "rest", "strategy": "rest_for_one", "backoff_min": 0.01,
         "children": kids("d", "e", "f")},
    ]  # fmt: skip
    sup = Supervisor(options(nats_url, mesh_prefix, tmp_path, meshfile(mesh_prefix, groups)))
    async with EventLog.listen(nats_url, mesh_prefix) as events, sup:
        pids = {w: s.pid for w, s in sup.slots.items()}
        os.kill(pids["b-1"], signal.SIGKILL)
        await events.wait("restarted", 3, group="all", timeout=30)
        await wait_until(lambda: not sup.groups["all"].busy, 30, what="group all settled")
        restarted = events.of("restarted", group="all")
        assert [e.worker for e in restarted] == ["a-1", "b-1", "c-1"]
        assert [e.detail["order"] for e in restarted] == ["1", "2", "3"]
        assert len({e.detail["op"] for e in restarted}) == 1
        # Stopped in reverse start order (b was already dead).
        stops = [e.worker for e in events.of("stopped", source_prefix="") if e.worker in "a-1 c-1"]
        assert stops == ["c-1", "a-1"]
        assert all(sup.slots[w].pid != pids[w] for w in ("a-1", "b-1", "c-1"))

        os.kill(pids["e-1"], signal.SIGKILL)
        await events.wait("restarted", 2, group="rest", timeout=30)
        await wait_until(lambda: not sup.groups["rest"].busy, 30, what="group rest settled")
        assert [e.worker for e in events.of("restarted", group="rest")] == ["e-1", "f-1"]
        assert sup.slots["d-1"].pid == pids["d-1"]
        assert sup.slots["f-1"].pid != pids["f-1"]
        assert all(s.state == "running" for s in sup.slots.values())
        assert len(events.of("restarted")) == 5


async def test_none_backend_observes_counts_and_escalates_without_restarting(
    nats_url: str, mesh_prefix: str, tmp_path: Path
) -> None:
    group = {"name": "watched", "intensity": 2, "children": [{"name": "sim", "actor": "x:Y"}]}
    mf = meshfile(mesh_prefix, [group], backend="none")
    sup = Supervisor(options(nats_url, mesh_prefix, tmp_path, mf))
    mesh = await Mesh.connect(nats_url, prefix=mesh_prefix)
    encode = msgspec.json.Encoder().encode
    started = time.time()
    seq = 0

    async def beat(n: int) -> None:
        nonlocal seq
        for _ in range(n):
            seq += 1
            hb = Heartbeat(
                worker="sim-a", actor_type="sim", pid=1, host="elsewhere", started_at=started,
                seq=seq, in_flight=0, handled=seq, failed=0, dead_lettered=0, restarts=0,
                version="test", status="running", supervisor_child="sim", sent_at=time.time(),
            )  # fmt: skip
            await mesh.nc.publish(Subjects(mesh_prefix).heartbeat("sim", "sim-a"), encode(hb))
            await asyncio.sleep(0.25)

    try:
        async with EventLog.listen(nats_url, mesh_prefix) as events, sup:
            for n in (1, 2, 3):
                await beat(3)
                assert sup.slots["sim-a"].state == "running"
                await events.wait("failed", n, worker="sim-a", timeout=5)
            await events.wait("escalated", timeout=5)
            assert events.of("restarted") == []
            assert sup.groups["watched"].failed
    finally:
        await mesh.close()
