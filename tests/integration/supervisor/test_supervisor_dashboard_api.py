"""The dashboard's HTTP API and its auth rules, against a real supervisor."""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import pytest_asyncio
from yarl import URL

from actormesh import Mesh
from actormesh.lowlevel import Hdr
from actormesh_supervisor import Service
from tests.actors_supervisor import (
    TOKEN,
    EventLog,
    child,
    meshfile,
    options,
    read_ledger,
    wait_until,
)

pytestmark = pytest.mark.integration


@pytest_asyncio.fixture
async def service(nats_url: str, mesh_prefix: str, tmp_path: Path) -> AsyncIterator[Service]:
    ledger = tmp_path / "ledger.txt"
    group = {"name": "g", "children": [child("ledger", ledger=ledger)]}
    mf = meshfile(mesh_prefix, [group])
    async with Service(options(nats_url, mesh_prefix, tmp_path, mf, token=TOKEN)) as svc:
        yield svc


def _origin(svc: Service) -> str:
    return svc.url.rstrip("/")


async def test_reads_health_and_metrics(service: Service) -> None:
    url = service.url
    async with aiohttp.ClientSession() as http:
        async with http.get(url + "healthz") as r:
            assert r.status == 200
            assert (await r.json())["status"] == "ok"
        # Bound to loopback: reads are open...
        async with http.get(url + "api/state") as r:
            assert r.status == 200
            state = await r.json()
            assert [w["id"] for w in state["workers"] if w["supervised"]] == ["ledger-1"]
            assert state["groups"][0]["children"][0]["workers"] == ["ledger-1"]
            assert r.headers["Cache-Control"] == "no-store"
        # ...but not to a page that rebinds its own name to 127.0.0.1.
        async with http.get(url + "api/state", headers={"Host": "evil.example"}) as r:
            assert r.status == 401
        async with http.get(url + "metrics") as r:
            assert r.status == 200
            text = await r.text()
            assert "actormesh_supervisor_up 1.0" in text
            assert 'actormesh_supervisor_workers{state="running"} 1.0' in text
        async with http.get(url) as r:
            assert r.status == 200
            assert "default-src 'self'" in r.headers["Content-Security-Policy"]
            assert "<title>actormesh supervisor</title>" in await r.text()
        async with http.get(url + "static/app.js") as r:
            assert r.status == 200
        async with http.get(url + "static/../_options.py") as r:
            assert r.status == 404


async def test_actions_need_login_csrf_and_same_origin(
    service: Service, nats_url: str, mesh_prefix: str
) -> None:
    url, origin = service.url, _origin(service)
    restart = url + "api/workers/ledger-1/restart"
    jar = aiohttp.CookieJar(unsafe=True)  # cookies for an IP-address host
    async with (
        EventLog.listen(nats_url, mesh_prefix) as events,
        aiohttp.ClientSession(cookie_jar=jar) as http,
    ):
        async with http.post(restart, headers={"Origin": origin}) as r:
            assert r.status == 401
        async with http.post(url + "api/login", json={"token": "wrong" * 5},
                             headers={"Origin": origin}) as r:  # fmt: skip
            assert r.status == 401
        async with http.post(url + "api/login", json={"token": TOKEN},
                             headers={"Origin": "http://evil.example"}) as r:  # fmt: skip
            assert r.status == 403
        async with http.post(url + "api/login", json={"token": TOKEN},
                             headers={"Origin": origin}) as r:  # fmt: skip
            assert r.status == 200
            csrf = (await r.json())["csrf"]
            cookie = r.headers["Set-Cookie"]
            assert "HttpOnly" in cookie and "SameSite=Strict" in cookie
        async with http.post(restart, headers={"Origin": origin}) as r:
            assert r.status == 403, "no CSRF token"
        async with http.post(restart, headers={"Origin": "http://evil.example",
                                               "X-CSRF-Token": csrf}) as r:  # fmt: skip
            assert r.status == 403, "cross-origin"
        async with http.post(restart, headers={"X-CSRF-Token": csrf}) as r:
            assert r.status == 403, "neither Origin nor Referer"
        assert events.of("restarted") == []
        async with http.post(restart, headers={"Referer": url, "X-CSRF-Token": csrf}) as r:
            assert r.status == 202
        await events.wait("restarted", worker="ledger-1")
        assert events.of("restarted")[0].detail["operator"] == "1"
        async with http.post(url + "api/workers/nobody/restart",
                             headers={"Origin": origin, "X-CSRF-Token": csrf}) as r:  # fmt: skip
            assert r.status == 404
        async with http.post(url + "api/logout",
                             headers={"Origin": origin, "X-CSRF-Token": csrf}) as r:  # fmt: skip
            assert r.status == 200
        async with http.post(restart, headers={"Origin": origin, "X-CSRF-Token": csrf}) as r:
            assert r.status == 401
    # API clients: a bearer token, no cookie, no CSRF.
    async with aiohttp.ClientSession() as http:
        bearer = {"Authorization": f"Bearer {TOKEN}"}
        async with http.post(url + "api/groups/g/restart", headers=bearer) as r:
            assert r.status == 202
        async with http.post(url + "api/groups/g/restart",
                             headers={"Authorization": "Bearer nope"}) as r:  # fmt: skip
            assert r.status == 403


