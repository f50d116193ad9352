"""`actormesh mcp` as a real process, driven by the official `mcp` client over
streamable HTTP and over stdio: the principal's tools with the registry's
schemas, an allowed call, a denied one, invalid arguments, the caller's trace
continued, a timeout, and 401 without a token."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, Literal, cast

import aiohttp
import httpx2
import msgspec
import pytest
from mcp import Client, StdioServerParameters
from mcp.client.streamable_http import streamable_http_client
from mcp.types import RequestParamsMeta
from mcp_types.version import MODERN_PROTOCOL_VERSIONS

from actormesh import Mesh
from actormesh._meshfile import load
from actormesh.mcp import load_tokens
from actormesh.mcp._gateway import ACTOR_TYPE, Endpoint, EndpointInfo, McpGateway
from actormesh.testing import eventually, running_worker
from tests._net import free_port, listening
from tests.actors_mcp import Probe
from tests.actors_supervisor import ROOT, SupervisorProcess, meshfile
from tests.actors_tools import Vault

pytestmark = pytest.mark.integration

GRANTED = ("probe.trace", "vault.balance", "vault.deposit", "vault.nap")
#: The MCP caller's trace context (W3C), sent in the request's `_meta`.
TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
TRACEPARENT = f"00-{TRACE_ID}-00f067aa0ba902b7-01"
TOKEN = "test-token-7d1f0c5e9b2a4c38a6e1"
#: The server's deadline per call: short, so a nap outlives it.
CALL_TIMEOUT = "1.0"


@asynccontextmanager
async def vault_for_alice(mesh: Mesh) -> AsyncIterator[None]:
    """Vault and Probe workers, and alice granted everything but `vault.boom`."""
    async with running_worker(mesh, Vault), running_worker(mesh, Probe):
        await mesh.tools.grants.grant("alice", *GRANTED)
        await eventually(
            lambda: all(mesh.tools.grants.allowed_now("alice", t) for t in GRANTED),
            what="the worker sees alice's grants",
        )
        yield


@asynccontextmanager
async def http_server(env: dict[str, str], tmp_path: Path) -> AsyncIterator[str]:
    tokens = tmp_path / "tokens.toml"
    tokens.write_text(f'[tokens]\n"{TOKEN}" = "alice"\n')
    port = free_port()
    args = ["--http", "--port", str(port), "--tokens", str(tokens)]
    proc = await asyncio.create_subprocess_exec(
        *(sys.executable, "-m", "actormesh", "mcp", *args, "--call-timeout", CALL_TIMEOUT),
        env=env,
    )
    try:
        await listening(port, proc)
        yield f"http://127.0.0.1:{port}/mcp"
    finally:
        proc.terminate()
        assert await asyncio.wait_for(proc.wait(), 15) == 0, "a clean stop on SIGTERM"


async def _exercise(mesh: Mesh, client: Client) -> None:
    listed = (await client.list_tools()).tools
    assert sorted(t.name for t in listed) == list(GRANTED)
    for tool in listed:
        spec = await mesh.tools.spec(tool.name)
        assert tool.description == spec.description
        assert tool.input_schema == spec.input_schema
        assert tool.output_schema == spec.output_schema

    ok = await client.call_tool("vault.deposit", {"key": "acct-1", "amount": 5})
    assert not ok.is_error
    assert ok.structured_content == {"result": 5}
    assert _text(ok) == "5"

    denied = await client.call_tool("vault.boom", {"key": "acct-1"})
    assert denied.is_error
    assert _text(denied).startswith("tool_denied: ")

    invalid = await client.call_tool("vault.deposit", {"key": "acct-1", "amount": "lots"})
    assert invalid.is_error
    assert _text(invalid).startswith("tool_arguments_invalid: ")

    # The caller's trace continues into the mesh: the handler's call carries it.
    # (RequestParamsMeta is an open TypedDict, PEP 728: mypy does not know extra keys yet.)
    meta = cast("RequestParamsMeta", {"traceparent": TRACEPARENT})
    traced = await client.call_tool("probe.trace", {}, meta=meta)
    assert not traced.is_error
    assert traced.structured_content["result"].split("-")[1] == TRACE_ID
    untraced = await client.call_tool("probe.trace", {})
    assert TRACE_ID not in untraced.structured_content["result"]

    slow = await client.call_tool("vault.nap", {"key": "acct-1", "seconds": 5.0})
    assert slow.is_error
    assert _text(slow).startswith("tool_timeout: ")


def _text(result: Any) -> str:
    (block,) = result.content
    text: str = block.text
    return text


# "legacy": the initialize handshake (hosts on MCP 2025-*); "auto": what the SDK
# negotiates by default (the 2026-07-28 per-request era, where the server has it).
@pytest.mark.parametrize("mode", ["legacy", "auto"])
async def test_streamable_http(
    mesh: Mesh, subprocess_env: dict[str, str], tmp_path: Path, mode: Literal["legacy", "auto"]
) -> None:
    async with vault_for_alice(mesh), http_server(subprocess_env, tmp_path) as url:
        headers = {"Authorization": f"Bearer {TOKEN}"}
        async with (
            httpx2.AsyncClient(headers=headers) as http,
            Client(streamable_http_client(url, http_client=http), mode=mode) as client,
        ):
            modern = client.protocol_version in MODERN_PROTOCOL_VERSIONS
            assert modern == (mode == "auto"), client.protocol_version
            await _exercise(mesh, client)


async def test_http_without_a_valid_token_gets_401(
    mesh: Mesh, subprocess_env: dict[str, str], tmp_path: Path
) -> None:
    body = {"jsonrpc": "2.0", "id": 1, "method": "tools/list", "params": {}}
    accept = {"Accept": "application/json, text/event-stream"}
    async with http_server(subprocess_env, tmp_path) as url, httpx2.AsyncClient() as http:
        for auth in ({}, {"Authorization": "Bearer not-the-token"}, {"Authorization": TOKEN}):
            response = await http.post(url, json=body, headers={**accept, **auth})
            assert response.status_code == 401, auth
            assert response.headers["www-authenticate"].startswith("Bearer")
            assert TOKEN not in response.text


async def test_stdio(mesh: Mesh, subprocess_env: dict[str, str]) -> None:
    params = StdioServerParameters(
        command=sys.executable,
        args=[
            *("-m", "actormesh", "mcp", "--stdio"),
            *("--principal", "alice", "--call-timeout", CALL_TIMEOUT),
        ],
        env=subprocess_env,
    )
    async with vault_for_alice(mesh), Client(params) as client:
        await _exercise(mesh, client)


async def test_supervised_http_heartbeats_answers_and_drains(
    mesh: Mesh, subprocess_env: dict[str, str], tmp_path: Path
) -> None:
    """As a supervisor's `command` child: a worker beside the endpoint heartbeats,
    answers where the endpoint is, and stops cleanly on SIGTERM; `--init-tokens`
    made the tokens file the endpoint then accepts."""
    beats: list[dict[str, Any]] = []

    async def on_beat(msg: Any) -> None:
        beats.append(msgspec.json.decode(msg.data))

    sub = await mesh.nc.subscribe(mesh.subjects.heartbeat_all, cb=on_beat)
    tokens = tmp_path / "made" / "tokens.toml"
    port = free_port()
    proc = await asyncio.create_subprocess_exec(
        *(sys.executable, "-m", "actormesh", "mcp", "--http", "--port", str(port)),
        *("--tokens", str(tokens), "--init-tokens", "alice"),
        *("--supervisor-child", "mcp", "--worker-id", "mcp-1", "--heartbeat-interval", "0.2"),
        env=subprocess_env,
    )
    try:
        await listening(port, proc)
        await eventually(lambda: any(b["worker"] == "mcp-1" for b in beats), what="a heartbeat")
        beat = next(b for b in beats if b["worker"] == "mcp-1")
        assert (beat["actor_type"], beat["supervisor_child"]) == (ACTOR_TYPE, "mcp")
        url = f"http://127.0.0.1:{port}/mcp"
        info = await mesh.ref(McpGateway).ask(Endpoint(), timeout=10)
        assert info == EndpointInfo(url=url)

        assert tokens.stat().st_mode & 0o777 == 0o600
        ((token, principal),) = load_tokens(tokens).items()
        assert principal == "alice"
        headers = {"Authorization": f"Bearer {token}"}
        async with (
            httpx2.AsyncClient(headers=headers) as http,
            Client(streamable_http_client(url, http_client=http)) as client,
        ):
            assert (await client.list_tools()).tools == []  # alice has no grants here
    finally:
        proc.terminate()
        code = await asyncio.wait_for(proc.wait(), 30)
        await sub.unsubscribe()
    assert code == 0
    assert any(b["worker"] == "mcp-1" and b["status"] == "stopped" for b in beats)


async def test_the_mesh_toml_child_under_a_real_supervisor(
    nats_url: str, mesh_prefix: str, tmp_path: Path
) -> None:
    """The repository mesh.toml's `mcp` child (its very command, on a free port and
    a temporary tokens file), run by a real supervisor: running and healthy, 401
    without a token, and restarted after it is killed."""
    (command,) = [c.command for g in load(ROOT / "mesh.toml").groups for c in g.children
                  if c.name == "mcp"]  # fmt: skip
    port = free_port()
    swap = {"8790": str(port), ".actormesh/mcp-tokens.toml": str(tmp_path / "tokens.toml")}
    command = [swap.get(arg, arg) for arg in command]
    group = {"name": "interop", "children": [{"name": "mcp", "command": command}]}
    sup = SupervisorProcess(
        tmp_path, meshfile(mesh_prefix, [group]), nats_url, mesh_prefix, name="sup"
    )
    await sup.start()
    try:
        first = await _mcp_worker(sup)
        url = f"http://127.0.0.1:{port}/mcp"
        async with httpx2.AsyncClient() as http:
            assert (await http.post(url, json={})).status_code == 401
        os.kill(first["pid"], signal.SIGKILL)
        second = await _mcp_worker(sup, not_pid=first["pid"])
        assert second["restarts"] >= 1 or second["id"] != first["id"]
        async with httpx2.AsyncClient() as http:
            assert (await http.post(url, json={})).status_code == 401
    finally:
        assert await sup.terminate() == 0, sup.tail()


async def _mcp_worker(sup: SupervisorProcess, not_pid: int = 0) -> dict[str, Any]:
    """The supervised `mcp` worker once healthy (a new process, if `not_pid`)."""
    for _ in range(600):
        with contextlib.suppress(aiohttp.ClientError):
            for w in (await sup.workers()).values():
                if w["child"] == "mcp" and w["health"] == "ok" and w["pid"] not in (None, not_pid):
                    assert w["supervised"] and w["actor_type"] == ACTOR_TYPE
                    return w
        await asyncio.sleep(0.05)
    raise AssertionError(f"no healthy mcp worker: {sup.tail()}")
