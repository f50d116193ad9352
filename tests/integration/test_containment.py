"""Containment against a real broker: a failing message is a matter for its key.

Redeliveries of one message count once; a key past its intensity is parked (its
later messages too) and released back to its mailbox; only failures across many
keys escalate the worker."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from pathlib import Path
from typing import ClassVar

import aiohttp
import msgspec
import pytest

from actormesh import (
    Actor,
    Event,
    MailboxConfig,
    Mesh,
    Message,
    RemoteError,
    SupervisionPolicy,
    WorkerConfig,
)
from actormesh._dlq import DeadLetters
from actormesh.lowlevel import parked_stream, release_parked
from actormesh.testing import eventually, running_worker
from actormesh_supervisor import Service
from tests.actors_supervisor import TOKEN, meshfile, options

pytestmark = pytest.mark.integration


class Job(Message):
    n: int
    fail: bool = False


class Toxic(Actor):
    """Raises on `fail`, and for every message of a key in `broken`."""

    actor_type = "toxic"
    mailbox: ClassVar[MailboxConfig] = MailboxConfig(max_deliver=3, backoff=(0.5,))
    supervision: ClassVar[SupervisionPolicy] = SupervisionPolicy(
        max_restarts=2, within=60, max_failing_keys=3
    )
    broken: ClassVar[set[str]] = set()
    handled: ClassVar[list[tuple[str, int]]] = []
    runs: ClassVar[dict[tuple[str, int], int]] = {}

    async def job(self, msg: Job) -> int:
        cls = type(self)
        cls.runs[(self.key, msg.n)] = cls.runs.get((self.key, msg.n), 0) + 1
        if msg.fail or self.key in cls.broken:
            raise RuntimeError(f"job {msg.n} of {self.key} fails")
        cls.handled.append((self.key, msg.n))
        return msg.n


class Quarantined(Toxic):
    """Dead-letters a key's messages past its intensity instead of parking them."""

    actor_type = "quarantined"
    supervision: ClassVar[SupervisionPolicy] = SupervisionPolicy(
        max_restarts=2, within=60, max_failing_keys=3, on_intensity="dead_letter"
    )


class Brief(Toxic):
    """Parks for a moment only: the worker releases the key by itself."""

    actor_type = "brief"
    supervision: ClassVar[SupervisionPolicy] = SupervisionPolicy(
        max_restarts=2, within=60, max_failing_keys=3, park_for=0.5
    )


class Starter(Toxic):
    """on_start fails for every key."""

    actor_type = "starter"
    supervision: ClassVar[SupervisionPolicy] = SupervisionPolicy(
        max_restarts=2, within=60, max_failing_keys=10, max_failed_starts=3
    )

    async def on_start(self) -> None:
        raise RuntimeError("cannot start")


@pytest.fixture(autouse=True)
def _reset() -> None:
    Toxic.broken = set()
    Toxic.handled = []
    Toxic.runs = {}


class Events:
    def __init__(self) -> None:
        self.seen: list[Event] = []

    def of(self, kind: str) -> list[Event]:
        return [e for e in self.seen if e.kind == kind]


async def listen(mesh: Mesh) -> Events:
    events = Events()
    decode = msgspec.json.Decoder(Event).decode

    async def on_msg(msg: object) -> None:
        events.seen.append(decode(msg.data))  # type: ignore[attr-defined]

    await mesh.nc.subscribe(mesh.subjects.event("*", "*"), cb=on_msg)
    return events


async def parked_count(mesh: Mesh, actor_type: str) -> int:
    info = await mesh.js.stream_info(parked_stream(mesh.subjects, actor_type))
    return info.state.messages


