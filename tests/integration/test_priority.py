"""Message priority on a real broker: an urgent message overtakes a backlog, low
ones are not starved by a steady supply of high ones, per-key order holds within
a level, control requests are not stuck behind a backlog, and a mailbox without
priorities is exactly as before (one consumer)."""

from __future__ import annotations

import asyncio
from typing import ClassVar

import msgspec
import pytest

from actormesh import (
    Actor,
    ConfigError,
    MailboxConfig,
    MailboxConflict,
    Mesh,
    Message,
    PrioritiesOff,
    WorkerConfig,
)
from actormesh._subjects import Priority
from actormesh._worker import Worker
from actormesh.lowlevel import list_instances, pause_actor_type, resume_actor_type
from actormesh.testing import eventually, running_worker
from tests.integration.test_cli import cli

pytestmark = pytest.mark.integration

PREFETCH = 64


class Job(Message):
    n: int
    level: str = "normal"


class Ping(Message):
    pass


class Jobs(Actor):
    """Keyless: records the order it handles jobs in."""

    actor_type = "jobs"
    keyless = True
    mailbox: ClassVar[MailboxConfig] = MailboxConfig(priorities=True, priority_fairness=4)
    order: ClassVar[list[tuple[str, int]]] = []

    async def job(self, msg: Job) -> None:
        await asyncio.sleep(0.001)
        type(self).order.append((msg.level, msg.n))

    async def ping(self, msg: Ping) -> str:
        return "pong"


class Keyed(Actor):
    """Keyed: records each key's order."""

    actor_type = "keyed"
    mailbox: ClassVar[MailboxConfig] = MailboxConfig(priorities=True)
    seen: ClassVar[dict[str, list[tuple[str, int]]]] = {}
    gate: ClassVar[asyncio.Event | None] = None

    async def job(self, msg: Job) -> None:
        gate = type(self).gate
        if gate is not None:
            await gate.wait()
        type(self).seen.setdefault(self.key, []).append((msg.level, msg.n))


class Plain(Actor):
    actor_type = "plain"

    async def job(self, msg: Job) -> None:
        pass


class Counted(msgspec.Struct):
    n: int = 0


class Stateful(Actor):
    actor_type = "stateful"
    mailbox: ClassVar[MailboxConfig] = MailboxConfig(priorities=True)
    state: Counted

    async def job(self, msg: Job) -> None:
        self.state.n += 1


def config(concurrency: int = 1) -> WorkerConfig:
    return WorkerConfig(concurrency=concurrency, prefetch=PREFETCH)


async def test_an_urgent_message_overtakes_a_backlog(mesh: Mesh) -> None:
    Jobs.order = []
    await mesh.declare(Jobs)
    ref = mesh.ref(Jobs)
    await ref.tell_many(Job(n=n) for n in range(2000))
    await ref.tell(Job(n=0, level="high"), priority="high")
    async with running_worker(mesh, Jobs, config()):
        await eventually(lambda: ("high", 0) in Jobs.order, timeout=30)
    # The worker holds at most a prefetch of the normal backlog: the urgent message
    # runs within that many, not after the 2,000.
    assert Jobs.order.index(("high", 0)) < PREFETCH + 8, Jobs.order.index(("high", 0))


async def test_lows_are_served_while_highs_keep_coming(mesh: Mesh) -> None:
    Jobs.order = []
    await mesh.declare(Jobs)
    ref = mesh.ref(Jobs)
    await ref.tell_many((Job(n=n, level="low") for n in range(100)), priority="low")
    await ref.tell_many((Job(n=n, level="high") for n in range(400)), priority="high")
    async with running_worker(mesh, Jobs, config()):
        await eventually(lambda: len(Jobs.order) == 500, timeout=45)
    first = [level for level, _ in Jobs.order[:250]]
    # Strict priority with fairness 4: one low in five picks while both wait, so
    # lows are served all along rather than after the 400 highs ...
    assert first.count("low") >= 35, first.count("low")
    assert first.count("high") >= 150, first.count("high")
    # ... and each level in its own sending order.
    for level in ("high", "low"):
        ns = [n for lv, n in Jobs.order if lv == level]
        assert ns == sorted(ns)


async def test_per_key_order_holds_within_a_level(mesh: Mesh) -> None:
    Keyed.seen, Keyed.gate = {}, None
    async with running_worker(mesh, Keyed, config(concurrency=4)):
        for n in range(60):
            for key in ("a", "b"):
                level: Priority = "high" if n % 3 == 0 else "normal"
                await mesh.ref(Keyed, key).tell(Job(n=n, level=level), priority=level)
        await eventually(lambda: sum(len(v) for v in Keyed.seen.values()) == 120, timeout=30)
    for key in ("a", "b"):
        for level in ("high", "normal"):
            ns = [n for lv, n in Keyed.seen[key] if lv == level]
            assert ns == sorted(ns) and len(ns) == (20 if level == "high" else 40)


