"""Agent hosts and the agent bridge declared in a mesh file (`[[agents]]`,
`[agent_bridge]`) run as supervised children, under a real supervisor: the
official `synadia-ai-agents` client prompts the hosted agent, the bridge serves it
back as a tool, and a host process killed with SIGKILL is restarted."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
from pathlib import Path
from typing import Any

import msgspec
import nats
import pytest
from synadia_ai.agents import Agents, DiscoverFilter, ResponseChunk

from actormesh import Mesh, ToolFailed, ToolTimeout
from actormesh._meshfile import load
from actormesh._wire import Heartbeat
from actormesh.testing import running_worker
from actormesh_supervisor import Supervisor
from tests.actors_agents import Oracle
from tests.actors_supervisor import EventLog, options

pytestmark = pytest.mark.integration


def _mesh_toml(prefix: str) -> str:
    return f"""
[mesh]
prefix = "{prefix}"

[supervisor]
heartbeat_interval = 0.25
heartbeat_misses = 3
start_timeout = 20.0
dashboard_port = 0

[[agents]]
name = "shouter"
tool = "oracle.shout"
principal = "shouter"

[agent_bridge]
agents = ["shouter"]
rediscover = 0.5
"""


async def _host_pid(url: str, prefix: str) -> int:
    """The pid of the agent host process, from its worker's heartbeat."""
    decoder = msgspec.json.Decoder(Heartbeat)
    found: asyncio.Future[int] = asyncio.get_running_loop().create_future()

    async def on_hb(msg: Any) -> None:
        hb = decoder.decode(msg.data)
        if hb.actor_type == "agent_host-shouter" and not found.done():
            found.set_result(hb.pid)

    async with await Mesh.connect(url, prefix=prefix) as watcher:
        sub = await watcher.nc.subscribe(watcher.subjects.heartbeat_all, cb=on_hb)
        try:
            return await asyncio.wait_for(found, 20)
        finally:
            await sub.unsubscribe()


async def _bridged_call(mesh: Mesh, text: str) -> Any:
    for _ in range(400):
        with contextlib.suppress(ToolFailed, ToolTimeout, LookupError):
            return await mesh.tools.call(
                "agent-shouter.prompt", {"prompt": text}, principal="alice", timeout=5
            )
        await asyncio.sleep(0.05)
    raise AssertionError("agent-shouter.prompt never answered")


@pytest.mark.timeout(120)
async def test_agents_in_the_mesh_file_are_supervised_children(
    mesh: Mesh, nats_url: str, mesh_prefix: str, tmp_path: Path
) -> None:
    path = tmp_path / "mesh.toml"
    path.write_text(_mesh_toml(mesh_prefix))
    mf = load(path)
    assert [(g.name, c.name) for g, c in mf.children()] == [
        ("agents", "agent-host-shouter"),
        ("agents", "agent-bridge"),
    ]
    await mesh.tools.grants.grant("shouter", "oracle.shout")
    await mesh.tools.grants.grant("alice", "agent-shouter.prompt")
    nc = await nats.connect(nats_url)
    sup = Supervisor(options(nats_url, mesh_prefix, tmp_path, mf))
    try:
        async with (
            running_worker(mesh, Oracle),
            EventLog.listen(nats_url, mesh_prefix) as events,
            sup,
        ):
            await events.wait("started", child="agent-host-shouter", timeout=30)
            # The official caller finds the supervised host and prompts it.
            agents = Agents(nc=nc)
            found = await agents.discover(filter=DiscoverFilter(agent="shouter"))
            assert len(found) == 1
            chunks = [c async for c in found[0].prompt("hello", timeout=10.0)]
            assert "".join(c.text for c in chunks if isinstance(c, ResponseChunk)) == "HELLO!"
            # The supervised bridge serves the agent back as a tool.
            assert await _bridged_call(mesh, "again") == "AGAIN!"

            # The host dies: the supervisor restarts it, and it answers again.
            first = await _host_pid(nats_url, mesh_prefix)
            os.kill(first, signal.SIGKILL)
            await events.wait("restarted", child="agent-host-shouter", timeout=30)
            second = await _host_pid(nats_url, mesh_prefix)
            for _ in range(200):
                if second != first:
                    break
                await asyncio.sleep(0.05)
                second = await _host_pid(nats_url, mesh_prefix)
            assert second != first
            assert await _bridged_call(mesh, "back") == "BACK!"
    finally:
        await nc.close()
