"""Charts, message search and trace links in headless Chromium, against a real
broker, supervisor and worker: the charts draw and move under load, search finds
messages by id and by key (reading, not consuming), trace ids link to the
configured trace UI, and every control still needs a session, the CSRF token
and the same origin. Screenshots go to test-artifacts/."""

from __future__ import annotations

import asyncio
import contextlib
import re
from pathlib import Path

import aiohttp
import pytest
from playwright.async_api import Browser, Page, expect

from actormesh import Mesh, WorkerConfig
from actormesh.lowlevel import Hdr, ensure_mailbox
from actormesh.testing import running_worker
from actormesh_supervisor import Service
from tests.actors_search import Inbox, Note, Poison
from tests.actors_supervisor import TOKEN, meshfile, options
from tests.e2e.conftest import ARTIFACTS

pytestmark = pytest.mark.e2e

TRACE_URL = "http://127.0.0.1:16686/trace/{trace_id}"
TRACE = "0af7651916cd43dd8448eb211c80319c"
TRACEPARENT = f"00-{TRACE}-b7ad6b7169203331-01"


async def _points(page: Page, chart: str) -> int:
    value = await page.locator(f'#charts [data-chart="{chart}"]').get_attribute("data-points")
    return int(value or 0)


async def _search(page: Page, where: str, actor_type: str, by: str, q: str) -> None:
    await page.select_option("#search-where", where)
    await page.select_option("#search-type", actor_type)
    await page.select_option("#search-by", by)
    await page.fill("#search-q", q)
    await page.click("#search-go")


@pytest.mark.timeout(90)
async def test_charts_search_and_trace_links(
    browser: Browser, nats_url: str, mesh_prefix: str, tmp_path: Path
) -> None:
    ARTIFACTS.mkdir(exist_ok=True)
    mf = meshfile(mesh_prefix, [], backend="none", trace_url=TRACE_URL)
    async with Service(options(nats_url, mesh_prefix, tmp_path, mf, token=TOKEN)) as svc:
        mesh = await Mesh.connect(nats_url, prefix=mesh_prefix)
        try:
            await _charts_and_dead_letter(browser, svc, mesh)
            page = await browser.new_page(viewport={"width": 1440, "height": 1000})
            await page.goto(svc.url)
            await _search_by_key_and_id(page, mesh)
            await _controls_need_session_csrf_and_origin(page, svc)
        finally:
            await mesh.close()


async def _charts_and_dead_letter(browser: Browser, svc: Service, mesh: Mesh) -> None:
    await ensure_mailbox(mesh.js, mesh.subjects, Inbox.actor_type, Inbox.mailbox)
    ref = mesh.ref(Inbox.actor_type, "load")

    async def load() -> None:
        i = 0
        while True:
            await ref.tell_many([Note(text=f"l{i}-{j}") for j in range(20)])
            i += 1
            await asyncio.sleep(0.05)

    page = await browser.new_page(viewport={"width": 1440, "height": 1100})
    config = WorkerConfig(heartbeat_interval=0.25)
    async with running_worker(mesh, Inbox, config) as worker:
        loader = asyncio.create_task(load())
        try:
            await page.goto(svc.url)
            await expect(page.locator("#live")).to_have_text("live", timeout=15_000)
            await expect(page.locator("#charts-type")).to_have_value(
                Inbox.actor_type, timeout=15_000
            )
            handled = page.locator('#charts [data-chart="handled"]')
            await expect(handled.locator("canvas")).to_have_count(1, timeout=15_000)
            # Drawn: points with a non-zero rate; moving: the newest second advances.
            await expect(handled).to_have_attribute("data-value", re.compile(r"^[1-9]"),
                                                    timeout=20_000)  # fmt: skip
            first = await handled.get_attribute("data-last")
            await expect(handled).not_to_have_attribute("data-last", first or "", timeout=10_000)
            for chart in ("failures", "depth", "ack_pending", "latency"):
                await expect(page.locator(f'#charts [data-chart="{chart}"] canvas')).to_have_count(
                    1
                )
            spark = page.locator(f'#sparks [data-worker="{worker.id}"]')
            await expect(spark.locator("canvas")).to_have_count(1)
            await expect(spark).to_have_attribute("data-points", re.compile(r"^[1-9]"))
            assert await _points(page, "handled") >= 2
            # A poison message under load: dead-lettered with its trace.
            await mesh.ref(Inbox.actor_type, "user-7").tell(
                Poison(text="bad"), msg_id="poison-7", headers={Hdr.TRACEPARENT: TRACEPARENT}
            )
            await expect(page.locator("#timeline a.trace-link")).to_have_count(1, timeout=15_000)
            link = page.locator("#timeline a.trace-link")
            await expect(link).to_have_attribute("href", TRACE_URL.format(trace_id=TRACE))
            await page.select_option("#charts-window", "60")  # the load fills a minute
            await expect(handled).to_have_attribute("data-points", re.compile(r"^[1-9]"))
            await page.locator("#charts-panel").screenshot(
                path=str(ARTIFACTS / "supervisor-dashboard-charts.png")
            )
        finally:
            loader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await loader
    await page.close()


