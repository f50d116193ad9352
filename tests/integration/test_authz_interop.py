"""The interop children under the broker permissions `actormesh authz` generates,
on a real nats-server, each process connected as its own user: an external MCP
server's client worker (`mcp-calc`), the MCP server (`actormesh mcp`, calling as
its token principal), an agent host and the agent bridge. The official `mcp`
client calls a mesh tool and an external MCP tool through the MCP server, a
client calls the bridged agent (bridge -> host -> tool), a user without a grant
is refused at the broker, and no process hits a permissions violation."""

from __future__ import annotations

import asyncio
import contextlib
import os
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import httpx2
import pytest
from mcp import Client
from mcp.client.streamable_http import streamable_http_client

from actormesh import Mesh
from actormesh.testing import NatsServer
from tests._net import free_port
from tests.integration.test_authz import (
    ATTEMPTS,
    call_when_ready,
    generated_broker,
    refusals,
    refused_publishes,
    url,
    worker_as,
)
from tests.integration.test_compose import spawn

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
CALC = ROOT / "tests" / "mcp_calc_server.py"
TOKEN = "interop-token-6f2a9c1e0b7d4a53"
USERS = ("supervisor", "vault", "oracle", "calc", "mcp", "shouter", "bridge", "bob", "alice")

MESH_TOML = f"""
[mesh]
prefix = "mesh"

[[groups]]
name = "tools"

  [[groups.children]]
  name = "vault"
  actor = "tests.actors_tools:Vault"

  [[groups.children]]
  name = "oracle"
  actor = "tests.actors_agents:Oracle"

  [[groups.children]]
  name = "mcp"
  command = ["{{python}}", "-m", "actormesh", "mcp", "--http", "--config", "{{config}}"]

[[mcp_servers]]
name = "calc"
command = ["{sys.executable}", "{CALC}"]

[[agents]]
name = "shouter"
tool = "oracle.shout"
principal = "helper"

[agent_bridge]
agents = ["shouter"]

[[grants]]
principal = "alice"
tools = ["vault.*", "mcp.calc.*"]

[[grants]]
principal = "helper"
tools = ["oracle.shout"]

[[grants]]
principal = "bob"
tools = ["agent-shouter.prompt"]
"""

USERS_TOML = """
[server]
http_port = 0
store_dir = "{store}"

[[users]]
name = "supervisor"
role = "supervisor"

[[users]]
name = "vault"
role = "worker"
child = "vault"

[[users]]
name = "oracle"
role = "worker"
child = "oracle"

[[users]]
name = "calc"
role = "worker"
child = "mcp-calc"

[[users]]
name = "mcp"
role = "worker"
child = "mcp"
principals = ["alice"]

[[users]]
name = "shouter"
role = "worker"
child = "agent-host-shouter"

[[users]]
name = "bridge"
role = "worker"
child = "agent-bridge"

[[users]]
name = "bob"
role = "client"

[[users]]
name = "alice"
role = "client"
"""


@contextlib.asynccontextmanager
async def process_as(
    server: NatsServer, user: str, argv: list[str], env: dict[str, str], tmp: Path
) -> AsyncIterator[subprocess.Popen[bytes]]:
    """`python -m actormesh ARGV` connected as `user`; its log must show no
    permission refused."""
    log_path = tmp / f"{user}.log"
    log = log_path.open("wb")
    proc = spawn(
        [sys.executable, "-m", "actormesh", *argv], dict(env, NATS_URL=url(server, user)), log
    )
    try:
        yield proc
    finally:
        proc.terminate()
        try:
            await asyncio.to_thread(proc.wait, 30)
        except subprocess.TimeoutExpired:
            proc.kill()
            await asyncio.to_thread(proc.wait, 30)
        log.close()
    text = log_path.read_text()
    assert not refusals(text.lower()), text[-3000:]


