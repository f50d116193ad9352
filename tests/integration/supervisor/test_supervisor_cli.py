"""`python -m actormesh_supervisor`: the token it generates, and a clean SIGTERM."""

from __future__ import annotations

import asyncio
import signal
import stat
import sys
from pathlib import Path

import aiohttp
import pytest

from tests.actors_supervisor import ROOT, meshfile, toml_text, wait_until, worker_env

pytestmark = pytest.mark.integration


async def test_generates_a_private_token_serves_and_stops_on_sigterm(
    nats_url: str, mesh_prefix: str, tmp_path: Path
) -> None:
    config = tmp_path / "mesh.toml"
    config.write_text(toml_text(meshfile(mesh_prefix, [])))
    runtime = tmp_path / "rt"
    env = worker_env()
    env.pop("ACTORMESH_DASHBOARD_TOKEN", None)
    env.pop("ACTORMESH_DASHBOARD_TOKEN_FILE", None)
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "actormesh_supervisor", "--config", str(config),
        "--nats-url", nats_url, "--runtime-dir", str(runtime),
        env=env, cwd=ROOT, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.DEVNULL,
    )  # fmt: skip
    try:
        url_file = runtime / f"dashboard-{mesh_prefix}-root.url"
        await wait_until(url_file.exists, 30, what="the dashboard")
        token_file = runtime / "dashboard-token"
        token = token_file.read_text().strip()
        assert len(token) >= 32
        assert stat.S_IMODE(token_file.stat().st_mode) == 0o600
        url = url_file.read_text().strip()
        async with aiohttp.ClientSession() as http:
            # The dashboard comes up before the NATS connection: 503 until then.
            statuses: list[int] = []

            async def healthy() -> bool:
                async with http.get(url + "healthz") as r:
                    statuses.append(r.status)
                    return r.status == 200

            for _ in range(200):
                if await healthy():
                    break
                await asyncio.sleep(0.1)
            assert statuses[-1] == 200
            assert set(statuses) <= {200, 503}
            async with http.post(url + "api/groups/x/restart",
                                 headers={"Authorization": f"Bearer {token}"}) as r:  # fmt: skip
                assert r.status == 404  # authorised; there is no such group
        proc.send_signal(signal.SIGTERM)
        async with asyncio.timeout(20):
            out, _ = await proc.communicate()
        assert proc.returncode == 0
        text = out.decode()
        assert str(token_file) in text
        assert token not in text, "the token itself is never printed"
        assert not url_file.exists()
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()


async def test_bad_config_exits_1_with_a_clear_message(tmp_path: Path) -> None:
    config = tmp_path / "mesh.toml"
    config.write_text('[supervisor]\nbackend = "kubernetes"\n')
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "actormesh_supervisor", "--config", str(config), "--no-dashboard",
        env=worker_env(), stderr=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.DEVNULL,
    )  # fmt: skip
    _, err = await proc.communicate()
    assert proc.returncode == 1
    assert b"backend must be one of process, docker, none" in err
