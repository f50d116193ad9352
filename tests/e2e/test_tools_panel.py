"""The dashboard's Tools panel in headless Chromium: a worker serving tools (with
metrics on) reports them in its heartbeats; the panel shows calls, p50 and p99,
the error rate and denials, live. Screenshot in test-artifacts/."""

from __future__ import annotations

from pathlib import Path

import pytest
from playwright.async_api import Browser, expect
from prometheus_client import CollectorRegistry

from actormesh import Mesh, ToolDenied, ToolFailed, Worker, WorkerConfig
from actormesh.observability import WorkerMetrics
from actormesh_supervisor import Service
from tests.actors_supervisor import TOKEN, meshfile, options, wait_until
from tests.actors_tool_obs import Scout
from tests.e2e.conftest import ARTIFACTS

pytestmark = pytest.mark.e2e


async def test_tools_panel_shows_calls_latency_errors_and_denials(
    browser: Browser, nats_url: str, mesh_prefix: str, tmp_path: Path
) -> None:
    ARTIFACTS.mkdir(exist_ok=True)
    mf = meshfile(mesh_prefix, [])
    async with Service(options(nats_url, mesh_prefix, tmp_path, mf, token=TOKEN)) as svc:
        mesh = await Mesh.connect(nats_url, prefix=mesh_prefix)
        worker = Worker(mesh, Scout, WorkerConfig(worker_id="scout-1", heartbeat_interval=0.25))
        metrics = WorkerMetrics(worker, CollectorRegistry())
        await worker.start()
        try:
            page = await browser.new_page(viewport={"width": 1440, "height": 1000})
            await page.goto(svc.url)
            await expect(page.locator("#live")).to_have_text("live", timeout=15_000)
            row = page.locator('#tools-body tr[data-tool="scout.explore"]')
            await expect(row.locator('[data-field="calls"]')).to_have_text("0", timeout=10_000)
            await expect(row.locator('[data-field="p50"]')).to_have_text(
                "\u2013"
            )  # an en dash: no figure yet

            await mesh.tools.grants.grant("ops", "scout.*")
            await wait_until(
                lambda: mesh.tools.grants.allowed_now("ops", "scout.trip") is True, 10.0
            )
            for _ in range(4):
                assert await mesh.tools.call("scout.explore", {"depth": 0}, principal="ops") == 1
            with pytest.raises(ToolFailed):
                await mesh.tools.call("scout.trip", {}, principal="ops")
            for _ in range(2):
                with pytest.raises(ToolDenied):
                    await mesh.tools.call("scout.explore", {"depth": 0}, principal="nobody")

            await expect(row.locator('[data-field="calls"]')).to_have_text("4", timeout=10_000)
            await expect(row.locator('[data-field="denied"]')).to_have_text("2")
            await expect(row.locator('[data-field="errors"]')).to_have_text("0.0%")
            await expect(row.locator('[data-field="p50"]')).to_contain_text("ms")
            await expect(row.locator('[data-field="p99"]')).to_contain_text("ms")
            trip = page.locator('#tools-body tr[data-tool="scout.trip"]')
            await expect(trip.locator('[data-field="calls"]')).to_have_text("1")
            await expect(trip.locator('[data-field="errors"]')).to_have_text("100.0%")
            await expect(trip.locator('[data-field="denied"]')).to_have_text("0")
            await page.locator("#tools-panel").screenshot(
                path=str(ARTIFACTS / "supervisor-dashboard-tools.png")
            )
        finally:
            await worker.drain(grace=5.0)
            await metrics.close()
            await mesh.close()