@pytest.mark.timeout(120)
async def test_interop_children_under_generated_permissions(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for user in USERS:
        monkeypatch.setenv(f"{user.upper()}_PASSWORD", f"{user}-pw")
    env = dict(os.environ, PYTHONPATH=str(ROOT), ACTORMESH_PREFIX="mesh")
    env.pop("NATS_URL", None)
    tokens = tmp_path / "tokens.toml"
    tokens.write_text(f'[tokens]\n"{TOKEN}" = "alice"\n')
    port = free_port()
    async with contextlib.AsyncExitStack() as stack:
        server = await stack.enter_async_context(
            generated_broker(tmp_path, env, MESH_TOML, USERS_TOML)
        )
        sup = await Mesh.connect(url(server, "supervisor"), prefix="mesh")
        stack.push_async_callback(sup.close)
        # The mesh file's grants, as the supervisor applies them at start.
        await sup.tools.grants.grant("alice", "vault.*", "mcp.calc.*")
        await sup.tools.grants.grant("helper", "oracle.shout")
        await sup.tools.grants.grant("bob", "agent-shouter.prompt")
        for user, target in (("vault", "tests.actors_tools:Vault"),
                             ("oracle", "tests.actors_agents:Oracle")):  # fmt: skip
            await stack.enter_async_context(worker_as(server, user, target, env, tmp_path))
        for user, argv in (
            ("calc", ["mcp-client", "calc", "--", sys.executable, str(CALC)]),
            ("shouter", ["agent-host", "--name", "shouter", "--tool", "oracle.shout",
                         "--principal", "helper", "--supervisor-child", "agent-host-shouter"]),
            ("mcp", ["mcp", "--http", "--port", str(port), "--tokens", str(tokens),
                     "--supervisor-child", "mcp"]),
        ):  # fmt: skip
            await stack.enter_async_context(process_as(server, user, argv, env, tmp_path))
        bob = await Mesh.connect(url(server, "bob"), prefix="mesh")
        stack.push_async_callback(bob.close)
        alice = await Mesh.connect(url(server, "alice"), prefix="mesh")
        stack.push_async_callback(alice.close)
        # Both tools served before the MCP client lists them.
        await call_when_ready(alice, "mcp.calc.add", {"a": 1, "b": 1}, "alice")
        await call_when_ready(alice, "vault.balance", {"key": "k"}, "alice")

        # The MCP server, as user mcp, calls for its token's principal.
        headers = {"Authorization": f"Bearer {TOKEN}"}
        http = await stack.enter_async_context(httpx2.AsyncClient(headers=headers))
        client = await stack.enter_async_context(
            Client(streamable_http_client(f"http://127.0.0.1:{port}/mcp", http_client=http))
        )
        # The registry is read afresh on each list; asked again while the server's
        # own view of it settles (a bound wait: a list that stays short fails).
        wanted: set[str] = {"vault.deposit", "mcp.calc.add"}
        names: set[str] = set()
        for _ in range(60):
            names = {t.name for t in (await client.list_tools()).tools}
            if wanted <= names:
                break
            await asyncio.sleep(0.5)
        assert wanted <= names, names
        added = await client.call_tool("mcp.calc.add", {"a": 2, "b": 3})
        # (the calc server's own structured content is {"result": 5})
        assert added.structured_content == {"result": {"result": 5}}, added
        deposited = await client.call_tool("vault.deposit", {"key": "k", "amount": 4})
        assert deposited.structured_content == {"result": 4}, deposited

        # The bridge (user bridge) serves the hosted agent (user shouter) as a tool.
        await stack.enter_async_context(
            process_as(server, "bridge", ["agent-bridge", "--agent", "shouter",
                       "--rediscover", "0.5", "--supervisor-child", "agent-bridge"],
                       env, tmp_path)
        )  # fmt: skip
        shouted = await call_when_ready(bob, "agent-shouter.prompt", {"prompt": "hi"}, "bob")
        assert shouted == "HI!"

        # Bob has no grant on the external server's tools: its mailbox is closed to him.
        acks, violations = await refused_publishes(server, "bob", "mesh.mbox.mcp-calc._")
        assert (acks, violations) == (0, ATTEMPTS)
