"""MCP bearer tokens from the mesh file's `[mcp]` section (`actormesh mcp --http
--config mesh.toml`): a tokens file it names and tokens written in it, each mapping
to its principal, with the official `mcp` client over real streamable HTTP; a token
not configured gets 401, and no token is ever printed by the process."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

import httpx2
import pytest
from mcp import Client
from mcp.client.streamable_http import streamable_http_client

from actormesh import ConfigError, Mesh
from actormesh._meshfile import load
from actormesh.testing import eventually, running_worker
from tests._net import free_port, listening
from tests.actors_tools import Vault

pytestmark = pytest.mark.integration

FILE_TOKEN = "file-token-3b8e1d2f6a9c4e71b0d5"
INLINE_TOKEN = "inline-token-9c4a7e2b1f0d3a86c5e2"


def _write_mesh_file(tmp_path: Path) -> Path:
    tokens = tmp_path / "mcp-tokens.toml"
    tokens.write_text(f'[tokens]\n"{FILE_TOKEN}" = "alice"\n')
    path = tmp_path / "mesh.toml"
    path.write_text(f'[mcp]\ntokens_file = "{tokens}"\n\n[mcp.tokens]\n"{INLINE_TOKEN}" = "bob"\n')
    return path


def test_the_mcp_section_is_loaded_and_never_shown(tmp_path: Path) -> None:
    mf = load(_write_mesh_file(tmp_path))
    assert mf.mcp.tokens == {INLINE_TOKEN: "bob"}
    assert mf.mcp.tokens_file.endswith("mcp-tokens.toml")
    for shown in (repr(mf), repr(mf.mcp), str(mf)):
        assert INLINE_TOKEN not in shown
    bad = tmp_path / "bad.toml"
    bad.write_text('[mcp.tokens]\n"t" = ""\n')
    with pytest.raises(ConfigError) as refused:
        load(bad)
    assert "non-empty principal" in str(refused.value)


async def _tools_of(url: str, token: str) -> list[str]:
    async with (
        httpx2.AsyncClient(headers={"Authorization": f"Bearer {token}"}) as http,
        Client(streamable_http_client(url, http_client=http)) as client,
    ):
        return sorted(t.name for t in (await client.list_tools()).tools)


async def test_tokens_from_the_mesh_file_map_to_their_principals(
    mesh: Mesh, subprocess_env: dict[str, str], tmp_path: Path
) -> None:
    path = _write_mesh_file(tmp_path)
    port = free_port()
    proc = await asyncio.create_subprocess_exec(
        *(sys.executable, "-m", "actormesh", "mcp", "--http", "--port", str(port)),
        *("--config", str(path)),
        env=subprocess_env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        async with running_worker(mesh, Vault):
            await mesh.tools.grants.grant("alice", "vault.deposit")
            await mesh.tools.grants.grant("bob", "vault.balance")
            await eventually(
                lambda: bool(mesh.tools.grants.allowed_now("bob", "vault.balance")),
                what="bob's grant seen",
            )
            await listening(port, proc)
            url = f"http://127.0.0.1:{port}/mcp"
            assert await _tools_of(url, FILE_TOKEN) == ["vault.deposit"]
            assert await _tools_of(url, INLINE_TOKEN) == ["vault.balance"]
            body = {"jsonrpc": "2.0", "id": 1, "method": "tools/list", "params": {}}
            accept = {"Accept": "application/json, text/event-stream"}
            async with httpx2.AsyncClient() as http:
                response = await http.post(
                    url, json=body, headers={**accept, "Authorization": "Bearer not-configured"}
                )
            assert response.status_code == 401
    finally:
        proc.terminate()
        out, err = await asyncio.wait_for(proc.communicate(), 15)
    assert proc.returncode == 0
    for token in (FILE_TOKEN, INLINE_TOKEN):
        assert token.encode() not in out + err