async def _search_by_key_and_id(page: Page, mesh: Mesh) -> None:
    # The worker is gone: these wait in the mailbox, and searching must leave them there.
    for i in range(4):
        headers = {Hdr.TRACEPARENT: TRACEPARENT} if i == 2 else None
        await mesh.ref(Inbox.actor_type, f"user-{i % 2}").tell(
            Note(text=f"waiting {i}"), msg_id=f"wait-{i}", headers=headers
        )
    stream = mesh.subjects.mailbox_stream(Inbox.actor_type)
    before = (await mesh.js.stream_info(stream)).state.messages

    await expect(page.locator("#search-type option")).not_to_have_count(0, timeout=15_000)
    await _search(page, "mailbox", Inbox.actor_type, "key", "user-0")
    rows = page.locator("#search-body tr")
    await expect(rows).to_have_count(2, timeout=10_000)
    await expect(page.locator("#search-body")).to_contain_text("wait-0")
    await expect(page.locator("#search-body")).to_contain_text("wait-2")
    link = page.locator("#search-body a.trace-link")
    await expect(link).to_have_count(1)
    await expect(link).to_have_attribute("href", TRACE_URL.format(trace_id=TRACE))
    await rows.filter(has_text="wait-2").click()
    await expect(page.locator('#search-detail [data-field="payload"]')).to_contain_text("waiting 2")
    await expect(page.locator('#search-detail [data-field="headers"]')).to_contain_text(
        "Nats-Msg-Id: wait-2"
    )
    await page.locator("#search-panel").screenshot(
        path=str(ARTIFACTS / "supervisor-dashboard-search.png")
    )

    await _search(page, "mailbox", Inbox.actor_type, "id", "wait-3")
    await expect(rows).to_have_count(1)
    await expect(page.locator("#search-body")).to_contain_text("user-1")
    # The dead letter, by the sender's id, in every type's dead letters.
    await _search(page, "dlq", "", "id", "poison-7")
    await expect(rows).to_have_count(1)
    await expect(page.locator("#search-body")).to_contain_text("user-7")
    await rows.first.click()
    await expect(page.locator("#search-detail a.trace-link")).to_have_attribute(
        "href", TRACE_URL.format(trace_id=TRACE)
    )
    # The dead-letter browser links the same trace.
    await page.locator("#dlq-body tr").filter(has_text="ValueError").first.click()
    await expect(page.locator("#dlq-detail a.trace-link")).to_have_attribute(
        "href", TRACE_URL.format(trace_id=TRACE)
    )
    await _search(page, "mailbox", Inbox.actor_type, "seq", "not-a-number")
    await expect(page.locator("#search-note")).to_contain_text("whole number")
    # Only read: every message still waits in the mailbox.
    assert (await mesh.js.stream_info(stream)).state.messages == before


async def _controls_need_session_csrf_and_origin(page: Page, svc: Service) -> None:
    """Every POST route of the dashboard (any helper's) refuses a request without a
    session, with a session but no CSRF token, and with both from another origin."""
    assert svc.dashboard is not None
    posts = sorted(
        {
            r.resource.canonical
            for r in svc.dashboard.app.router.routes()
            if r.method == "POST" and r.resource is not None
        }
    )
    assert "/api/dlq/purge" in posts
    await page.locator("#login-btn").click()
    await page.locator("#token").fill(TOKEN)
    await page.locator("#login-submit").click()
    await expect(page.locator("#logout-btn")).to_be_visible()
    cookies = {c["name"]: c["value"] for c in await page.context.cookies()}
    csrf = await page.evaluate("fetch('/api/session').then(r => r.json()).then(s => s.csrf)")
    origin = svc.url.rstrip("/")
    fill = {"{seq}": "1", "{actor_type}": "searchinbox", "{worker}": "nobody", "{group}": "g",
            "{id}": "x", "{decision}": "approve", "{key}": "k"}  # fmt: skip
    async with aiohttp.ClientSession(cookie_jar=aiohttp.DummyCookieJar()) as http:
        for path in posts:
            if path == "/api/login":
                continue
            url = svc.url.rstrip("/") + re.sub(r"\{[^}]+\}", lambda m: fill.get(m[0], "x"), path)
            cookie = {"Cookie": f"actormesh_session={cookies['actormesh_session']}"}
            cases = [
                ({"Origin": origin}, (401,)),  # no session
                ({"Origin": origin, **cookie}, (403,)),  # no CSRF token
                ({"Origin": "http://evil.example", **cookie, "X-CSRF-Token": csrf}, (403,)),
                ({**cookie, "X-CSRF-Token": csrf}, (403,)),  # no Origin or Referer at all
            ]
            for headers, refused in cases:
                async with http.post(url, headers=headers, json={}) as r:
                    assert r.status in refused, (path, headers.keys(), r.status)
        # Reads need a session (or the token) once the Host is not loopback.
        for path in ("/api/series", "/api/search?where=dlq&by=id&q=x"):
            async with http.get(origin + path, headers={"Host": "evil.example"}) as r:
                assert r.status == 401, path
    # Logged in, the search (a read) still works from the page.
    status = await page.evaluate(
        "fetch('/api/search?where=dlq&by=id&q=poison-7').then(r => r.status)"
    )
    assert status == 200
