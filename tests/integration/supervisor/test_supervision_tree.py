"""A supervision tree across hosts, as real processes on loopback.

Two host supervisors (each in its own process group, standing for two hosts) run
their workers under one root supervisor, all on one broker. The root restarts a
host's group that exhausted its intensity, escalates past its own intensity
(stopping every host supervisor and exiting 3), and notices a host supervisor
killed with SIGKILL by its missing heartbeats.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from actormesh import Event
from tests.actors_supervisor import (
    EventLog,
    SupervisorProcess,
    child,
    kill_quietly,
    meshfile,
    pid_gone,
    wait_until,
)

pytestmark = pytest.mark.integration

FLAKY = [
    "{python}", "-m", "tests.integration.supervisor.tree_flaky", "--nats-url", "{nats_url}",
    "--prefix", "{prefix}", "worker", "tests.actors_supervisor:Ledger",
    "--worker-id", "{worker_id}", "--supervisor-child", "{child}",
    "--heartbeat-interval", "{heartbeat_interval}", "--drain-grace", "1",
]  # fmt: skip


class Node(SupervisorProcess):
    """One supervisor process (`python -m actormesh_supervisor`) in its own process
    group: a host supervisor stands for a host, and SIGKILL takes it down whole."""

    new_session = True

    def __init__(self, base: Path, name: str, nats_url: str, prefix: str, **section: Any) -> None:
        groups = section.pop("groups", [])
        self.dir = base / name
        self.dir.mkdir(parents=True, exist_ok=True)
        self.name = name
        mf = meshfile(prefix, groups, name=name, **section)
        super().__init__(self.dir, mf, nats_url, prefix, name="supervisor")

    async def wait_state(self, check: Any, what: str, timeout: float = 40.0) -> dict[str, Any]:
        """Poll /api/state until `check(state)` is true."""
        deadline = time.monotonic() + timeout
        last: dict[str, Any] = {}
        while time.monotonic() < deadline:
            with contextlib.suppress(aiohttp.ClientError):
                last = await self.state()
                if check(last):
                    return last
            await asyncio.sleep(0.1)
        raise AssertionError(
            f"{self.name}: timed out after {timeout}s waiting for {what}; "
            f"tree: {json.dumps(last.get('tree'))[:2000]}\n{self.tail()}"
        )

    def worker_pids(self) -> list[int]:
        """The pids the process backend recorded (to clean up after a failed test)."""
        path = self.runtime / f"supervisor-{self.prefix}-{self.name}.json"
        try:
            data = json.loads(path.read_text())
        except (OSError, ValueError):
            return []
        workers = data.get("workers", {}) if isinstance(data, dict) else {}
        return [e["pid"] for e in workers.values() if isinstance(e.get("pid"), int)]

    async def wait_exit(self, timeout: float) -> int:
        assert self.proc is not None
        async with asyncio.timeout(timeout):
            return await self.proc.wait()

    def alive(self) -> bool:
        return self.proc is not None and self.proc.returncode is None


@contextlib.asynccontextmanager
async def cleanup(nodes: list[Node]) -> AsyncIterator[None]:
    """Nothing a test started outlives it, whatever it asserted."""
    pids: set[int] = set()
    try:
        yield
    finally:
        for node in nodes:
            pids.update(node.worker_pids())
            if node.alive():
                assert node.proc is not None
                node.proc.send_signal(signal.SIGTERM)
        for node in nodes:
            if node.alive():
                try:
                    await node.wait_exit(20)
                except TimeoutError:
                    assert node.proc is not None
                    node.proc.kill()
                    await node.proc.wait()
            pids.update(node.worker_pids())
        kill_quietly(sorted(pids))


def host_view(state: dict[str, Any], host: str) -> dict[str, Any]:
    tree = state.get("tree") or {}
    for h in tree.get("hosts", []):
        if h["host"] == host:
            return dict(h)
    return {}


def worker_of(state: dict[str, Any], host: str, worker: str) -> dict[str, Any]:
    for g in host_view(state, host).get("groups", []):
        for w in g["workers"]:
            if w["id"] == worker:
                return dict(w)
    return {}


def group_of(state: dict[str, Any], host: str, group: str) -> dict[str, Any]:
    for g in host_view(state, host).get("groups", []):
        if g["name"] == group:
            return dict(g)
    return {}


def both_trees_up(state: dict[str, Any], workers: dict[str, str]) -> bool:
    return all(
        host_view(state, host).get("state") == "running"
        and worker_of(state, host, worker).get("health") == "ok"
        for host, worker in workers.items()
    )


def _nodes(tmp: Path, url: str, prefix: str, budget: Path, ledger: Path, **root: Any) -> list[Node]:
    section = {"heartbeat_interval": 0.25, "heartbeat_misses": 4}
    hb = dict(section)
    flaky = {
        "name": "work", "intensity": 2, "period": 60, "backoff_min": 0.05, "backoff_max": 0.2,
        "children": [child("flaky-a", ledger=ledger, actor="", command=FLAKY,
                           env={"CRASH_BUDGET": str(budget), "LEDGER_PATH": str(ledger)})],
    }  # fmt: skip
    steady = {"name": "work", "children": [child("steady-b", ledger=ledger)]}
    return [
        Node(tmp, "root", url, prefix, role="root", **section, **root),
        Node(tmp, "sup-a", url, prefix, role="host", host="a", groups=[flaky], **hb),
        Node(tmp, "sup-b", url, prefix, role="host", host="b", groups=[steady], **hb),
    ]


def _of(events: EventLog, kind: str, source: str, **detail: str) -> list[Event]:
    return [
        e
        for _, e in events.events
        if e.kind == kind
        and e.source == source
        and all(e.detail.get(k) == v for k, v in detail.items())
    ]


@pytest.mark.timeout(120)
async def test_root_restarts_an_exhausted_group_then_escalates_past_its_intensity(
    nats_url: str, mesh_prefix: str, tmp_path: Path
) -> None:
    budget, ledger = tmp_path / "budget", tmp_path / "ledger"
    budget.write_text("3")  # three crashes: one more than the group's intensity of 2
    root, a, b = nodes = _nodes(tmp_path, nats_url, mesh_prefix, budget, ledger,
                                strategy="one_for_one", intensity=1, period=60)  # fmt: skip
    async with EventLog.listen(nats_url, mesh_prefix) as events, cleanup(nodes):
        await root.start()
        await asyncio.gather(a.start(), b.start())
        # Host a's group crashes three times, fails and escalates; the root (one_for_one)
        # orders that group restarted; with the budget spent, it runs.
        state = await root.wait_state(
            lambda s: (
                both_trees_up(s, {"a": "flaky-a-1", "b": "steady-b-1"})
                and host_view(s, "a").get("escalations") == 1
            ),
            "both hosts' trees up after the root restarted host a's group",
        )
        group_a = group_of(state, "a", "work")
        assert group_a["status"] == "ok"
        assert worker_of(state, "a", "flaky-a-1")["failures"] >= 3
        assert state["tree"]["restarts_in_window"] == 1
        assert state["tree"]["escalated"] is False
        assert host_view(state, "b")["escalations"] == 0
        esc = _of(events, "escalated", "supervisor:sup-a", scope="group")
        assert len(esc) == 1 and esc[0].group == "work"
        orders = _of(events, "restarted", "supervisor:root", order="restart_group")
        assert [(e.child, e.group) for e in orders] == [("a", "work")]
        # The host restarted the group on the root's order (an operator-style restart).
        await wait_until(lambda: bool(_of(events, "restarted", "supervisor:sup-a", operator="1")),
                         10, what="host a's restart of its group")  # fmt: skip
        assert b.alive()
        steady_pid = worker_of(state, "b", "steady-b-1")["pid"]

        # Crash it for good: the group fails again, and a second restart is one more
        # than the root's intensity of 1: the root stops both hosts and exits 3.
        budget.write_text("100")
        os.kill(worker_of(state, "a", "flaky-a-1")["pid"], signal.SIGKILL)
        assert await root.wait_exit(60) == 3, root.tail()
        assert await a.wait_exit(30) == 0, a.tail()
        assert await b.wait_exit(30) == 0, b.tail()
        await wait_until(lambda: bool(_of(events, "escalated", "supervisor:root")), 10,
                         what="the root's escalation event")  # fmt: skip
        (top,) = _of(events, "escalated", "supervisor:root")
        assert top.detail["scope"] == "root"
        assert top.detail["trigger"] == "group" and top.child == "a"
        assert set(top.detail["stopped"].split(",")) == {"a", "b"}
        assert len(_of(events, "escalated", "supervisor:sup-a", scope="group")) == 2
        # Stopping a host supervisor drained its workers: none is left running.
        await wait_until(lambda: pid_gone(steady_pid), 10, what="host b's worker gone")
        assert a.worker_pids() == [] and b.worker_pids() == []  # drained, not left


@pytest.mark.timeout(120)
async def test_root_notices_a_killed_host_supervisor_and_sees_it_come_back(
    nats_url: str, mesh_prefix: str, tmp_path: Path
) -> None:
    budget, ledger = tmp_path / "budget", tmp_path / "ledger"
    root, a, b = nodes = _nodes(tmp_path, nats_url, mesh_prefix, budget, ledger,
                                strategy="one_for_all", intensity=5, period=60)  # fmt: skip
    async with EventLog.listen(nats_url, mesh_prefix) as events, cleanup(nodes):
        await root.start()
        await asyncio.gather(a.start(), b.start())
        state = await root.wait_state(
            lambda s: both_trees_up(s, {"a": "flaky-a-1", "b": "steady-b-1"}), "both trees up"
        )
        orphan = worker_of(state, "a", "flaky-a-1")["pid"]
        steady_pid = worker_of(state, "b", "steady-b-1")["pid"]
        assert a.proc is not None
        os.killpg(a.proc.pid, signal.SIGKILL)  # the host supervisor, not its workers
        assert await a.wait_exit(10) == -signal.SIGKILL

        # Noticed by its missing heartbeats; one_for_all restarts the other host's tree.
        state = await root.wait_state(
            lambda s: (
                host_view(s, "a").get("state") == "lost"
                and worker_of(s, "b", "steady-b-1").get("pid") not in (None, steady_pid)
                and worker_of(s, "b", "steady-b-1").get("health") == "ok"
            ),
            "host a lost and host b restarted",
        )
        assert host_view(state, "a")["lost"] == 1
        lost = [e for e in _of(events, "failed", "supervisor:root", scope="host") if e.child == "a"]
        assert len(lost) == 1 and lost[0].detail["cause"] == "heartbeat"
        orders = _of(events, "restarted", "supervisor:root", order="restart")
        assert [e.child for e in orders] == ["b"]
        assert pid_gone(steady_pid)
        assert not pid_gone(orphan), "a host supervisor's death leaves its workers running"

        # Its service manager brings it back: it adopts its worker, the root sees it again.
        await a.start()
        state = await root.wait_state(
            lambda s: both_trees_up(s, {"a": "flaky-a-1", "b": "steady-b-1"}), "host a back"
        )
        assert worker_of(state, "a", "flaky-a-1")["pid"] == orphan

        def back() -> list[str]:
            return [e.reason for e in _of(events, "started", "supervisor:root") if e.child == "a"]

        await wait_until(lambda: len(back()) == 2, 10, what="host a's return in the events")
        assert back() == ["joined the tree", "heartbeats resumed"]
        assert state["tree"]["escalated"] is False and root.alive()


@pytest.mark.timeout(120)
async def test_an_escalation_waits_for_a_root_that_is_not_up_yet(
    nats_url: str, mesh_prefix: str, tmp_path: Path
) -> None:
    budget, ledger = tmp_path / "budget", tmp_path / "ledger"
    budget.write_text("3")
    root, a, _ = nodes = _nodes(tmp_path, nats_url, mesh_prefix, budget, ledger,
                                strategy="one_for_one", intensity=3, period=60)  # fmt: skip
    async with EventLog.listen(nats_url, mesh_prefix) as events, cleanup(nodes):
        await a.start()
        # No root yet: the group fails and stays failed; the host keeps resending.
        await a.wait_state(
            lambda s: (
                any(g["name"] == "work" and g["status"] == "failed" for g in s["groups"])
                and (s.get("tree") or {}).get("escalations_pending") == 1
            ),
            "host a's group failed, its escalation pending",
        )
        await root.start()
        state = await root.wait_state(
            lambda s: both_trees_up(s, {"a": "flaky-a-1"}), "host a's group restarted by the root"
        )
        assert host_view(state, "a")["escalations"] == 1
        assert host_view(state, "a")["orders"] == 1
        orders = _of(events, "restarted", "supervisor:root", order="restart_group")
        assert [(e.child, e.group) for e in orders] == [("a", "work")]
        host = await a.wait_state(
            lambda s: (s.get("tree") or {}).get("escalations_pending") == 0, "nothing pending"
        )
        assert host["tree"]["escalations_taken"] == 1
        assert host["tree"]["last_order"]["op"] == "restart_group"
