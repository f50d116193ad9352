"""The dashboard in headless Chromium: live workers over SSE, login, a restart
that works after login and is refused without it, and a refused cross-origin POST.
Screenshots go to test-artifacts/."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path

import pytest
from aiohttp import web
from playwright.async_api import Browser, Page, expect

from actormesh import Mesh, WorkerConfig
from actormesh.lowlevel import Hdr
from actormesh.testing import running_worker
from actormesh_supervisor import Service
from tests.actors_split import Add, Tally
from tests.actors_supervisor import (
    TOKEN,
    EventLog,
    child,
    meshfile,
    options,
    wait_until,
)
from tests.e2e.conftest import ARTIFACTS

pytestmark = pytest.mark.e2e


async def _evil_site(target: str) -> tuple[web.AppRunner, str]:
    """Another origin whose page auto-submits a form to the dashboard's restart URL."""
    page = (
        "<!doctype html><title>evil</title>"
        f'<form id="f" method="post" action="{target}"></form>'
        "<script>document.getElementById('f').submit()</script>"
    )

    async def index(_: web.Request) -> web.Response:
        return web.Response(text=page, content_type="text/html")

    app = web.Application()
    app.router.add_get("/", index)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    return runner, f"http://127.0.0.1:{port}/"


async def _row_pid(page: Page, worker: str) -> str:
    return await page.locator(f'tr[data-worker="{worker}"] [data-field="pid"]').inner_text()


async def test_dashboard_live_login_restart_and_csrf(
    browser: Browser, nats_url: str, mesh_prefix: str, tmp_path: Path
) -> None:
    ARTIFACTS.mkdir(exist_ok=True)
    ledger = tmp_path / "ledger.txt"
    groups = [
        {"name": "api", "children": [child("ledger", ledger=ledger, replicas=2)]},
        {"name": "pipeline", "strategy": "rest_for_one",
         "children": [child("ingest", ledger=ledger), child("index", ledger=ledger)]},
    ]  # fmt: skip
    mf = meshfile(mesh_prefix, groups, heartbeat_interval=0.5)
    async with (
        Service(options(nats_url, mesh_prefix, tmp_path, mf, token=TOKEN)) as svc,
        EventLog.listen(nats_url, mesh_prefix) as events,
    ):
        sup = svc.supervisor
        mesh = await Mesh.connect(nats_url, prefix=mesh_prefix)
        evil, evil_url = await _evil_site(svc.url + "api/workers/ledger-1/restart")
        try:
            # Some traffic and a dead letter, so the page has something to show.
            ref = mesh.ref("ledger", None)
            for i in range(60):
                await ref.tell(json.dumps({"type": "Work", "id": f"x{i}", "ms": 20}).encode())
            await mesh.publish(
                mesh.subjects.dlq("ledger"), b'{"type":"Work","id":"poison"}',
                headers={Hdr.ORIGINAL_SUBJECT: mesh.subjects.mailbox("ledger"),
                         Hdr.ERROR_CODE: "handler_error", Hdr.ERROR_TYPE: "ValueError",
                         Hdr.ERROR_MESSAGE: "bad input: id must be numeric", Hdr.DELIVERIES: "5",
                         Hdr.WORKER: "ledger-2", Hdr.DEAD_AT: f"{time.time():.3f}"},
            )  # fmt: skip

            page = await browser.new_page(viewport={"width": 1440, "height": 1000})
            await page.goto(svc.url)
            await expect(page.locator("#live")).to_have_text("live", timeout=15_000)
            row = page.locator('tr[data-worker="ledger-1"]')
            await expect(row.locator(".pill")).to_have_text("ok", timeout=15_000)
            await expect(page.locator('tr[data-worker="index-1"] .pill')).to_have_text("ok")
            # Live: the heartbeat age keeps changing without a reload.
            hb = row.locator('[data-field="hb"]')
            first = await hb.inner_text()
            await expect(hb).not_to_have_text(first, timeout=5_000)
            await expect(page.locator("#dlq-body")).to_contain_text("bad input", timeout=10_000)
            await expect(page.locator("#timeline")).to_contain_text("started")

            # Without login: the button asks to log in, and the server refuses anyway.
            old_pid = await _row_pid(page, "ledger-1")
            await row.locator('[data-action="restart"]').click()
            await expect(page.locator("#login")).to_be_visible()
            await page.screenshot(path=str(ARTIFACTS / "supervisor-dashboard-login.png"))
            await page.locator("#login-cancel").click()
            status = await page.evaluate(
                "fetch('/api/workers/ledger-1/restart', {method: 'POST'}).then(r => r.status)"
            )
            assert status == 401

            # Log in through the dialog.
            await page.locator("#login-btn").click()
            await page.locator("#token").fill("not-the-token-at-all")
            await page.locator("#login-submit").click()
            await expect(page.locator("#login-error")).to_be_visible()
            await page.locator("#token").fill(TOKEN)
            await page.locator("#login-submit").click()
            await expect(page.locator("#logout-btn")).to_be_visible()

            # A cross-origin form POST, with the session cookie in the browser: refused.
            evil_page = await browser.new_page()
            async with evil_page.expect_response(lambda r: "/restart" in r.url) as resp_info:
                await evil_page.goto(evil_url)
            assert (await resp_info.value).status in (401, 403)
            await evil_page.close()
            await asyncio.sleep(0.5)
            assert events.of("restarted") == []

            # Logged in: the restart goes through and the page follows it live.
            await row.locator('[data-action="restart"]').click()
            await events.wait("restarted", worker="ledger-1", timeout=20)
            await expect(row.locator('[data-field="pid"]')).not_to_have_text(
                old_pid, timeout=15_000
            )
            await expect(row.locator(".pill")).to_have_text("ok", timeout=15_000)
            await expect(page.locator("#timeline")).to_contain_text("restarted", timeout=10_000)
            await wait_until(lambda: sup.slots["ledger-1"].state == "running", 10, what="up")

            await page.locator("#dlq-body tr").first.click()
            await expect(page.locator('#dlq-detail [data-field="payload"]')).to_contain_text(
                "poison"
            )
            await page.evaluate("window.scrollTo(0, 0)")
            await page.screenshot(path=str(ARTIFACTS / "supervisor-dashboard.png"), full_page=True)
        finally:
            await mesh.close()
            await evil.cleanup()


