"""The operator commands run in this process (`actormesh._cli.main`, each in a thread
of its own with its own event loop) against a worker served in the test's loop: what
an operator sees, and what the mesh did. The same commands also run as real
processes in test_cli.py, test_lifecycle.py and the README test; here the
coverage measurement sees them too."""

from __future__ import annotations

import asyncio
import json

import pytest

from actormesh import Mesh
from actormesh._cli import main
from actormesh.testing import eventually, running_worker
from tests.actors_state import Ledger, Total

pytestmark = pytest.mark.integration


@pytest.fixture(autouse=True)
def _keep_logging(monkeypatch: pytest.MonkeyPatch) -> None:
    """`main` sets up the process's logging (the root logger's handlers): the test
    process's is pytest's, and stays so."""
    monkeypatch.setattr("actormesh._cli.configure_logging", lambda *a, **k: None)


async def cli(capsys: pytest.CaptureFixture[str], url: str, prefix: str, *args: str) -> str:
    """Run `actormesh --nats-url URL --prefix P ARGS...`; its stdout (exit 0 asserted)."""
    capsys.readouterr()
    code = await asyncio.to_thread(main, ["--nats-url", url, "--prefix", prefix, *args])
    out, err = capsys.readouterr()
    assert code == 0, (args, out, err)
    return out


@pytest.mark.timeout(60)
async def test_pause_tell_resume_stop_instance_from_the_cli(
    mesh: Mesh, nats_url: str, mesh_prefix: str, capsys: pytest.CaptureFixture[str]
) -> None:
    async with running_worker(mesh, Ledger) as worker:
        await cli(capsys, nats_url, mesh_prefix, "pause", "ledger")
        assert "paused" in await cli(capsys, nats_url, mesh_prefix, "lifecycle", "ledger")
        await cli(capsys, nats_url, mesh_prefix, "tell", "ledger", "k", '{"type":"Add","by":2}')
        await asyncio.sleep(0.5)
        assert worker.handled == 0  # paused: the tell waits in the mailbox
        status = json.loads(
            await cli(capsys, nats_url, mesh_prefix, "lifecycle", "ledger", "--json")
        )
        assert status, status
        await cli(capsys, nats_url, mesh_prefix, "resume", "ledger")
        await eventually(lambda: worker.handled == 1, timeout=15)
        out = await cli(capsys, nats_url, mesh_prefix, "ask", "ledger", "k", '{"type":"Total"}')
        assert out.strip() == "2"
        assert "k\tactive" in await cli(capsys, nats_url, mesh_prefix, "instances", worker.id)
        out = await cli(capsys, nats_url, mesh_prefix, "stop-instance", "ledger", "k")
        assert "passivated" in out, out
        assert "k" not in worker._handling.instances
        # It comes back with its durable state on the next message.
        assert await mesh.ref(Ledger, "k").ask(Total(), timeout=10) == 2


@pytest.mark.timeout(60)
async def test_grants_from_the_cli(
    mesh: Mesh, nats_url: str, mesh_prefix: str, capsys: pytest.CaptureFixture[str]
) -> None:
    await cli(capsys, nats_url, mesh_prefix, "grant", "ops", "ledger.*", "vault.read")
    assert "ops" in await cli(capsys, nats_url, mesh_prefix, "grants")
    assert await mesh.tools.grants.allowed("ops", "ledger.add", fresh=True)
    await cli(capsys, nats_url, mesh_prefix, "revoke", "ops", "ledger.*")
    assert not await mesh.tools.grants.allowed("ops", "ledger.add", fresh=True)
    assert await mesh.tools.grants.allowed("ops", "vault.read", fresh=True)
    await cli(capsys, nats_url, mesh_prefix, "revoke", "ops")
    assert not await mesh.tools.grants.allowed("ops", "vault.read", fresh=True)
    await cli(capsys, nats_url, mesh_prefix, "tools")
