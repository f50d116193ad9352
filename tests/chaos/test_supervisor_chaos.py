"""Chaos: real worker processes killed (SIGKILL), frozen (SIGSTOP), and the
supervisor itself killed mid-run. Every acknowledged message must be handled;
the ledger of handled message ids shows it (and shows any duplicate)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import time
from pathlib import Path

import pytest

from actormesh import Mesh
from actormesh_supervisor import Supervisor
from tests.actors_supervisor import (
    EventLog,
    SupervisorProcess,
    child,
    kill_quietly,
    meshfile,
    options,
    pid_gone,
    read_ledger,
    tell_all,
    wait_until,
)

pytestmark = pytest.mark.chaos

HB = 0.25
#: "Within 3 heartbeat intervals", plus slack for scheduling on a loaded 2-core box.
DETECT_BOUND = 3 * HB + 1.0


async def test_sigkill_under_load_is_detected_restarted_and_loses_nothing(
    nats_url: str, mesh_prefix: str, tmp_path: Path
) -> None:
    ledger = tmp_path / "ledger.txt"
    mf = meshfile(mesh_prefix, [{"name": "g", "children": [child("ledger", ledger=ledger)]}],
                  heartbeat_interval=HB)  # fmt: skip
    sup = Supervisor(options(nats_url, mesh_prefix, tmp_path, mf))
    async with EventLog.listen(nats_url, mesh_prefix) as events, sup:
        slot = sup.slots["ledger-1"]
        old_pid = slot.pid
        assert old_pid is not None
        mesh = await Mesh.connect(nats_url, prefix=mesh_prefix)
        try:
            ids = [f"m{i:04d}" for i in range(400)]
            sender = asyncio.ensure_future(tell_all(mesh, ids, ms=5, rate=250))
            await wait_until(lambda: len(read_ledger(ledger)) >= 80, 30, what="80 handled")
            killed_at = time.monotonic()
            os.kill(old_pid, signal.SIGKILL)
            await events.wait("failed", worker="ledger-1", timeout=10)
            detected_at = events.first_at("failed", worker="ledger-1")
            assert detected_at is not None
            assert detected_at - killed_at < DETECT_BOUND
            await events.wait("restarted", worker="ledger-1", timeout=10)
            acked = await sender
            await wait_until(
                lambda: set(acked) <= {r[0] for r in read_ledger(ledger)}, 40,
                what="every acked message in the ledger",
            )  # fmt: skip
        finally:
            await mesh.close()
            kill_quietly([old_pid])
        rows = read_ledger(ledger)
        new_pid = sup.slots["ledger-1"].pid
        assert new_pid not in (None, old_pid)
        assert {r[0] for r in rows} == set(acked)
        assert any(pid == new_pid for _, pid, _ in rows), "the replacement handled messages"
        # At-least-once: a message the killed worker handled but had not yet acked
        # is handled again, visibly, by the replacement; nothing else repeats.
        dup = {m for m in acked if sum(1 for r in rows if r[0] == m) > 1}
        for m in dup:
            assert {pid for mid, pid, _ in rows if mid == m} == {old_pid, new_pid}
        assert len(events.of("restarted", worker="ledger-1")) == 1


async def test_sigstop_is_declared_dead_fenced_and_replaced_without_double_handling(
    nats_url: str, mesh_prefix: str, tmp_path: Path
) -> None:
    ledger = tmp_path / "ledger.txt"
    mf = meshfile(mesh_prefix, [{"name": "g", "children": [child("ledger", ledger=ledger)]}],
                  heartbeat_interval=HB)  # fmt: skip
    sup = Supervisor(options(nats_url, mesh_prefix, tmp_path, mf))
    async with EventLog.listen(nats_url, mesh_prefix) as events, sup:
        old_pid = sup.slots["ledger-1"].pid
        assert old_pid is not None
        mesh = await Mesh.connect(nats_url, prefix=mesh_prefix)
        try:
            ids = [f"s{i:04d}" for i in range(200)]
            # Slow handlers: the frozen worker holds messages it has not acked.
            sender = asyncio.ensure_future(tell_all(mesh, ids, ms=40, rate=150))
            await wait_until(lambda: len(read_ledger(ledger)) >= 30, 30, what="30 handled")
            stopped_at = time.monotonic()
            os.kill(old_pid, signal.SIGSTOP)
            frozen = [r for r in read_ledger(ledger) if r[1] == old_pid]
            await events.wait("failed", worker="ledger-1", timeout=10)
            failed = events.of("failed", worker="ledger-1")[0]
            assert failed.detail["cause"] == "heartbeat"
            detected_at = events.first_at("failed", worker="ledger-1")
            assert detected_at is not None and detected_at - stopped_at < DETECT_BOUND
            await events.wait("restarted", worker="ledger-1", timeout=10)
            # Resume it: the supervisor fenced it (SIGKILL) before starting the
            # replacement, so there is nothing left to resume.
            with contextlib.suppress(ProcessLookupError):
                os.kill(old_pid, signal.SIGCONT)
            acked = await sender
            await wait_until(
                lambda: set(acked) <= {r[0] for r in read_ledger(ledger)}, 40,
                what="every acked message in the ledger",
            )  # fmt: skip
            await asyncio.sleep(3 * HB)
        finally:
            await mesh.close()
            kill_quietly([old_pid])
        assert pid_gone(old_pid)
        rows = read_ledger(ledger)
        old_rows = [r for r in rows if r[1] == old_pid]
        # Nothing handled by the frozen worker after it froze...
        assert len(old_rows) == len(frozen)
        # ...and what it had handled but not acked shows up again, once, from the
        # replacement: a visible duplicate, deduplicated by id.
        new_pid = sup.slots["ledger-1"].pid
        for msg_id, _, _ in old_rows:
            assert {pid for mid, pid, _ in rows if mid == msg_id} <= {old_pid, new_pid}
        handled_by_new = [r[0] for r in rows if r[1] == new_pid]
        assert len(handled_by_new) == len(set(handled_by_new))
        assert {r[0] for r in rows} == set(acked)


async def test_supervisor_restarted_mid_run_adopts_workers_without_double_starts(
    nats_url: str, mesh_prefix: str, tmp_path: Path
) -> None:
    ledger = tmp_path / "ledger.txt"
    mf = meshfile(mesh_prefix,
                  [{"name": "g", "children": [child("ledger", ledger=ledger, replicas=2)]}],
                  heartbeat_interval=HB)  # fmt: skip
    ids = ["ledger-1", "ledger-2"]
    first = await SupervisorProcess(tmp_path, mf, nats_url, mesh_prefix, name="sup1").start()
    pids: list[int] = []
    async with EventLog.listen(nats_url, mesh_prefix) as events:
        try:
            ws = await first.wait_running(ids)
            pids = [ws[i]["pid"] for i in ids]
            first.kill()
            await first.wait()
            # The workers outlive their supervisor (their own sessions).
            await asyncio.sleep(2 * HB)
            assert not any(pid_gone(p) for p in pids)

            second = await SupervisorProcess(tmp_path, mf, nats_url, mesh_prefix,
                                             name="sup2").start()  # fmt: skip
            ws = await second.wait_running(ids)
            assert [ws[i]["pid"] for i in ids] == pids
            assert all(ws[i]["adopted"] for i in ids)
            await asyncio.sleep(4 * HB)
            # Two workers started, ever: no double start by the second supervisor.
            assert len(events.of("started", source_prefix="ledger-")) == 2
            assert len(events.of("started")) == 2
            assert len(events.of("adopted")) == 2

            # An adopted worker (not its child) that dies is still detected and restarted.
            os.kill(pids[0], signal.SIGKILL)
            await events.wait("restarted", worker="ledger-1", timeout=15)
            ws = await second.wait_running(ids)
            pids[0] = ws["ledger-1"]["pid"]

            # Without the state file, live heartbeats alone prevent a double start.
            second.kill()
            await second.wait()
            for f in (tmp_path / "rt").glob("supervisor-*.json"):
                f.unlink()
            third = await SupervisorProcess(tmp_path, mf, nats_url, mesh_prefix,
                                            name="sup3").start()  # fmt: skip
            ws = await third.wait_running(ids)
            assert [ws[i]["pid"] for i in ids] == pids
            assert len(events.of("started", source_prefix="ledger-")) == 3

            # SIGTERM: the supervisor drains every worker, then exits 0.
            assert await third.terminate() == 0
            await wait_until(lambda: all(pid_gone(p) for p in pids), 10, what="workers gone")
            assert len(events.of("stopped", source_prefix="ledger-")) >= 2
        finally:
            for proc in ("first", "second", "third"):
                sp = locals().get(proc)
                if isinstance(sp, SupervisorProcess) and sp.proc and sp.proc.returncode is None:
                    sp.kill()
                    await sp.wait()
            kill_quietly(pids)


async def test_supervisor_stops_while_its_broker_is_frozen(
    mesh_prefix: str, tmp_path: Path
) -> None:
    """A broker that takes nothing (SIGSTOP) must not keep the supervisor from
    exiting: each step of `stop` gives up in time, and the workers are stopped."""
    from actormesh.testing import NatsServer, ServerConfig

    server = NatsServer(ServerConfig(store_dir=tmp_path / "nats"))
    await server.start()
    frozen = False
    try:
        mf = meshfile(mesh_prefix, [{"name": "g", "children": [child("ledger")]}])
        sup = Supervisor(options(server.url, mesh_prefix, tmp_path, mf))
        await sup.start()
        pid = sup.slots["ledger-1"].pid
        assert pid is not None
        os.kill(server.pid, signal.SIGSTOP)
        frozen = True
        # Far above the sum of the bounded steps; unbounded, this waited forever.
        async with asyncio.timeout(90):
            await sup.stop()
        assert sup.status == "stopped"
        assert pid_gone(pid)
    finally:
        if frozen:
            os.kill(server.pid, signal.SIGCONT)
        await server.stop()
