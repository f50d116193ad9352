"""The assistant example: an agent actor that calls the counter and echo tools
through grants, run as real worker processes on a real broker, with the grants
mesh.toml sets up at start."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import jsonschema
import pytest

from actormesh import Mesh, ToolDenied, ToolFailed, ToolRejected
from actormesh._meshfile import load
from actormesh._up import apply_grants
from actormesh_assistant import Run, plan

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
WORKERS = {
    "counter": "actormesh_counter:Counter",
    "echo": "actormesh_echo:EchoService",
    "assistant": "actormesh_assistant:Assistant",
}
TOOLS = {
    "assistant.run",
    "assistant.reset",
    "counter.add",
    "counter.read",
    "counter.clear",
    "echo.say",
}


async def eventually(predicate: Callable[[], Any], timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while not await predicate():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached in time")
        await asyncio.sleep(0.05)


class Workers:
    """Worker processes of the example's actor types, on the test's broker."""

    def __init__(self, env: dict[str, str], logs: Path) -> None:
        self.env, self.logs = env, logs
        self.procs: dict[str, subprocess.Popen[bytes]] = {}

    def start(self, name: str) -> None:
        argv = [sys.executable, "-m", "actormesh", "worker", WORKERS[name]]
        with (self.logs / f"{name}.log").open("ab") as log:
            self.procs[name] = subprocess.Popen(
                argv, env=self.env, stdout=subprocess.DEVNULL, stderr=log
            )

    async def kill(self, name: str) -> None:
        proc = self.procs.pop(name)
        proc.kill()
        await asyncio.to_thread(proc.wait, 30)

    async def stop(self) -> None:
        for proc in self.procs.values():
            proc.terminate()
        for proc in self.procs.values():
            await asyncio.to_thread(proc.wait, 30)


@pytest.fixture
async def workers(subprocess_env: dict[str, str], tmp_path: Path) -> AsyncIterator[Workers]:
    w = Workers(subprocess_env, tmp_path)
    try:
        yield w
    finally:
        await w.stop()


@pytest.fixture
async def example(mesh: Mesh, workers: Workers) -> Mesh:
    """The repository mesh.toml's grants, then counter, echo and assistant worker
    processes, once their tools are published."""
    await apply_grants(mesh, load(ROOT / "mesh.toml").grants)
    for name in WORKERS:
        workers.start(name)

    async def published() -> bool:
        return {t.name for t in await mesh.tools.list_tools()} >= TOOLS

    await eventually(published)
    return mesh


async def test_a_granted_principal_runs_the_plan_and_the_counter_moves(example: Mesh) -> None:
    tools = example.tools
    available = {t.name: t for t in await tools.list_available_tools("cli")}
    assert set(available) == {"assistant.run", "assistant.reset", "counter.read"}
    run = available["assistant.run"]
    assert run.input_schema["type"] == "object"
    assert run.input_schema["properties"]["task"]["enum"] == ["count", "read"]
    assert available["assistant.reset"].needs_approval and not run.needs_approval

    args: dict[str, Any] = {"task": "count", "key": "user-42", "times": 3}
    report = await tools.call("assistant.run", args, principal="cli", timeout=20)
    jsonschema.Draft202012Validator(run.output_schema).validate({"result": report})
    assert [s["tool"] for s in report["steps"]] == [c.tool for c in plan(Run(**args))]
    assert [s["result"] for s in report["steps"][:3]] == [1, 2, 3]
    assert report["value"] == 3
    assert report["said"] == "user-42 is at 3"
    assert report["steps"][-1]["result"]["worker"]  # an echo worker answered
    assert await tools.call("counter.read", {"key": "user-42"}, principal="cli") == 3

    report = await tools.call("assistant.run", {"task": "read", "key": "user-42"}, principal="cli")
    assert (report["value"], report["said"]) == (3, "user-42 reads 3")


async def test_a_principal_without_a_grant_is_denied_and_nothing_runs(example: Mesh) -> None:
    tools = example.tools
    with pytest.raises(ToolDenied) as denied:
        await tools.call("assistant.run", {"task": "count", "key": "k"}, principal="mallory")
    assert denied.value.principal == "mallory" and denied.value.tool == "assistant.run"
    # The shell may call the assistant, not the counter's tools behind it.
    with pytest.raises(ToolDenied):
        await tools.call("counter.add", {"key": "k", "by": 5}, principal="cli")
    assert await tools.call("counter.read", {"key": "k"}, principal="cli") == 0


async def test_the_assistant_without_a_grant_for_counter_fails_the_plan(example: Mesh) -> None:
    tools = example.tools
    await tools.grants.revoke("assistant", "counter.add")
    failed: list[ToolFailed] = []

    async def plan_fails() -> bool:
        # The counter worker's live copy of the grants follows the revoke.
        try:
            await tools.call("assistant.run", {"task": "count", "key": "k2"}, principal="cli")
        except ToolFailed as exc:
            failed.append(exc)
            return True
        return False

    await eventually(plan_fails)
    remote = failed[-1].remote
    assert failed[-1].tool == "assistant.run"
    assert remote.code == "plan_failed" and remote.type == "PlanFailed"
    assert "step 1 (counter.add)" in remote.remote_message
    assert "[tool_denied]" in remote.remote_message
    assert remote.retryable is False

    # Reading is still granted: the assistant's other steps run.
    before = await tools.call("counter.read", {"key": "k2"}, principal="cli")
    report = await tools.call("assistant.run", {"task": "read", "key": "k2"}, principal="cli")
    assert report["value"] == before
    await tools.grants.grant("assistant", "counter.add")

    async def plan_runs() -> bool:
        try:
            await tools.call("assistant.run", {"task": "count", "key": "k3"}, principal="cli")
        except ToolFailed:
            return False
        return True

    await eventually(plan_runs)


async def test_grants_from_mesh_toml_are_added_idempotently(mesh: Mesh, tmp_path: Path) -> None:
    f = tmp_path / "mesh.toml"
    f.write_text(
        '[[grants]]\nprincipal = "bot"\ntools = ["counter.read"]\napproval = ["counter.clear"]\n'
    )
    await mesh.tools.grants.grant("bot", "echo.say")  # granted at run time: kept
    for _ in range(2):
        await apply_grants(mesh, load(f).grants)
    grant = await mesh.tools.grants.get("bot")
    assert grant.tools == ["echo.say", "counter.read", "counter.clear"]
    assert grant.approval == ["counter.clear"]


async def test_a_reset_waits_for_an_operator(example: Mesh) -> None:
    """`assistant.reset` is declared `needs_approval`: the call waits, before any
    step runs, until an operator approves (then the plan runs and clears the
    counter) or rejects (`ToolRejected`, and nothing ran)."""
    tools = example.tools
    await tools.call("assistant.run", {"task": "count", "key": "u7", "times": 2}, principal="cli")

    async def decide(decision: str, value: int) -> Any:
        call = asyncio.ensure_future(tools.call("assistant.reset", {"key": "u7"}, principal="cli"))
        pending: list[Any] = []

        async def waiting() -> bool:
            pending[:] = [a for a in await tools.approvals.pending() if a.tool == "assistant.reset"]
            return bool(pending)

        await eventually(waiting)
        (approval,) = pending
        assert approval.principal == "cli" and '"key":"u7"' in approval.arguments
        # Nothing ran yet.
        assert await tools.call("counter.read", {"key": "u7"}, principal="cli") == value
        assert not call.done()
        if decision == "approve":
            await tools.approvals.approve(approval.id, by="test")
        else:
            await tools.approvals.reject(approval.id, by="test", reason="not today")
        return await call

    report = await decide("approve", 2)
    assert [s["tool"] for s in report["steps"]] == ["counter.read", "counter.clear", "echo.say"]
    assert (report["task"], report["value"]) == ("reset", 2)
    assert report["said"] == "u7 was reset from 2"
    assert await tools.call("counter.read", {"key": "u7"}, principal="cli") == 0

    await tools.call("assistant.run", {"task": "count", "key": "u7"}, principal="cli")
    with pytest.raises(ToolRejected, match="not today"):
        await decide("reject", 1)
    assert await tools.call("counter.read", {"key": "u7"}, principal="cli") == 1


async def test_a_pending_reset_survives_a_restart_of_the_assistant(
    example: Mesh, workers: Workers
) -> None:
    """The call waits in the assistant's mailbox, not in its process: kill the
    assistant while the call is pending, start another, approve, and the caller,
    still waiting, gets the result."""
    tools = example.tools
    await tools.call("assistant.run", {"task": "count", "key": "u9"}, principal="cli")
    call = asyncio.ensure_future(
        tools.call("assistant.reset", {"key": "u9"}, principal="cli", timeout=60)
    )
    pending: list[Any] = []

    async def waiting() -> bool:
        pending[:] = [a for a in await tools.approvals.pending() if a.tool == "assistant.reset"]
        return bool(pending)

    await eventually(waiting)
    await workers.kill("assistant")
    workers.start("assistant")
    await tools.approvals.approve(pending[0].id, by="test")
    report = await call
    assert (report["task"], report["value"]) == ("reset", 1)
    assert await tools.call("counter.read", {"key": "u9"}, principal="cli") == 0