async def test_dead_letters_list_inspect_replay_purge_and_drain(
    service: Service, nats_url: str, mesh_prefix: str, tmp_path: Path
) -> None:
    url = service.url
    bearer = {"Authorization": f"Bearer {TOKEN}"}
    mesh = await Mesh.connect(nats_url, prefix=mesh_prefix)
    subjects = mesh.subjects

    async def dead_letter(msg_id: str) -> None:
        await mesh.publish(
            subjects.dlq("ledger"),
            json.dumps({"type": "Work", "id": msg_id}).encode(),
            headers={
                Hdr.ORIGINAL_SUBJECT: subjects.mailbox("ledger"), Hdr.ERROR_CODE: "handler_error",
                Hdr.ERROR_TYPE: "Boom", Hdr.ERROR_MESSAGE: "it broke", Hdr.DELIVERIES: "5",
                Hdr.WORKER: "ledger-1", Hdr.DEAD_AT: f"{time.time():.3f}",
                Hdr.MSG_ID: f"dl-{msg_id}",
            },
        )  # fmt: skip

    try:
        await dead_letter("dl1")
        async with aiohttp.ClientSession(headers=bearer) as http:
            async with http.get(url + "api/dlq?actor_type=ledger") as r:
                items: list[dict[str, Any]] = await r.json()
            assert [(d["error_type"], d["deliveries"]) for d in items] == [("Boom", 5)]
            seq = items[0]["seq"]
            async with http.get(url + f"api/dlq/{seq}") as r:
                detail = await r.json()
            assert json.loads(detail["payload"])["id"] == "dl1"
            assert detail["error_message"] == "it broke"
            async with http.post(url + f"api/dlq/{seq}/replay") as r:
                assert r.status == 200
            ledger = tmp_path / "ledger.txt"
            await wait_until(lambda: "dl1" in {x[0] for x in read_ledger(ledger)}, 15,
                             what="the replayed message handled")  # fmt: skip
            await dead_letter("dl2")
            async with http.post(url + "api/dlq/purge", json={}) as r:
                assert r.status == 400
            async with http.post(url + "api/dlq/purge", json={"actor_type": "ledger"}) as r:
                assert (await r.json())["purged"] == 1
            async with http.get(url + "api/dlq") as r:
                assert await r.json() == []
            async with http.get(url + "api/workers/ledger-1/stats") as r:
                assert (await r.json())["stats"]["worker"] == "ledger-1"
            # Drain: the worker stops cleanly and stays stopped.
            async with http.post(url + "api/workers/ledger-1/drain") as r:
                assert r.status == 202
            sup = service.supervisor
            await wait_until(lambda: sup.slots["ledger-1"].state == "drained", 15,
                             what="the drained worker")  # fmt: skip
            async with http.get(url + "api/events?kind=stopped") as r:
                assert any(e["worker"] == "ledger-1" for e in await r.json())
    finally:
        await mesh.close()


@pytest.mark.parametrize(
    "host",
    ["127.attacker.example:8765", "127.attacker.example", "127.0.0.1.nip.io:8765",
     "localhost.attacker.example", "[::1]x:8765", "10.0.0.5:8765"],
)  # fmt: skip
async def test_open_reads_refuse_a_forged_loopback_host(service: Service, host: str) -> None:
    # A DNS-rebinding page reaches 127.0.0.1 under its own name: reads (dead-letter
    # payloads among them) must stay closed to it without the token.
    url = service.url
    async with aiohttp.ClientSession() as http:
        for path in ("api/state", "api/dlq"):
            async with http.get(url + path, headers={"Host": host}) as r:
                assert r.status == 401, (host, path)
        async with http.get(url + "api/state", headers={"Host": host,
                            "Authorization": f"Bearer {TOKEN}"}) as r:  # fmt: skip
            assert r.status == 200, "the token still opens it"


@pytest.mark.parametrize(
    "host", ["localhost", "127.0.0.1:{port}", "127.1.2.3:{port}", "[::1]:{port}"]
)
async def test_open_reads_accept_loopback_literals(service: Service, host: str) -> None:
    port = URL(service.url).port
    headers = {"Host": host.format(port=port)}
    async with aiohttp.ClientSession() as http, http.get(service.url + "api/state",
                                                         headers=headers) as r:  # fmt: skip
        assert r.status == 200, host


async def test_replaying_a_missing_dead_letter_is_a_404(service: Service) -> None:
    bearer = {"Authorization": f"Bearer {TOKEN}"}
    async with (
        aiohttp.ClientSession(headers=bearer) as http,
        http.post(service.url + "api/dlq/999999/replay") as r,
    ):
        assert r.status == 404
        assert "no dead letter #999999" in (await r.json())["error"]
