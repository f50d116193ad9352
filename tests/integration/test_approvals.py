"""Approvals on a real broker: a call to a tool that needs approval waits for an
operator; approved it runs, rejected it fails with `ToolRejected`, and past its
deadline it is never run. Pending approvals survive a restart of the worker
process, and waiting past `max_deliver` does not dead-letter the call."""

from __future__ import annotations

import asyncio
import signal
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import msgspec
import pytest

from actormesh import Mesh, ToolRejected, ToolTimeout
from actormesh._tools import Approval, ApprovalError
from actormesh.lowlevel import DeadLetters
from actormesh.testing import running_worker
from tests.actors_approvals import Safe, ledger

pytestmark = pytest.mark.integration


@pytest.fixture(autouse=True)
def _reset() -> None:
    Safe.ran.clear()


async def eventually(predicate: Callable[[], Awaitable[bool]], timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while not await predicate():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached in time")
        await asyncio.sleep(0.05)


async def one_pending(mesh: Mesh, tool: str = "safe.open") -> Approval:
    found: list[Approval] = []

    async def seen() -> bool:
        found[:] = [a for a in await mesh.tools.approvals.pending() if a.tool == tool]
        return len(found) == 1

    await eventually(seen)
    return found[0]


async def deliveries(mesh: Mesh) -> int:
    """Deliveries the safe's consumer made so far (redeliveries included)."""
    subjects = mesh.subjects
    info = await mesh.js.consumer_info(subjects.mailbox_stream("safe"), subjects.consumer("safe"))
    return int(info.delivered.consumer_seq or 0)


async def test_a_call_waits_then_runs_once_approved(mesh: Mesh) -> None:
    tools = mesh.tools
    async with running_worker(mesh, Safe):
        await tools.grants.grant("ops", "safe.*")
        call = asyncio.ensure_future(
            tools.call("safe.open", {"door": "front"}, principal="ops", timeout=30)
        )
        pending = await one_pending(mesh)
        assert (pending.principal, pending.actor_type, pending.state) == ("ops", "safe", "pending")
        assert '"door":"front"' in pending.arguments
        assert pending.deadline is not None and pending.deadline > time.time()
        # Waiting outlasts max_deliver (2) without being dead-lettered.
        await eventually(lambda: _more_than(mesh, 4))
        assert Safe.ran == [] and not call.done()
        decided = await tools.approvals.approve(pending.id, by="operator-1")
        assert decided.state == "approved" and decided.decided_by == "operator-1"
        assert await call == "opened front"
        assert Safe.ran == ["front"]
        assert await tools.approvals.pending() == []
        with pytest.raises(ApprovalError):  # decided once, for good
            await tools.approvals.reject(pending.id, by="operator-2")


async def _more_than(mesh: Mesh, n: int) -> bool:
    return await deliveries(mesh) > n


async def test_a_rejected_call_fails_and_never_runs(mesh: Mesh) -> None:
    tools = mesh.tools
    async with running_worker(mesh, Safe):
        await tools.grants.grant("ops", "safe.*")
        call = asyncio.ensure_future(
            tools.call("safe.open", {"door": "vault"}, principal="ops", timeout=30)
        )
        pending = await one_pending(mesh)
        await tools.approvals.reject(pending.id, by="operator-1", reason="not today")
        with pytest.raises(ToolRejected) as rejected:
            await call
        assert rejected.value.tool == "safe.open"
        assert "not today" in rejected.value.message
        assert Safe.ran == []
        assert [a.state for a in await tools.approvals.list()] == ["rejected"]


async def test_the_deadline_applies_while_pending(mesh: Mesh) -> None:
    tools = mesh.tools
    async with running_worker(mesh, Safe):
        await tools.grants.grant("ops", "safe.*")
        call = asyncio.ensure_future(
            tools.call("safe.open", {"door": "side"}, principal="ops", timeout=2.0)
        )
        pending = await one_pending(mesh)
        with pytest.raises(ToolTimeout):
            await call
        # Past its deadline the approval is expired: it cannot be approved any more,
        # and the call is dead-lettered as any expired ask, never run.
        assert [a.id for a in await tools.approvals.list(state="expired")] == [pending.id]
        with pytest.raises(ApprovalError, match="expired"):
            await tools.approvals.approve(pending.id, by="late-operator")
        dead = DeadLetters(mesh)

        async def dead_lettered() -> bool:
            return [d.error_code for d in await dead.list("safe")] == ["deadline_exceeded"]

        await eventually(dead_lettered)  # settled: it will never come back to run
        assert Safe.ran == []


async def test_a_grant_can_require_approval(mesh: Mesh) -> None:
    tools = mesh.tools
    async with running_worker(mesh, Safe):
        await tools.grants.grant("ops", "safe.peek")
        assert await tools.call("safe.peek", {"door": "a"}, principal="ops") == "peeked a"
        await tools.grants.grant("intern", "safe.peek", approval=True)
        call = asyncio.ensure_future(
            tools.call("safe.peek", {"door": "b"}, principal="intern", timeout=30)
        )
        pending = await one_pending(mesh, "safe.peek")
        assert pending.principal == "intern" and Safe.ran == ["a"]
        await tools.approvals.approve(pending.id, by="operator-1")
        assert await call == "peeked b"


def _worker(env: dict[str, str]) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "actormesh", "worker", "tests.actors_approvals:Safe"], env=env
    )


