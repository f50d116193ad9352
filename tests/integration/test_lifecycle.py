"""Lifecycle control against a real supervisor, real worker processes and a real
nats-server: pause and resume an actor type (JetStream consumer pause), stop one
actor instance and see it come back with its durable state, drain a worker, the
HTTP API with a bearer token, the CLI, and the /alive and /ready probes."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import pytest_asyncio
from nats.aio.msg import Msg

from actormesh import Mesh, WorkerConfig
from actormesh.lowlevel import (
    drain_worker,
    passivate_instance,
    pause_actor_type,
    pause_state,
    resume_actor_type,
)
from actormesh.testing import eventually, running_worker
from actormesh_supervisor import Service
from actormesh_supervisor._auth import Auth
from actormesh_supervisor._dashboard import Dashboard
from actormesh_supervisor._supervisor import Supervisor
from tests.actors_split import Add as SAdd
from tests.actors_split import KeylessTally, PartitionedTally
from tests.actors_state import Add, Ledger, Total
from tests.actors_supervisor import TOKEN, EventLog, meshfile, options, worker_env

pytestmark = pytest.mark.integration

BEARER = {"Authorization": f"Bearer {TOKEN}"}
KEYS = [f"k{i}" for i in range(10)]


def _group(replicas: int = 1) -> dict[str, Any]:
    child = {"name": "ledger", "actor": "tests.actors_state:Ledger", "shutdown_grace": 3.0,
             "replicas": replicas}  # fmt: skip
    return {"name": "g", "children": [child]}


@pytest_asyncio.fixture
async def service(nats_url: str, mesh_prefix: str, tmp_path: Path) -> AsyncIterator[Service]:
    # A short stall_after: a paused type with messages waiting must not look stalled.
    mf = meshfile(mesh_prefix, [_group()], stall_after=1.0)
    async with Service(options(nats_url, mesh_prefix, tmp_path, mf, token=TOKEN)) as svc:
        yield svc


@pytest_asyncio.fixture
async def client(nats_url: str, mesh_prefix: str) -> AsyncIterator[Mesh]:
    mesh = await Mesh.connect(nats_url, prefix=mesh_prefix, name="test-lifecycle")
    try:
        yield mesh
    finally:
        await mesh.close()


async def _get(http: aiohttp.ClientSession, url: str) -> Any:
    async with http.get(url, headers=BEARER) as r:
        assert r.status == 200, await r.text()
        return await r.json()


async def _post(http: aiohttp.ClientSession, url: str, body: Any = None, status: int = 200) -> Any:
    async with http.post(url, headers=BEARER, json=body or {}) as r:
        assert r.status == status, await r.text()
        return await r.json()


async def _until(check: Any, timeout: float, what: str) -> None:
    """Poll an async predicate (no fixed sleeps: behaviour, not timing)."""
    deadline = asyncio.get_running_loop().time() + timeout
    while not await check():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        await asyncio.sleep(0.05)


async def _worker_row(http: aiohttp.ClientSession, url: str, worker: str) -> dict[str, Any]:
    state = await _get(http, url + "api/state")
    return next(w for w in state["workers"] if w["id"] == worker)


async def _totals(client: Mesh) -> dict[str, int]:
    return {k: await client.ref(Ledger, k).ask(Total(), timeout=10.0) for k in KEYS}


async def _running(http: aiohttp.ClientSession, url: str) -> None:
    async def up() -> bool:
        return (await _worker_row(http, url, "ledger-1"))["status"] == "running"

    await _until(up, 30.0, "ledger-1 running")


@pytest.mark.timeout(90)
async def test_pause_under_load_holds_every_message_and_resume_drains_them(
    service: Service, client: Mesh, nats_url: str, mesh_prefix: str
) -> None:
    url = service.url
    js, subjects = client.js, client.subjects
    stream, durable = subjects.mailbox_stream("ledger"), subjects.consumer("ledger")
    async with EventLog.listen(nats_url, mesh_prefix) as events, aiohttp.ClientSession() as http:
        await _running(http, url)
        for k in KEYS:
            await client.ref(Ledger, k).tell(Add(by=1))
        assert await _totals(client) == dict.fromkeys(KEYS, 1)

        paused = await _post(http, url + "api/types/ledger/pause")
        assert paused["paused"] is True and paused["until"] is None
        assert paused["consumers"] == {durable: True}
        info = await js.consumer_info(stream, durable)
        assert info.paused is True
        delivered = info.delivered.stream_seq

        # The worker hears the server's pause advisory and says so in its heartbeats.
        async def worker_paused() -> bool:
            row = await _worker_row(http, url, "ledger-1")
            return row["paused"] is True and row["lifecycle"] == "paused"

        await _until(worker_paused, 10.0, "the worker reporting paused")
        before = (await _get(http, url + "api/workers/ledger-1/stats"))["stats"]

        # Load while paused: 400 messages, concurrently, every one stored (PubAck).
        sends = [client.ref(Ledger, KEYS[i % 10]).tell(Add(by=1)) for i in range(400)]
        receipts = await asyncio.gather(*sends)
        assert len({r.seq for r in receipts}) == 400

        # They wait in the mailbox: none delivered, none handled. Several of the
        # worker's pull cycles (idle heartbeats every 2s) pass before we look again.
        async def all_waiting() -> bool:
            i = await js.consumer_info(stream, durable)
            return i.num_pending == 400

        await _until(all_waiting, 10.0, "400 messages pending")
        lifecycle = await _get(http, url + "api/types/ledger/lifecycle")
        assert lifecycle["paused"] is True
        assert [w["lifecycle"] for w in lifecycle["workers"]] == ["paused"]
        for _ in range(3):
            await asyncio.sleep(1.0)  # nothing must happen meanwhile (checked below)
            i = await js.consumer_info(stream, durable)
            assert (i.num_pending, i.num_ack_pending, i.delivered.stream_seq) == (400, 0, delivered)
        now = (await _get(http, url + "api/workers/ledger-1/stats"))["stats"]
        assert now["handled"] == before["handled"]
        assert now["paused"] is True
        # A paused type with messages waiting is not a stall (stall_after is 1s here).
        mailbox = next(m for m in (await _get(http, url + "api/state"))["mailboxes"]
                       if m["actor_type"] == "ledger")  # fmt: skip
        assert mailbox["paused"] is True and mailbox["stalled"] is False
        async with http.get(url + "metrics", headers=BEARER) as r:
            assert 'actormesh_supervisor_mailbox_paused{actor_type="ledger"} 1.0' in await r.text()
        assert events.of("restarted") == [] and events.of("failed") == []

        resumed = await _post(http, url + "api/types/ledger/resume")
        assert resumed["paused"] is False

        async def drained() -> bool:
            i = await js.consumer_info(stream, durable)
            return i.num_pending == 0 and i.num_ack_pending == 0

        await _until(drained, 30.0, "the mailbox drained")
        # Exactly once each: 1 + 40 per key, nothing lost, nothing doubled.
        assert await _totals(client) == dict.fromkeys(KEYS, 41)
        after = (await _get(http, url + "api/workers/ledger-1/stats"))["stats"]
        assert after["handled"] - before["handled"] == 400 + 10  # the adds and our asks
        assert after["dead_lettered"] == 0

        async def worker_running() -> bool:
            return (await _worker_row(http, url, "ledger-1"))["lifecycle"] == "running"

        await _until(worker_running, 10.0, "the worker reporting running again")
        await events.wait("paused", actor_type="ledger")
        await events.wait("resumed", actor_type="ledger")
        assert events.of("paused")[0].detail["operator"] == "1"


@pytest.mark.timeout(60)
async def test_timed_pause_ends_by_itself(service: Service, client: Mesh) -> None:
    url = service.url
    async with aiohttp.ClientSession() as http:
        await _running(http, url)
        await client.ref(Ledger, "t").tell(Add(by=2))
        assert await client.ref(Ledger, "t").ask(Total(), timeout=10.0) == 2
        state = await _post(http, url + "api/types/ledger/pause", {"seconds": 2})
        assert state["paused"] is True and state["until"] is not None
        await client.ref(Ledger, "t").tell(Add(by=3))
        # Answered only once the server ends the pause on its own.
        assert await client.ref(Ledger, "t").ask(Total(), timeout=20.0) == 5
        lifecycle = await _get(http, url + "api/types/ledger/lifecycle")
        assert lifecycle["paused"] is False
        await _post(http, url + "api/types/ledger/pause", {"seconds": -1}, status=400)
        await _post(http, url + "api/types/nosuch/pause", status=404)


@pytest.mark.timeout(60)
async def test_stop_one_instance_and_it_reactivates_with_its_state(
    service: Service, client: Mesh, nats_url: str, mesh_prefix: str
) -> None:
    url = service.url
    async with EventLog.listen(nats_url, mesh_prefix) as events, aiohttp.ClientSession() as http:
        await _running(http, url)
        a, b = client.ref(Ledger, "a"), client.ref(Ledger, "b")
        for _ in range(3):
            await a.tell(Add(by=1))
        await b.tell(Add(by=7))
        assert await a.ask(Total(), timeout=10.0) == 3
        assert await b.ask(Total(), timeout=10.0) == 7
        listed = await _get(http, url + "api/workers/ledger-1/instances")
        assert {(i["key"], i["state"]) for i in listed["instances"]} == {
            ("a", "active"), ("b", "active")
        }  # fmt: skip

        stopped = await _post(http, url + "api/types/ledger/instances/a/stop")
        assert stopped == {"actor_type": "ledger", "key": "a", "state": "passivated",
                           "workers": ["ledger-1"], "refused": {}}  # fmt: skip
        listed = await _get(http, url + "api/workers/ledger-1/instances")
        assert {(i["key"], i["state"]) for i in listed["instances"]} == {
            ("a", "passivated"), ("b", "active")
        }  # fmt: skip
        # Stopping it again: nothing live to stop.
        again = await _post(http, url + "api/types/ledger/instances/a/stop")
        assert again["state"] == "not_active"

        async def counted() -> bool:
            return (await _worker_row(http, url, "ledger-1"))["passivated"] >= 1

        await _until(counted, 10.0, "the heartbeat counting the passivation")
        # The next message activates it again, its durable state loaded.
        await a.tell(Add(by=1))
        assert await a.ask(Total(), timeout=10.0) == 4
        listed = await _get(http, url + "api/workers/ledger-1/instances")
        assert ("a", "active") in {(i["key"], i["state"]) for i in listed["instances"]}
        await events.wait("passivated", actor_type="ledger")
        assert events.of("passivated")[0].detail["key"] == "a"


@pytest.mark.timeout(60)
async def test_actions_by_bearer_token_and_refused_without(service: Service) -> None:
    url = service.url
    origin = url.rstrip("/")
    async with aiohttp.ClientSession() as http:
        await _running(http, url)
        # No credentials, a wrong token, a session without its CSRF token: refused.
        async with http.post(url + "api/types/ledger/pause", headers={"Origin": origin}) as r:
            assert r.status == 401
        wrong = {"Authorization": "Bearer wrong-token-0123456789"}
        async with http.post(url + "api/types/ledger/pause", headers=wrong) as r:
            assert r.status == 403
    jar = aiohttp.CookieJar(unsafe=True)
    async with aiohttp.ClientSession(cookie_jar=jar) as http:
        async with http.post(url + "api/login", json={"token": TOKEN},
                             headers={"Origin": origin}) as r:  # fmt: skip
            assert r.status == 200
            csrf = (await r.json())["csrf"]
        async with http.post(url + "api/types/ledger/pause", headers={"Origin": origin}) as r:
            assert r.status == 403, "a session without the CSRF token"
        evil = {"Origin": "http://evil.example", "X-CSRF-Token": csrf}
        async with http.post(url + "api/types/ledger/pause", headers=evil) as r:
            assert r.status == 403, "cross-origin, even with the session and its CSRF token"
        same = {"Origin": origin, "X-CSRF-Token": csrf}
        async with http.post(url + "api/types/ledger/instances/zz/stop", headers=same) as r:
            assert r.status == 200 and (await r.json())["state"] == "not_active"
        async with http.get(url + "api/types/ledger/lifecycle") as r:
            assert (await r.json())["paused"] is False
    # With the bearer token: pause, resume and drain, no cookie, no CSRF token.
    async with aiohttp.ClientSession() as http:
        assert (await _post(http, url + "api/types/ledger/pause"))["paused"] is True
        assert (await _post(http, url + "api/types/ledger/resume"))["paused"] is False
        drained = await _post(http, url + "api/workers/ledger-1/drain", status=202)
        assert drained == {"queued": "drain", "worker": "ledger-1"}

        async def stopped() -> bool:
            row = await _worker_row(http, url, "ledger-1")
            return row["status"] == "stopped" or row["health"] == "stopped"

        await _until(stopped, 20.0, "the drained worker stopped")


@pytest.mark.timeout(60)
async def test_alive_and_ready(nats_url: str, mesh_prefix: str, tmp_path: Path) -> None:
    mf = meshfile(mesh_prefix, [_group()])
    sup = Supervisor(options(nats_url, mesh_prefix, tmp_path, mf, token=TOKEN))
    dash = Dashboard(sup, host="127.0.0.1", port=0, auth=Auth(TOKEN, open_reads=False))
    url = await dash.start()
    try:
        async with aiohttp.ClientSession() as http:
            # Up, but not connected to NATS and its groups not started: alive, not ready.
            async with http.get(url + "alive") as r:
                assert r.status == 200 and (await r.json())["alive"] is True
            async with http.get(url + "ready") as r:
                assert r.status == 503
                body = await r.json()
                assert body["ready"] is False
                assert body["checks"] == {"nats": False, "jetstream": False,
                                          "groups_started": False}  # fmt: skip
            await sup.start()
            try:
                async with http.get(url + "ready") as r:  # no token needed: a probe
                    assert r.status == 200, await r.text()
                    assert (await r.json())["checks"] == {"nats": True, "jetstream": True,
                                                          "groups_started": True}  # fmt: skip
            finally:
                await sup.stop()
            async with http.get(url + "ready") as r:
                assert r.status == 503
            async with http.get(url + "alive") as r:
                assert r.status == 200
    finally:
        await dash.stop()


@pytest.mark.timeout(90)
async def test_cli_pause_resume_stop_instance_and_lifecycle(
    service: Service, client: Mesh, nats_url: str, mesh_prefix: str
) -> None:
    env = worker_env(NATS_URL=nats_url, ACTORMESH_PREFIX=mesh_prefix)

    def cli(*argv: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "actormesh", *argv], env=env, capture_output=True,
            text=True, timeout=30, check=False,
        )  # fmt: skip

    async with aiohttp.ClientSession() as http:
        await _running(http, service.url)
    await client.ref(Ledger, "c").tell(Add(by=5))
    assert await client.ref(Ledger, "c").ask(Total(), timeout=10.0) == 5

    r = await asyncio.to_thread(cli, "pause", "ledger")
    assert r.returncode == 0, r.stderr
    assert "paused until resumed" in r.stdout
    await client.ref(Ledger, "c").tell(Add(by=1))
    r = await asyncio.to_thread(cli, "lifecycle", "ledger", "--json")
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert out["paused"] is True
    assert out["workers"]["ledger-1"]["lifecycle"] == "paused"
    r = await asyncio.to_thread(cli, "resume", "ledger")
    assert r.returncode == 0 and "running (not paused)" in r.stdout, r.stderr
    assert await client.ref(Ledger, "c").ask(Total(), timeout=10.0) == 6

    r = await asyncio.to_thread(cli, "stop-instance", "ledger", "c")
    assert r.returncode == 0, r.stderr
    assert "passivated in ledger-1" in r.stdout
    r = await asyncio.to_thread(cli, "instances", "ledger-1")
    assert r.returncode == 0 and "c\tpassivated" in r.stdout, r.stdout + r.stderr
    assert await client.ref(Ledger, "c").ask(Total(), timeout=10.0) == 6

    r = await asyncio.to_thread(cli, "pause", "nosuch")
    assert r.returncode == 1 and "no mailbox" in r.stderr

    token = service.supervisor.options.runtime_dir / "token"
    token.write_text(TOKEN)
    r = await asyncio.to_thread(
        cli, "drain", "ledger-1", "--dashboard", service.url, "--token-file", str(token)
    )
    assert r.returncode == 0, r.stderr
    assert "drain queued" in r.stdout


@pytest.mark.timeout(60)
async def test_partitioned_type_pauses_every_partition_and_keyless_refuses_stop(
    mesh: Mesh,
) -> None:
    async with (
        running_worker(
            mesh, PartitionedTally, WorkerConfig(partition=0, heartbeat_interval=0.2)
        ) as w0,
        running_worker(
            mesh, PartitionedTally, WorkerConfig(partition=1, heartbeat_interval=0.2)
        ) as w1,
        running_worker(mesh, KeylessTally, WorkerConfig(heartbeat_interval=0.2)) as wk,
    ):
        state = await pause_actor_type(mesh, "splitparts")
        assert state.consumers == {"splitparts_p0": True, "splitparts_p1": True}
        await eventually(lambda: w0.paused and w1.paused, 10.0, what="both partitions paused")
        assert w0.heartbeat().paused and w1.stats().paused
        receipts = [await mesh.ref(PartitionedTally, f"k{i}").tell(SAdd()) for i in range(20)]
        assert len(receipts) == 20
        stream = mesh.subjects.mailbox_stream("splitparts")

        async def waiting() -> int:
            infos = await mesh.js.consumers_info(stream)
            return sum(c.num_pending or 0 for c in infos)

        await _until(lambda: _eq(waiting(), 20), 10.0, "20 messages waiting")
        assert w0.handled + w1.handled == 0
        state = await resume_actor_type(mesh, "splitparts")
        assert not state.paused and state.consumers == {
            "splitparts_p0": False, "splitparts_p1": False
        }  # fmt: skip
        await eventually(lambda: w0.handled + w1.handled == 20, 20.0, what="all 20 handled")
        assert not (await pause_state(mesh, "splitparts")).paused
        await eventually(lambda: not w0.paused and not w1.paused, 10.0, what="resumed")

        # A keyless type has no instance per key: the worker refuses to stop one.
        replies = await passivate_instance(mesh, "splitkeyless", "x", workers=[wk.id])
        assert not replies[wk.id].ok and "keyless" in replies[wk.id].error


async def _eq(value: Any, expected: Any) -> bool:
    return bool(await value == expected)


async def test_drain_a_worker_by_its_default_id(mesh: Mesh) -> None:
    async with running_worker(mesh, Ledger) as worker:
        asked: list[str] = []

        async def listen(msg: Msg) -> None:  # only listens; the worker answers
            asked.append(msg.subject)

        # A default id names the type, so the request goes under it (all a broker
        # with users lets the type's worker answer), not to the id-only subject.
        typed = mesh.subjects.control_of("ledger", worker.id)
        sub = await mesh.nc.subscribe(typed, cb=listen)
        try:
            reply = await drain_worker(mesh, worker.id, grace=1.0)
        finally:
            await sub.unsubscribe()
        assert reply.ok and reply.op == "drain"
        assert asked == [typed]
        await eventually(lambda: worker.status == "stopped", 10.0, what="the worker stopped")
