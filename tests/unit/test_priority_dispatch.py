"""Priority levels in the dispatcher, without a broker: the pick rule (strict
priority, a passed-over level's turn after `fairness` picks), an urgent message
ahead of queued ones, per-key order within a level."""

from __future__ import annotations

import asyncio
import itertools

import pytest
from nats.aio.msg import Msg

from actormesh import ConfigError, MailboxConfig
from actormesh._subjects import Subjects
from actormesh._worker._priority import LevelPick, PriorityDispatcher, level_bases
from actormesh._worker._settle import Settler

BASES = level_bases(Subjects("m"), "t")
HIGH, NORMAL, LOW = range(3)


def a_msg(level: int, key: str, n: int) -> Msg:
    return Msg(
        _client=None,  # type: ignore[arg-type]
        subject=BASES[level] + key,
        reply=f"$JS.ACK.S.C.1.{n}.{n}.1.0",
        data=b"",
    )


class Recorder:
    def __init__(self, settler: Settler) -> None:
        self.settler = settler
        self.ran: list[tuple[str, int]] = []
        self.gate = asyncio.Event()
        self.gate.set()

    async def __call__(self, key: str, msg: Msg) -> None:
        await self.gate.wait()
        self.ran.append((key, int(msg.reply.split(".")[5])))
        self.settler._release(msg)


def a_dispatcher(
    *, keyless: bool, concurrency: int = 1, fairness: int = 8
) -> tuple[PriorityDispatcher, Recorder, Settler]:
    settler = Settler(ack_sync=False, ack_timeout=1.0, ack_wait=30.0)
    recorder = Recorder(settler)
    dispatcher = PriorityDispatcher(
        bases=BASES,
        fairness=fairness,
        keyless=keyless,
        concurrency=concurrency,
        settler=settler,
        process=recorder,
        accepting=lambda: True,
    )
    return dispatcher, recorder, settler


async def settled(settler: Settler) -> None:
    async with asyncio.timeout(5):
        await settler.idle.wait()


async def turns(n: int = 20) -> None:
    for _ in range(n):
        await asyncio.sleep(0)


def picks(rule: LevelPick, n: int) -> list[int]:
    return [rule.pick() for _ in range(n)]


def test_a_lone_level_is_always_picked() -> None:
    rule = LevelPick(3, fairness=8)
    rule.waiting[LOW] = 1
    assert picks(rule, 50) == [LOW] * 50


def test_strict_priority_until_a_waiting_level_was_passed_over_fairness_times() -> None:
    rule = LevelPick(3, fairness=8)
    rule.waiting[:] = [1, 0, 1]  # high and low always have work (counts not spent here)
    got = picks(rule, 27)
    # 8 highs, then the low's turn, again and again.
    assert got == ([HIGH] * 8 + [LOW]) * 3


def test_every_busy_level_gets_its_share_none_starves() -> None:
    rule = LevelPick(3, fairness=8)
    rule.waiting[:] = [1, 1, 1]
    got = picks(rule, 1000)
    assert (got.count(HIGH), got.count(NORMAL), got.count(LOW)) == (800, 100, 100)
    # The stated bound: a waiting level waits at most `fairness + 2` picks.
    lows = [i for i, level in enumerate(got) if level == LOW]
    assert max(b - a for a, b in itertools.pairwise(lows)) <= 10


def test_the_fairness_setting_changes_the_ratio() -> None:
    rule = LevelPick(3, fairness=2)
    rule.waiting[:] = [1, 0, 1]
    assert picks(rule, 9) == [HIGH, HIGH, LOW] * 3


async def test_an_urgent_message_runs_before_the_queued_backlog() -> None:
    dispatcher, recorder, settler = a_dispatcher(keyless=True, concurrency=1)
    recorder.gate.clear()
    dispatcher.dispatch(a_msg(NORMAL, "_", 0))
    await turns()  # the first one is running
    for n in range(1, 100):
        dispatcher.dispatch(a_msg(NORMAL, "_", n))
    dispatcher.on_msg(HIGH)(a_msg(HIGH, "_", 1000))
    await turns()
    recorder.gate.set()
    await settled(settler)
    order = [n for _, n in recorder.ran]
    # The first normal was already running; the urgent one comes next.
    assert order[:2] == [0, 1000]
    assert sorted(order) == [*range(100), 1000]
    assert not dispatcher._ready and dispatcher._lanes == {}