async def test_a_poison_message_counts_once_and_stops_nothing(mesh: Mesh) -> None:
    events = await listen(mesh)
    async with running_worker(mesh, Toxic, WorkerConfig(drain_grace=1.0)) as worker:
        await mesh.ref(Toxic, "bad").tell(Job(n=1, fail=True))
        for i in range(20):
            await mesh.ref(Toxic, f"good-{i % 4}").tell(Job(n=i))
        dlq = DeadLetters(mesh)
        await eventually(lambda: worker.dead_lettered == 1 and len(Toxic.handled) == 20)
        # Three deliveries of one message: one failure toward intensity 2, so the key
        # is not parked, and it takes its next messages.
        assert Toxic.runs[("bad", 1)] == 3
        assert worker.parked == 0 and worker.status == "running"
        assert await mesh.ref(Toxic, "bad").ask(Job(n=2)) == 2
        letters = await dlq.list("toxic")
        assert len(letters) == 1 and letters[0].error_type == "RuntimeError"
    assert not events.of("key_parked") and not events.of("escalated")
    assert worker.exit_code == 0


async def test_a_key_past_intensity_is_parked_then_released(mesh: Mesh) -> None:
    events = await listen(mesh)
    Toxic.broken = {"k"}
    async with running_worker(mesh, Toxic, WorkerConfig(drain_grace=1.0)) as worker:
        ref = mesh.ref(Toxic, "k")
        for n in range(1, 6):
            await ref.tell(Job(n=n))
        # Three distinct failing messages (> 2): parked; the failing ones rejoin it
        # when redelivered, the rest never run.
        await eventually(lambda: worker.parked == 1)
        await eventually(lambda: len(events.of("key_parked")) == 1)
        assert events.of("key_parked")[0].detail["key"] == "k"
        # A later message waits too; other keys carry on.
        await ref.tell(Job(n=6))
        assert await mesh.ref(Toxic, "other").ask(Job(n=7)) == 7
        assert await _eventually_async(lambda: parked_count(mesh, "toxic"), 6)
        assert {n for (key, n), runs in Toxic.runs.items() if key == "k"} == {1, 2, 3}
        # An ask to a parked key is answered at once, and dead-lettered.
        with pytest.raises(RemoteError) as info:
            await ref.ask(Job(n=8), timeout=5)
        assert info.value.code == "key_parked"
        await eventually(lambda: worker.dead_lettered == 1)
        assert worker.status == "running"

        Toxic.broken = set()
        assert await release_parked(mesh, "toxic", "k") == 6
        await eventually(lambda: {n for key, n in Toxic.handled if key == "k"} == set(range(1, 7)))
        assert worker.parked == 0
        assert await parked_count(mesh, "toxic") == 0
        await eventually(lambda: len(events.of("key_released")) == 1)
        # Released: its messages run again at once.
        assert await ref.ask(Job(n=9)) == 9
    assert not events.of("escalated")
    assert worker.exit_code == 0


async def _eventually_async(get: Callable[[], object], want: int, timeout: float = 15.0) -> bool:
    deadline = time.monotonic() + timeout
    while True:
        have = await get()  # type: ignore[misc]
        if have == want:
            return True
        if time.monotonic() > deadline:
            raise AssertionError(f"have {have}, want {want}")
        await asyncio.sleep(0.05)


async def test_a_restarted_worker_keeps_the_key_parked(mesh: Mesh) -> None:
    Toxic.broken = {"k"}
    async with running_worker(mesh, Toxic, WorkerConfig(drain_grace=1.0)) as worker:
        for n in range(1, 5):
            await mesh.ref(Toxic, "k").tell(Job(n=n))
        await eventually(lambda: worker.parked == 1)
        await _eventually_async(lambda: parked_count(mesh, "toxic"), 4)
    Toxic.broken = set()
    async with running_worker(mesh, Toxic, WorkerConfig(drain_grace=1.0)) as worker:
        assert worker.parked == 1
        await mesh.ref(Toxic, "k").tell(Job(n=5))
        await _eventually_async(lambda: parked_count(mesh, "toxic"), 5)
        assert await release_parked(mesh, "toxic") == 5
        await eventually(lambda: {n for key, n in Toxic.handled if key == "k"} == set(range(1, 6)))
        assert worker.parked == 0


