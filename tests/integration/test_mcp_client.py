"""An external MCP server's tools on the bus (`actormesh mcp-client`), with real processes:
a server written with the `mcp` SDK (`tests/mcp_calc_server.py`) run over stdio by the
client worker, which a real supervisor runs as the child `[[mcp_servers]]` declares in
the mesh file."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import socket
import sys
from pathlib import Path
from typing import Any

import msgspec
import pytest

from actormesh import Mesh, ToolDenied, ToolFailed, ToolRejected, ToolTimeout
from actormesh._meshfile import load
from actormesh._tools import Approval
from actormesh._wire import Heartbeat, ToolStats
from actormesh.testing import eventually
from actormesh_supervisor import Supervisor
from tests.actors_supervisor import EventLog, options, wait_until

pytestmark = pytest.mark.integration

SERVER = Path(__file__).resolve().parents[1] / "mcp_calc_server.py"


def _mesh_toml(prefix: str) -> str:
    """A mesh file declaring the server (`load` makes it a supervised child)."""
    command = json.dumps([sys.executable, str(SERVER)])
    return f"""
[mesh]
prefix = "{prefix}"

[supervisor]
heartbeat_interval = 0.25
heartbeat_misses = 3
start_timeout = 20.0
dashboard_port = 0

[[mcp_servers]]
name = "calc"
command = {command}
"""


async def _server_pid(mesh: Mesh) -> int:
    result = await mesh.tools.call("mcp.calc.pid", {}, principal="alice", timeout=10)
    return int(result["result"])


async def test_mcp_server_tools_are_granted_called_and_restarted(
    mesh: Mesh, nats_url: str, mesh_prefix: str, tmp_path: Path
) -> None:
    path = tmp_path / "mesh.toml"
    path.write_text(_mesh_toml(mesh_prefix))
    mf = load(path)
    assert [c.name for _, c in mf.children()] == ["mcp-calc"]
    sup = Supervisor(options(nats_url, mesh_prefix, tmp_path, mf))
    async with EventLog.listen(nats_url, mesh_prefix) as events, sup:
        names: list[str] = []

        async def listed() -> bool:
            names[:] = [s.name for s in await mesh.tools.list_tools()]
            return {"mcp.calc.add", "mcp.calc.pid", "mcp.calc.fail"} <= set(names)

        for _ in range(300):
            if await listed():
                break
            await asyncio.sleep(0.05)
        assert {"mcp.calc.add", "mcp.calc.pid", "mcp.calc.fail"} <= set(names)
        spec = await mesh.tools.spec("mcp.calc.add")
        assert (spec.actor_type, spec.handler, spec.keyed) == ("mcp-calc", "call_add", False)
        assert spec.input_schema["properties"].keys() == {"a", "b"}
        assert spec.description == "Add two integers."

        # Default deny; each MCP tool is granted on its own.
        with pytest.raises(ToolDenied):
            await mesh.tools.call("mcp.calc.add", {"a": 2, "b": 3}, principal="alice", timeout=10)
        await mesh.tools.grants.grant("alice", "mcp.calc.add", "mcp.calc.pid", "mcp.calc.fail")
        assert await mesh.tools.call(
            "mcp.calc.add", {"a": 2, "b": 3}, principal="alice", timeout=10
        ) == {"result": 5}
        with pytest.raises(ToolDenied):
            await mesh.tools.call("mcp.calc.add", {"a": 1, "b": 1}, principal="bob", timeout=10)
        # The server's tool error comes back as the call's failure.
        with pytest.raises(ToolFailed) as failed:
            await mesh.tools.call("mcp.calc.fail", {"reason": "no"}, principal="alice", timeout=10)
        assert "mcp_tool_error" in str(failed.value)
        # A grant that needs an operator: the call waits in the approvals bucket, as
        # any tool's does, until it is decided through the approvals API.
        await mesh.tools.grants.grant("carol", "mcp.calc.add", approval=True)
        await _approved_and_rejected(mesh)
        # The worker's per-tool figures count the MCP tools like any tool's.
        stats = await _tool_stats(nats_url, mesh_prefix, "mcp-calc", "mcp.calc.add")
        assert stats["mcp.calc.add"].calls == 2  # alice's, and carol's approved one
        assert stats["mcp.calc.add"].denied == 2  # alice before her grant, and bob
        assert stats["mcp.calc.fail"].errors == 1
        assert sum(stats["mcp.calc.add"].buckets) >= 2

        # The server dies mid-session: the client worker exits, the supervisor
        # restarts it, and the tools answer again from a new server process.
        first = await _server_pid(mesh)
        os.kill(first, signal.SIGKILL)
        await events.wait("restarted", child="mcp-calc", timeout=30)
        second = None
        for _ in range(300):
            # A call the dying worker took fails; one sent meanwhile waits in the mailbox.
            with contextlib.suppress(ToolFailed, ToolTimeout):
                second = await _server_pid(mesh)
                break
            await asyncio.sleep(0.05)
        assert second is not None and second != first
        assert await mesh.tools.call(
            "mcp.calc.add", {"a": 20, "b": 22}, principal="alice", timeout=10
        ) == {"result": 42}
        await wait_until(lambda: bool(events.of("failed", child="mcp-calc")), 10, what="failed")


async def _approved_and_rejected(mesh: Mesh) -> None:
    approvals = mesh.tools.approvals

    async def pending_one() -> Approval:
        for _ in range(500):
            waiting = [a for a in await approvals.pending() if a.tool == "mcp.calc.add"]
            if waiting:
                return waiting[0]
            await asyncio.sleep(0.05)
        raise AssertionError("no pending approval for mcp.calc.add")

    call = asyncio.create_task(
        mesh.tools.call("mcp.calc.add", {"a": 1, "b": 1}, principal="carol", timeout=30)
    )
    record = await pending_one()
    assert (record.principal, record.actor_type) == ("carol", "mcp-calc")
    assert not call.done()  # not run before an operator says yes
    await approvals.approve(record.id, by="ops")
    assert await asyncio.wait_for(call, 30) == {"result": 2}

    call = asyncio.create_task(
        mesh.tools.call("mcp.calc.add", {"a": 5, "b": 5}, principal="carol", timeout=30)
    )
    record = await pending_one()
    await approvals.reject(record.id, by="ops", reason="not today")
    with pytest.raises(ToolRejected):
        await asyncio.wait_for(call, 30)


async def _tool_stats(url: str, prefix: str, actor_type: str, tool: str) -> dict[str, ToolStats]:
    """The per-tool figures of `actor_type`'s latest heartbeat that carries them."""
    decoder = msgspec.json.Decoder(Heartbeat)
    latest: dict[str, ToolStats] = {}

    async def on_hb(msg: Any) -> None:
        hb = decoder.decode(msg.data)
        if hb.actor_type == actor_type and hb.tools:
            latest.update({t.tool: t for t in hb.tools})

    async with await Mesh.connect(url, prefix=prefix) as watcher:
        sub = await watcher.nc.subscribe(watcher.subjects.heartbeat_all, cb=on_hb)
        try:
            # Two heartbeats at least: the figures of calls answered before the first.
            await eventually(lambda: tool in latest, what="a heartbeat with the tool figures")
            latest.clear()
            await eventually(lambda: tool in latest, what="a later heartbeat")
        finally:
            await sub.unsubscribe()
    return latest


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def test_url_server_over_streamable_http_and_exit_when_it_dies(
    mesh: Mesh, subprocess_env: dict[str, str], python: str
) -> None:
    port = _free_port()
    server = await asyncio.create_subprocess_exec(
        python, str(SERVER), "--http", str(port), env=subprocess_env,
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL,
    )  # fmt: skip
    client: asyncio.subprocess.Process | None = None
    try:
        for _ in range(200):  # the server listening
            with contextlib.suppress(OSError):
                _, writer = await asyncio.open_connection("127.0.0.1", port)
                writer.close()
                await writer.wait_closed()
                break
            await asyncio.sleep(0.05)
        client = await asyncio.create_subprocess_exec(
            python, "-m", "actormesh", "mcp-client", "--url",
            f"http://127.0.0.1:{port}/mcp", "web", env=subprocess_env,
        )  # fmt: skip
        for _ in range(300):
            if "mcp.web.add" in [s.name for s in await mesh.tools.list_tools()]:
                break
            await asyncio.sleep(0.05)
        await mesh.tools.grants.grant("alice", "mcp.web.*")
        assert await mesh.tools.call(
            "mcp.web.add", {"a": 1, "b": 2}, principal="alice", timeout=10
        ) == {"result": 3}
        server.kill()
        await server.wait()
        # The session is gone: the worker exits non-zero, for its supervisor to restart.
        assert await asyncio.wait_for(client.wait(), 30) == 1
    finally:
        for proc in (client, server):
            if proc is not None and proc.returncode is None:
                proc.kill()
                await proc.wait()