async def test_an_ask_at_high_priority_is_answered(mesh: Mesh) -> None:
    async with running_worker(mesh, Jobs, config()):
        assert await mesh.ref(Jobs).ask(Ping(), priority="high") == "pong"
        assert await mesh.ref(Jobs).ask(Ping(), priority="low") == "pong"


async def test_control_requests_are_not_stuck_behind_a_backlog(mesh: Mesh) -> None:
    """Control goes over core NATS to the worker's control subject, not through
    the mailbox: a worker whose handlers are all blocked still answers it."""
    Keyed.seen, Keyed.gate = {}, asyncio.Event()
    try:
        async with running_worker(mesh, Keyed, config(concurrency=2)) as worker:
            for n in range(300):
                await mesh.ref(Keyed, f"k{n % 10}").tell(Job(n=n))
            await eventually(lambda: worker.in_flight >= 2 or len(worker._held) >= 2)
            reply = await list_instances(mesh, worker.id, actor_type="keyed", timeout=5.0)
            assert reply.ok and not Keyed.seen  # answered while nothing was handled
            Keyed.gate.set()
            await eventually(lambda: sum(len(v) for v in Keyed.seen.values()) == 300, timeout=30)
    finally:
        Keyed.gate = None


async def test_pause_holds_every_level(mesh: Mesh) -> None:
    Jobs.order = []
    async with running_worker(mesh, Jobs, config()):
        state = await pause_actor_type(mesh, "jobs")
        assert set(state.consumers) == {"jobs", "jobs_high", "jobs_low"}
        assert all(state.consumers.values())
        await mesh.ref(Jobs).tell(Job(n=1, level="high"), priority="high")
        await mesh.ref(Jobs).tell(Job(n=2, level="low"), priority="low")
        await asyncio.sleep(0.5)
        assert Jobs.order == []  # nothing handled while paused
        await resume_actor_type(mesh, "jobs")
        await eventually(lambda: len(Jobs.order) == 2, timeout=15)


async def test_without_priorities_a_mailbox_is_as_before(mesh: Mesh) -> None:
    await mesh.declare(Plain)
    stream = mesh.subjects.mailbox_stream("plain")
    infos = await mesh.js.consumers_info(stream)
    assert [(c.name, c.config.filter_subject) for c in infos] == [("plain", None)]
    assert (await mesh.js.stream_info(stream)).config.subjects == [
        mesh.subjects.mailbox("plain", "*")
    ]
    with pytest.raises(PrioritiesOff) as err:
        await mesh.ref(Plain).tell(Job(n=1), priority="high")
    assert err.value.actor_type == "plain" and err.value.level == "high"
    await mesh.declare(Jobs)
    names = sorted(
        c.name for c in await mesh.js.consumers_info(mesh.subjects.mailbox_stream("jobs"))
    )
    assert names == ["jobs", "jobs_high", "jobs_low"]


async def test_priorities_and_durable_state_are_refused(mesh: Mesh) -> None:
    with pytest.raises(ConfigError, match="ack floor"):
        Worker(mesh, Stateful)


async def test_the_cli_sends_with_a_priority(mesh: Mesh, subprocess_env: dict[str, str]) -> None:
    Jobs.order = []
    await mesh.declare(Plain)
    async with running_worker(mesh, Jobs, config()):
        job = '{"type":"Job","n":7,"level":"high"}'
        out = await cli(subprocess_env, "tell", "jobs", "_", job, "--priority", "high")
        assert out.returncode == 0, out.stderr
        await eventually(lambda: Jobs.order == [("high", 7)])
        out = await cli(subprocess_env, "ask", "jobs", "_", '{"type":"Ping"}', "--priority", "low")
        assert out.returncode == 0 and out.stdout.strip() == '"pong"', out.stderr
    out = await cli(subprocess_env, "tell", "plain", "_", job, "--priority", "high")
    assert out.returncode == 1 and "takes no priorities" in out.stderr


class Before(Actor):
    actor_type = "migrating"
    keyless = True

    async def job(self, msg: Job) -> None:
        pass


class After(Actor):
    actor_type = "migrating"
    keyless = True
    mailbox: ClassVar[MailboxConfig] = MailboxConfig(priorities=True)
    got: ClassVar[list[int]] = []

    async def job(self, msg: Job) -> None:
        type(self).got.append(msg.n)


async def test_priorities_turned_on_for_an_existing_mailbox(mesh: Mesh) -> None:
    After.got = []
    await mesh.declare(Before)
    await mesh.ref(Before).tell(Job(n=1))  # waiting in the old mailbox
    with pytest.raises(MailboxConflict):
        async with running_worker(mesh, After):
            pass
    async with running_worker(mesh, After, WorkerConfig(update_mailbox=True)):
        await mesh.ref(After).tell(Job(n=2), priority="high")
        await eventually(lambda: sorted(After.got) == [1, 2])
