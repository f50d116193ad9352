"""The approvals inbox in headless Chromium, against a real supervisor process that
runs a real worker process: an operator approves one call (it runs), rejects
another (its caller gets `ToolRejected`), and a third stays pending across a
restart of the worker and then of the supervisor, and runs once approved.
Screenshots go to test-artifacts/."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from pathlib import Path

import pytest
from playwright.async_api import Browser, Locator, Page, expect

from actormesh import Mesh, ToolRejected
from tests.actors_approvals import ledger
from tests.actors_supervisor import ROOT, TOKEN, meshfile, toml_text, wait_until, worker_env
from tests.e2e.conftest import ARTIFACTS

pytestmark = pytest.mark.e2e


async def _supervisor(config: Path, nats_url: str, runtime: Path) -> asyncio.subprocess.Process:
    env = worker_env(ACTORMESH_DASHBOARD_TOKEN=TOKEN)
    env.pop("ACTORMESH_DASHBOARD_TOKEN_FILE", None)
    return await asyncio.create_subprocess_exec(
        sys.executable, "-m", "actormesh_supervisor", "--config", str(config),
        "--nats-url", nats_url, "--runtime-dir", str(runtime),
        env=env, cwd=ROOT, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL,
    )  # fmt: skip


async def _stop(proc: asyncio.subprocess.Process) -> None:
    if proc.returncode is not None:
        return
    proc.send_signal(signal.SIGTERM)
    try:
        async with asyncio.timeout(30):
            await proc.wait()
    except TimeoutError:
        proc.kill()
        await proc.wait()


async def _open(page: Page, url_file: Path) -> None:
    """The dashboard of the supervisor now running, logged in."""
    await wait_until(url_file.exists, 30, what="the dashboard")
    url = await asyncio.to_thread(url_file.read_text)
    await page.goto(url.strip())
    await expect(page.locator("#live")).to_have_text("live", timeout=20_000)
    await page.locator("#login-btn").click()
    await page.locator("#token").fill(TOKEN)
    await page.locator("#login-submit").click()
    await expect(page.locator("#logout-btn")).to_be_visible()


def _row(page: Page, door: str) -> Locator:
    return page.locator("#approvals-body tr").filter(has_text=f'"door":"{door}"')


async def test_approve_reject_and_one_pending_across_restarts(
    browser: Browser, nats_url: str, mesh_prefix: str, tmp_path: Path
) -> None:
    ARTIFACTS.mkdir(exist_ok=True)
    ran = tmp_path / "ran.txt"
    safe = {"name": "safe", "actor": "tests.actors_approvals:Safe", "shutdown_grace": 2.0,
            "env": {"SAFE_LEDGER": str(ran)}}  # fmt: skip
    config = tmp_path / "mesh.toml"
    config.write_text(toml_text(meshfile(mesh_prefix, [{"name": "tools", "children": [safe]}])))
    runtime = tmp_path / "rt"
    url_file = runtime / f"dashboard-{mesh_prefix}-root.url"
    sup = await _supervisor(config, nats_url, runtime)
    mesh = await Mesh.connect(nats_url, prefix=mesh_prefix)
    calls: list[asyncio.Future[object]] = []
    try:
        tools = mesh.tools
        await tools.grants.grant("ops", "safe.*")

        async def published() -> bool:
            return "safe.open" in {t.name for t in await tools.list_tools()}

        for _ in range(300):
            if await published():
                break
            await asyncio.sleep(0.1)
        assert await published(), "the worker never published its tools"
        page = await browser.new_page(viewport={"width": 1440, "height": 1000})
        await _open(page, url_file)
        pids = page.locator('tr[data-worker="safe-1"] [data-field="pid"]')
        await expect(page.locator('tr[data-worker="safe-1"] .pill')).to_have_text(
            "ok", timeout=20_000
        )

        for door in ("approve-me", "reject-me", "keep-me"):
            calls.append(
                asyncio.ensure_future(
                    tools.call("safe.open", {"door": door}, principal="ops", timeout=180)
                )
            )
        approve, reject, keep = calls
        for door in ("approve-me", "reject-me", "keep-me"):
            row = _row(page, door)
            await expect(row.locator('[data-field="state"]')).to_have_text(
                "pending", timeout=20_000
            )
            await expect(row).to_contain_text("ops")
        await expect(page.locator("#approvals-count")).to_have_text("3 pending")
        await page.locator("#approvals-panel").screenshot(
            path=str(ARTIFACTS / "supervisor-approvals.png")
        )
        assert ledger(ran) == []

        await _row(page, "approve-me").locator('[data-action="approve"]').click()
        assert await asyncio.wait_for(approve, 30) == "opened approve-me"
        await _row(page, "reject-me").locator('[data-action="reject"]').click()
        with pytest.raises(ToolRejected):
            await asyncio.wait_for(reject, 30)
        await expect(page.locator("#approvals-body tr")).to_have_count(1, timeout=10_000)
        assert ledger(ran) == ["approve-me"]

        # The worker dies (SIGKILL) and its supervisor starts another: still pending.
        old_pid = await pids.inner_text()
        os.kill(int(old_pid), signal.SIGKILL)
        await expect(pids).not_to_have_text(old_pid, timeout=30_000)
        await expect(page.locator('tr[data-worker="safe-1"] .pill')).to_have_text(
            "ok", timeout=20_000
        )
        # Then the supervisor process itself restarts (draining its worker first).
        await _stop(sup)
        assert not keep.done()
        sup = await _supervisor(config, nats_url, runtime)
        await _open(page, url_file)  # a new process: a new port, a new session
        await expect(pids).not_to_have_text(old_pid, timeout=30_000)
        row = _row(page, "keep-me")
        await expect(row.locator('[data-field="state"]')).to_have_text("pending", timeout=20_000)
        assert not keep.done() and ledger(ran) == ["approve-me"]

        await row.locator('[data-action="approve"]').click()
        assert await asyncio.wait_for(keep, 30) == "opened keep-me"
        assert ledger(ran) == ["approve-me", "keep-me"]
        await page.locator("#approvals-state").select_option("all")
        await expect(page.locator("#approvals-body tr")).to_have_count(3, timeout=10_000)
        await expect(_row(page, "reject-me").locator('[data-field="state"]')).to_have_text(
            "rejected"
        )
        await page.locator("#approvals-panel").screenshot(
            path=str(ARTIFACTS / "supervisor-approvals-decided.png")
        )
    finally:
        for call in calls:
            call.cancel()
        await mesh.close()
        await _stop(sup)
