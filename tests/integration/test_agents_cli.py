"""`actormesh agent-host`, `agent-bridge` and `agents` as real processes, against the
official Agent Protocol SDKs."""

from __future__ import annotations

import asyncio
import contextlib
import signal
import sys
from collections.abc import AsyncIterator

import nats
import pytest
from synadia_ai.agents import Agents, DiscoverFilter, ResponseChunk

from actormesh import Mesh
from actormesh.testing import running_worker
from tests.actors_agents import Oracle
from tests.integration.test_agents import _official_agent

pytestmark = pytest.mark.integration


@contextlib.asynccontextmanager
async def _process(env: dict[str, str], *args: str) -> AsyncIterator[asyncio.StreamReader]:
    """`actormesh ARGS` running; yields its stdout; SIGTERM on exit, which must end it
    with status 0."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "actormesh", *args, env=env, stdout=asyncio.subprocess.PIPE
    )
    if proc.stdout is None:
        raise RuntimeError("no stdout")
    try:
        yield proc.stdout
    finally:
        if proc.returncode is None:
            proc.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(proc.wait(), 30) == 0


async def test_agent_host_process_answers_the_official_client(
    mesh: Mesh, nats_url: str, subprocess_env: dict[str, str]
) -> None:
    await mesh.tools.grants.grant("shouter", "oracle.shout")
    nc = await nats.connect(nats_url)
    agents = Agents(nc=nc)
    host = ("agent-host", "--tool", "oracle.shout", "--principal", "shouter", "--name", "loud")
    try:
        async with running_worker(mesh, Oracle), _process(subprocess_env, *host) as out:
            line = (await asyncio.wait_for(out.readline(), 30)).decode()
            assert "agents.prompt.loud.actormesh.default" in line
            found = await agents.discover(filter=DiscoverFilter(agent="loud"))
            assert len(found) == 1
            texts = [
                c.text
                async for c in found[0].prompt("from a process", timeout=10.0)
                if isinstance(c, ResponseChunk)
            ]
            assert "".join(texts) == "FROM A PROCESS!"
    finally:
        await agents.close()
        await nc.close()


async def test_agent_bridge_process_serves_official_agents_as_tools(
    mesh: Mesh, nats_url: str, subprocess_env: dict[str, str]
) -> None:
    async with _official_agent(nats_url, "echoer"):
        listing = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "actormesh",
            "agents",
            env=subprocess_env,
            stdout=asyncio.subprocess.PIPE,
        )
        stdout, _ = await listing.communicate()
        assert listing.returncode == 0
        assert stdout.decode().split("\t")[:4] == [
            "echoer",
            "tests",
            "main",
            "agents.prompt.echoer.tests.main",
        ]
        bridge = ("agent-bridge", "--agent", "echoer")
        async with _process(subprocess_env, *bridge) as out:
            line = (await asyncio.wait_for(out.readline(), 30)).decode()
            assert line.startswith("agent-echoer.prompt -> agents.prompt.echoer.tests.main")
            await mesh.tools.grants.grant("me", "agent-echoer.prompt")
            got = await mesh.tools.call("agent-echoer.prompt", {"prompt": "x"}, principal="me")
            assert got == "echo: x"