async def test_dashboard_shows_instances_and_warns_of_a_split(
    browser: Browser, nats_url: str, mesh_prefix: str, tmp_path: Path
) -> None:
    ARTIFACTS.mkdir(exist_ok=True)
    tally = {"name": "tally", "actor": "tests.actors_split:Tally", "shutdown_grace": 2.0}
    groups = [{"name": "keyed", "children": [tally]}]
    mf = meshfile(mesh_prefix, groups)
    async with Service(options(nats_url, mesh_prefix, tmp_path, mf, token=TOKEN)) as svc:
        mesh = await Mesh.connect(nats_url, prefix=mesh_prefix)
        try:
            page = await browser.new_page(viewport={"width": 1440, "height": 900})
            await page.goto(svc.url)
            row = page.locator('tr[data-worker="tally-1"]')
            await expect(row.locator(".pill")).to_have_text("ok", timeout=15_000)
            await expect(page.locator("#workers thead")).to_contain_text("Instances")
            for key in ("k1", "k2"):
                assert await mesh.ref("splittally", key).ask(Add(), reply_type=int) == 1
            # Live instances / passivated / parked, from the worker's heartbeats.
            await expect(row.locator('[data-field="keys"]')).to_have_text(
                "2 / 0 / 0", timeout=10_000
            )
            await expect(page.locator("#banner")).to_be_hidden()

            # A second worker of the keyed type, started by hand: the page warns.
            config = WorkerConfig(worker_id="tally-by-hand", heartbeat_interval=0.25)
            async with running_worker(mesh, Tally, config):
                banner = page.locator("#banner")
                await expect(banner).to_contain_text("split", timeout=15_000)
                await expect(banner).to_contain_text("tally-1, tally-by-hand")
                await expect(banner).to_contain_text("partitions=2")
                await expect(row.locator('[data-field="sub"]')).to_contain_text(
                    "split with tally-by-hand"
                )
                await expect(page.locator("#timeline")).to_contain_text("split detected")
                await page.screenshot(
                    path=str(ARTIFACTS / "supervisor-dashboard-split.png"), full_page=True
                )
            await expect(page.locator("#banner")).to_be_hidden(timeout=15_000)
        finally:
            await mesh.close()