async def test_a_pending_approval_survives_a_restart_of_the_worker_process(
    mesh: Mesh, subprocess_env: dict[str, str], tmp_path: Path
) -> None:
    tools = mesh.tools
    ran = tmp_path / "ran.txt"
    env = {**subprocess_env, "SAFE_LEDGER": str(ran)}
    await tools.grants.grant("ops", "safe.*")
    proc = _worker(env)
    try:
        await eventually(lambda: _published(mesh), timeout=30)
        call = asyncio.ensure_future(
            tools.call("safe.open", {"door": "back"}, principal="ops", timeout=60)
        )
        pending = await one_pending(mesh)
        proc.send_signal(signal.SIGKILL)
        await asyncio.to_thread(proc.wait, 10)
        proc = _worker(env)
        # The new worker finds the same pending record (no second one) and keeps waiting.
        await eventually(lambda: _more_than(mesh, 4), timeout=30)
        assert [a.id for a in await tools.approvals.pending()] == [pending.id]
        assert ledger(ran) == []
        await tools.approvals.approve(pending.id, by="operator-1")
        assert await call == "opened back"
        assert ledger(ran) == ["back"]
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            await asyncio.to_thread(proc.wait, 15)
        except subprocess.TimeoutExpired:
            proc.kill()
            await asyncio.to_thread(proc.wait, 5)


async def _published(mesh: Mesh) -> bool:
    names = {t.name for t in await mesh.tools.list_tools()}
    if "safe.open" not in names:
        return False
    return bool(await mesh.tools.grants.allowed("ops", "safe.open"))


async def test_a_stale_record_never_approves_another_call(mesh: Mesh) -> None:
    """A record left under the id the next message gets (a mailbox stream deleted and
    recreated reuses its sequences) does not let that message run."""
    tools = mesh.tools
    approvals = tools.approvals
    kv = await approvals.kv()
    stale = Approval(
        id="safe.1", tool="safe.open", principal="ops", actor_type="safe", key="_",
        arguments="{}", deadline=None, created=1.0, state="approved", digest="old",
    )  # fmt: skip
    await kv.put(stale.id, msgspec.json.encode(stale))
    async with running_worker(mesh, Safe):
        await tools.grants.grant("ops", "safe.*")
        call = asyncio.ensure_future(
            tools.call("safe.open", {"door": "new"}, principal="ops", timeout=30)
        )
        pending = await one_pending(mesh)
        assert pending.id == "safe.1" and pending.digest != "old"
        assert Safe.ran == [] and not call.done()
        await approvals.approve(pending.id, by="operator-1")
        assert await call == "opened new"
