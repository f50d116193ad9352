"""The approvals API of the dashboard, against a real supervisor and worker: reads
list what waits; a decision needs a session with the CSRF token from the same
origin, or a bearer token, like every other control action."""

from __future__ import annotations

import asyncio
from pathlib import Path

import aiohttp
import pytest

from actormesh import Mesh, ToolRejected
from actormesh.testing import running_worker
from actormesh_supervisor import Service
from tests.actors_approvals import Safe
from tests.actors_supervisor import TOKEN, meshfile, options, wait_until

pytestmark = pytest.mark.integration


async def test_approvals_api_lists_and_decides_behind_the_usual_checks(
    mesh: Mesh, nats_url: str, mesh_prefix: str, tmp_path: Path
) -> None:
    Safe.ran.clear()
    mf = meshfile(mesh_prefix, [])
    async with (
        Service(options(nats_url, mesh_prefix, tmp_path, mf, token=TOKEN)) as svc,
        running_worker(mesh, Safe),
        aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as http,
    ):
        url, origin = svc.url, svc.url.rstrip("/")
        await mesh.tools.grants.grant("ops", "safe.*")
        one = asyncio.ensure_future(
            mesh.tools.call("safe.open", {"door": "one"}, principal="ops", timeout=60)
        )
        two = asyncio.ensure_future(
            mesh.tools.call("safe.open", {"door": "two"}, principal="ops", timeout=60)
        )
        listed: list[dict[str, object]] = []

        async def both_listed() -> bool:
            async with http.get(url + "api/approvals") as r:
                assert r.status == 200 and r.headers["Cache-Control"] == "no-store"
                listed[:] = await r.json()
            return len(listed) == 2

        for _ in range(300):
            if await both_listed():
                break
            await asyncio.sleep(0.05)
        by_door = {str(a["arguments"]): a for a in listed}
        first = next(a for k, a in by_door.items() if '"one"' in k)
        second = next(a for k, a in by_door.items() if '"two"' in k)
        assert first["state"] == "pending" and first["principal"] == "ops"
        assert 0 < float(str(first["left"])) <= 60
        approve = f"{url}api/approvals/{first['id']}/approve"

        # No session; a session without CSRF; cross-origin: refused, nothing decided.
        async with http.post(approve, headers={"Origin": origin}) as r:
            assert r.status == 401
        async with http.post(url + "api/login", json={"token": TOKEN},
                             headers={"Origin": origin}) as r:  # fmt: skip
            csrf = (await r.json())["csrf"]
        async with http.post(approve, headers={"Origin": origin}) as r:
            assert r.status == 403
        async with http.post(approve, headers={"Origin": "http://evil.example",
                                               "X-CSRF-Token": csrf}) as r:  # fmt: skip
            assert r.status == 403
        assert not one.done()

        async with http.post(approve, headers={"Origin": origin, "X-CSRF-Token": csrf}) as r:
            assert r.status == 200
            decided = await r.json()
            assert decided["state"] == "approved" and "dashboard" in decided["decided_by"]
        assert await one == "opened one"
        async with http.post(approve, headers={"Origin": origin, "X-CSRF-Token": csrf}) as r:
            assert r.status == 409, "decided once"
        async with http.post(url + "api/approvals/safe.999999/approve",
                             headers={"Origin": origin, "X-CSRF-Token": csrf}) as r:  # fmt: skip
            assert r.status == 404

        # An API client: the bearer token, no cookie, no CSRF.
        async with aiohttp.ClientSession() as api:
            reject = f"{url}api/approvals/{second['id']}/reject"
            async with api.post(reject, json={"reason": "not now"},
                                headers={"Authorization": f"Bearer {TOKEN}"}) as r:  # fmt: skip
                assert r.status == 200
                assert (await r.json())["decided_by"].endswith("(API token)")
        with pytest.raises(ToolRejected, match="not now"):
            await two
        async with http.get(url + "api/approvals") as r:
            assert await r.json() == []
        async with http.get(url + "api/approvals?state=all") as r:
            assert sorted(a["state"] for a in await r.json()) == ["approved", "rejected"]
        async with http.get(url + "api/approvals?state=maybe") as r:
            assert r.status == 400
        await wait_until(lambda: Safe.ran == ["one"], 5, what="only the approved call ran")