async def test_lows_are_served_while_highs_keep_coming() -> None:
    dispatcher, recorder, settler = a_dispatcher(keyless=True, concurrency=1, fairness=4)
    recorder.gate.clear()
    dispatcher.on_msg(LOW)(a_msg(LOW, "_", 0))
    await turns()  # the first one is running
    for n in range(1, 50):
        dispatcher.on_msg(LOW)(a_msg(LOW, "_", n))
    for n in range(100, 200):
        dispatcher.on_msg(HIGH)(a_msg(HIGH, "_", n))
    await turns()
    recorder.gate.set()
    await settled(settler)
    order = [n for _, n in recorder.ran]
    first_60 = order[1:61]  # after the low that was already running
    assert sum(1 for n in first_60 if n < 100) == 12  # one in five
    assert sorted(order) == [*range(50), *range(100, 200)]


async def test_a_key_keeps_its_order_within_a_level_urgent_first() -> None:
    dispatcher, recorder, settler = a_dispatcher(keyless=False, concurrency=1)
    recorder.gate.clear()
    dispatcher.dispatch(a_msg(NORMAL, "k", 0))
    await turns()  # the first one is running
    for n in range(1, 6):
        dispatcher.dispatch(a_msg(NORMAL, "k", n))
    dispatcher.on_msg(LOW)(a_msg(LOW, "k", 20))
    dispatcher.on_msg(HIGH)(a_msg(HIGH, "k", 10))
    dispatcher.on_msg(HIGH)(a_msg(HIGH, "k", 11))
    await turns()
    recorder.gate.set()
    await settled(settler)
    assert [n for _, n in recorder.ran] == [0, 10, 11, 1, 2, 3, 4, 5, 20]
    assert {k for k, _ in recorder.ran} == {"k"}
    assert dispatcher._lanes == {} and not dispatcher._ready


async def test_a_waiting_key_is_promoted_by_an_urgent_message() -> None:
    dispatcher, recorder, settler = a_dispatcher(keyless=False, concurrency=1)
    recorder.gate.clear()
    dispatcher.dispatch(a_msg(NORMAL, "busy", 0))  # takes the only runner
    await turns()
    dispatcher.on_msg(LOW)(a_msg(LOW, "a", 1))  # key a waits at low ...
    dispatcher.dispatch(a_msg(NORMAL, "b", 2))
    dispatcher.on_msg(HIGH)(a_msg(HIGH, "a", 3))  # ... until this arrives for it
    await turns()
    recorder.gate.set()
    await settled(settler)
    assert recorder.ran == [("busy", 0), ("a", 3), ("a", 1), ("b", 2)]
    assert dispatcher._lanes == {} and not dispatcher._ready


async def test_the_concurrency_bound_holds_across_levels() -> None:
    dispatcher, _recorder, settler = a_dispatcher(keyless=False, concurrency=3)
    running = 0
    most = 0
    release = asyncio.Event()

    async def process(key: str, msg: Msg) -> None:
        nonlocal running, most
        running += 1
        most = max(most, running)
        await release.wait()
        running -= 1
        settler._release(msg)

    dispatcher._process = process
    for n in range(30):
        dispatcher.on_msg(n % 3)(a_msg(n % 3, f"k{n}", n))
    await turns(50)
    assert most == 3
    release.set()
    await settled(settler)
    assert dispatcher._lanes == {} and not dispatcher._ready


def test_priorities_refuse_partitions() -> None:
    with pytest.raises(ConfigError, match="priorities or partitions"):
        MailboxConfig(priorities=True, partitions=2)
    with pytest.raises(ConfigError, match="priority_fairness"):
        MailboxConfig(priorities=True, priority_fairness=0)


def test_levels_have_subjects_and_consumers_of_their_own() -> None:
    s = Subjects("mesh")
    assert s.priority_mailbox("counter", "high", "user-42") == "mesh.mbox.counter.high.user-42"
    assert s.consumer("counter") == "counter"
    assert s.consumer("my-type", level="low") == "my_type_low"
    dispatcher, _, _ = a_dispatcher(keyless=False)
    assert dispatcher.key_of(a_msg(HIGH, "user-42", 1)) == "user-42"
    assert dispatcher.key_of(a_msg(NORMAL, "high", 1)) == "high"  # a key named high
    assert dispatcher.level_of(a_msg(NORMAL, "high", 1)) == NORMAL


def test_broker_permissions_let_a_worker_pull_every_level() -> None:
    from actormesh._tools._authz import ActorFacts, MeshFacts, UsersFile, UserSpec, compile_config

    mesh = MeshFacts(
        prefix="mesh",
        children={"jobs": "jobs"},
        actors={"jobs": ActorFacts(actor_type="jobs", keyless=True, priorities=True)},
    )
    users = UsersFile(users=[UserSpec(name="jobs", role="worker", child="jobs")])
    perm = compile_config(users, mesh, {}).permissions["jobs"]
    for consumer in ("jobs", "jobs_high", "jobs_low"):
        assert f"$JS.API.CONSUMER.MSG.NEXT.MESH_MBOX_JOBS.{consumer}" in perm.publish
