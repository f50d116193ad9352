"""The root supervisor's dashboard in headless Chromium shows every host's tree:
two host supervisors (in this process, their workers real processes) under one
root, each host with its group and its live worker. A screenshot goes to
test-artifacts/."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from playwright.async_api import Browser, expect

from actormesh_supervisor import Service
from tests.actors_supervisor import TOKEN, child, meshfile, options
from tests.e2e.conftest import ARTIFACTS

pytestmark = pytest.mark.e2e


def _service(url: str, prefix: str, tmp: Path, name: str, **section: Any) -> Service:
    groups = section.pop("groups", [])
    mf = meshfile(prefix, groups, name=name, heartbeat_interval=0.5, **section)
    return Service(options(url, prefix, tmp / name, mf, token=TOKEN))


async def test_root_dashboard_shows_both_hosts_trees(
    browser: Browser, nats_url: str, mesh_prefix: str, tmp_path: Path
) -> None:
    ARTIFACTS.mkdir(exist_ok=True)
    ledger = tmp_path / "ledger.txt"
    root = _service(nats_url, mesh_prefix, tmp_path, "root", role="root")
    a = _service(nats_url, mesh_prefix, tmp_path, "sup-a", role="host", host="a",
                 groups=[{"name": "api", "children": [child("api", ledger=ledger)]}])  # fmt: skip
    b = _service(nats_url, mesh_prefix, tmp_path, "sup-b", role="host", host="b",
                 groups=[{"name": "batch", "strategy": "one_for_all",
                          "children": [child("batch", ledger=ledger, replicas=2)]}])  # fmt: skip
    async with root, a, b:
        page = await browser.new_page(viewport={"width": 1440, "height": 1100})
        await page.goto(root.url)
        await expect(page.locator("#hosts-panel")).to_be_visible(timeout=15_000)
        for host in ("a", "b"):
            await expect(page.locator(f'tr.host-row[data-host="{host}"] .pill')).to_have_text(
                "running", timeout=15_000
            )
        await expect(page.locator('tr.tree-group[data-host="a"][data-group="api"]')).to_be_visible()
        await expect(
            page.locator('tr.tree-group[data-host="b"][data-group="batch"]')
        ).to_contain_text("one for all")
        for host, worker in (("a", "api-1"), ("b", "batch-1"), ("b", "batch-2")):
            cell = page.locator(f'tr.tree-worker[data-host="{host}"][data-worker="{worker}"] .pill')
            await expect(cell).to_have_text("ok", timeout=20_000)
        await expect(page.locator("#hosts-meta")).to_contain_text("one for one")
        await page.screenshot(path=str(ARTIFACTS / "supervisor-tree-root.png"), full_page=True)
        # A host supervisor's own dashboard has no hosts panel: the tree is the root's.
        host_page = await browser.new_page()
        await host_page.goto(a.url)
        await expect(host_page.locator('tr[data-worker="api-1"] .pill')).to_have_text(
            "ok", timeout=15_000
        )
        await expect(host_page.locator("#hosts-panel")).to_be_hidden()
