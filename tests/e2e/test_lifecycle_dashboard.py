"""The dashboard's lifecycle panel in headless Chromium: pause and resume an actor
type and stop one instance with the buttons, each needing the session and its CSRF
token (a POST from the page without the token is refused), and the lifecycle of
workers, types and instances on show. Screenshots go to test-artifacts/."""

from __future__ import annotations

from pathlib import Path

import pytest
from playwright.async_api import Browser, expect

from actormesh import Mesh
from actormesh_supervisor import Service
from tests.actors_state import Add, Ledger, Total
from tests.actors_supervisor import TOKEN, meshfile, options
from tests.e2e.conftest import ARTIFACTS

pytestmark = pytest.mark.e2e


@pytest.mark.timeout(90)
async def test_pause_resume_and_stop_instance_buttons(
    browser: Browser, nats_url: str, mesh_prefix: str, tmp_path: Path
) -> None:
    ARTIFACTS.mkdir(exist_ok=True)
    child = {"name": "ledger", "actor": "tests.actors_state:Ledger", "shutdown_grace": 3.0}
    mf = meshfile(mesh_prefix, [{"name": "g", "children": [child]}], heartbeat_interval=0.5)
    async with Service(options(nats_url, mesh_prefix, tmp_path, mf, token=TOKEN)) as svc:
        mesh = await Mesh.connect(nats_url, prefix=mesh_prefix)
        try:
            ref = mesh.ref(Ledger, "alice")
            await ref.tell(Add(by=2))
            assert await ref.ask(Total(), timeout=15.0) == 2

            page = await browser.new_page(viewport={"width": 1440, "height": 1100})
            await page.goto(svc.url)
            await expect(page.locator("#live")).to_have_text("live", timeout=15_000)
            row = page.locator('#lifecycle-body tr[data-type="ledger"]')
            state = row.locator('[data-field="state"]')
            await expect(state).to_have_text("running", timeout=15_000)
            await expect(row.locator(".lc-worker")).to_contain_text("running")

            # Not logged in: the button asks to log in and nothing is paused.
            await row.locator('[data-action="pause"]').click()
            await expect(page.locator("#login")).to_be_visible()
            await page.locator("#login-cancel").click()
            await page.locator("#login-btn").click()
            await page.locator("#token").fill(TOKEN)
            await page.locator("#login-submit").click()
            await expect(page.locator("#logout-btn")).to_be_visible()

            # Logged in, but a POST without the CSRF token (same origin, with the
            # session cookie) is refused; with it (what the buttons send) it works.
            refused = await page.evaluate(
                """async () => (await fetch('/api/types/ledger/pause',
                     {method: 'POST', credentials: 'same-origin'})).status"""
            )
            assert refused == 403
            info = await mesh.js.consumer_info(mesh.subjects.mailbox_stream("ledger"), "ledger")
            assert not info.paused

            await row.locator('[data-action="pause"]').click()
            await expect(state).to_have_text("paused", timeout=10_000)
            await expect(row.locator(".lc-worker")).to_contain_text("paused", timeout=10_000)
            for _ in range(5):
                await ref.tell(Add(by=1))
            await expect(row.locator('[data-field="waiting"]')).to_have_text("5", timeout=10_000)
            await page.locator("#lifecycle-panel").screenshot(
                path=str(ARTIFACTS / "lifecycle-paused.png")
            )
            info = await mesh.js.consumer_info(mesh.subjects.mailbox_stream("ledger"), "ledger")
            assert info.paused and info.num_pending == 5

            await row.locator('[data-action="resume"]').click()
            await expect(state).to_have_text("running", timeout=10_000)
            assert await ref.ask(Total(), timeout=15.0) == 7

            # Stop one instance; the worker's instance list shows it passivated.
            await row.locator('[data-field="key"]').fill("alice")
            await row.locator('[data-action="stop-instance"]').click()
            await expect(page.locator("#toasts")).to_contain_text("stop ledger/alice: done")
            await row.locator(".lc-worker").click()
            box = page.locator("#lifecycle-instances")
            await expect(box.locator('li[data-key="alice"]')).to_contain_text("passivated")
            await page.locator("#lifecycle-panel").screenshot(
                path=str(ARTIFACTS / "lifecycle-instances.png")
            )
            # ...and it comes back with its state on the next message.
            assert await ref.ask(Total(), timeout=15.0) == 7
            await row.locator(".lc-worker").click()
            await expect(box.locator('li[data-key="alice"]')).to_contain_text("active")
        finally:
            await mesh.close()