async def test_a_parked_key_is_released_after_park_for(mesh: Mesh) -> None:
    events = await listen(mesh)
    Toxic.broken = {"k"}
    async with running_worker(mesh, Brief, WorkerConfig(drain_grace=1.0)) as worker:
        for n in range(1, 5):
            await mesh.ref(Brief, "k").tell(Job(n=n))
        await eventually(lambda: len(events.of("key_parked")) == 1)
        Toxic.broken = set()
        await eventually(lambda: {n for key, n in Toxic.handled if key == "k"} == {1, 2, 3, 4})
        await eventually(lambda: worker.parked == 0)
        assert events.of("key_released")[0].reason == "park_for"


async def test_dead_letter_policy_dead_letters_the_parked_keys_messages(mesh: Mesh) -> None:
    Toxic.broken = {"k"}
    async with running_worker(mesh, Quarantined, WorkerConfig(drain_grace=1.0)) as worker:
        for n in range(1, 6):
            await mesh.ref(Quarantined, "k").tell(Job(n=n))
        await eventually(lambda: worker.dead_lettered == 5)
        assert worker.parked == 1
        letters = await DeadLetters(mesh).list("quarantined")
        assert (
            sorted(d.original_subject for d in letters)
            == [mesh.subjects.mailbox("quarantined", "k")] * 5
        )
        assert {d.error_code for d in letters} == {"key_parked"}
        assert worker.status == "running"


async def test_failures_across_many_keys_escalate(mesh: Mesh) -> None:
    events = await listen(mesh)
    async with running_worker(mesh, Toxic, WorkerConfig(drain_grace=1.0)) as worker:
        for i in range(3):
            await mesh.ref(Toxic, f"k{i}").tell(Job(n=i, fail=True))
        await eventually(lambda: len({k for k, _ in Toxic.runs}) == 3)
        assert worker.status == "running"
        # A fourth failing key within `within` (max_failing_keys 3): the process fails.
        await mesh.ref(Toxic, "k3").tell(Job(n=3, fail=True))
        await asyncio.wait_for(worker._done.wait(), 15)
        assert worker.exit_code == 3
    # The worker says why (its final status goes out as an `escalated` event too).
    await eventually(
        lambda: any(e.detail.get("rule") == "failing_keys" for e in events.of("escalated"))
    )


async def test_on_start_failing_for_every_key_escalates(mesh: Mesh) -> None:
    events = await listen(mesh)
    async with running_worker(mesh, Starter, WorkerConfig(drain_grace=1.0)) as worker:
        for i in range(3):
            await mesh.ref(Starter, f"s{i}").tell(Job(n=i))
        await asyncio.wait_for(worker._done.wait(), 15)
        assert worker.exit_code == 3
    # The worker says why (its final status goes out as an `escalated` event too).
    await eventually(
        lambda: any(e.detail.get("rule") == "failed_starts" for e in events.of("escalated"))
    )


async def test_the_dashboard_lists_and_releases_parked_keys(
    mesh: Mesh, nats_url: str, mesh_prefix: str, tmp_path: Path
) -> None:
    mf = meshfile(mesh_prefix, [])
    bearer = {"Authorization": f"Bearer {TOKEN}"}
    Toxic.broken = {"k"}
    async with (
        Service(options(nats_url, mesh_prefix, tmp_path, mf, token=TOKEN)) as svc,
        running_worker(mesh, Toxic, WorkerConfig(drain_grace=1.0)) as worker,
        aiohttp.ClientSession(headers=bearer) as http,
    ):
        for n in range(1, 5):
            await mesh.ref(Toxic, "k").tell(Job(n=n))
        await eventually(lambda: worker.parked == 1)
        await _eventually_async(lambda: parked_count(mesh, "toxic"), 4)
        async with http.get(svc.url + "api/parked/toxic") as r:
            assert await r.json() == {"actor_type": "toxic", "keys": {"k": 4}}
        async with http.post(svc.url + "api/parked/toxic/release", json={}) as r:
            assert r.status == 400
        Toxic.broken = set()
        async with http.post(svc.url + "api/parked/toxic/release", json={"key": "k"}) as r:
            assert (await r.json())["released"] == 4
        await eventually(lambda: {n for key, n in Toxic.handled if key == "k"} == {1, 2, 3, 4})
        assert worker.parked == 0
        async with http.get(svc.url + "api/parked/toxic") as r:
            assert (await r.json())["keys"] == {}
