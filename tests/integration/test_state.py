"""Durable actor state on a real broker: load, compare-and-set, exactly-once
effect, restart means reload, passivation, deterministic ids of handler sends."""

from __future__ import annotations

import asyncio
from typing import Any

import msgspec
import pytest

from actormesh import Actor, ConfigError, MailboxConfig, Mesh, Message, WorkerConfig
from actormesh._state import RecentIds, StateEnvelope, StateStore, kv_key
from actormesh.testing import eventually, running_worker
from tests.actors_state import (
    Add,
    Forward,
    Ledger,
    OnceLedger,
    PassiveLedger,
    ResumingLedger,
    Tally,
    Total,
)

pytestmark = pytest.mark.integration


@pytest.fixture(autouse=True)
def _reset() -> None:
    Ledger.starts.clear()
    Ledger.stops.clear()
    Ledger.runs.clear()


async def stored(mesh: Mesh, actor_type: str, key: str) -> tuple[Tally, StateEnvelope]:
    kv = await mesh.js.key_value(mesh.subjects.state_bucket(actor_type))
    entry = await kv.get(kv_key(key))
    envelope = msgspec.json.decode(entry.value or b"", type=StateEnvelope)
    return msgspec.json.decode(envelope.state, type=Tally), envelope


async def test_state_survives_the_worker(mesh: Mesh) -> None:
    ref = mesh.ref(Ledger, "acct:1")  # ":" is escaped in the KV key
    async with running_worker(mesh, Ledger):
        for _ in range(20):
            await ref.tell(Add(by=2))
        assert await ref.ask(Total(), timeout=10) == 40
    state, envelope = await stored(mesh, "ledger", "acct:1")
    assert state.n == 40
    assert envelope.floor + len(envelope.applied) > 0
    # A new worker (a new process would do the same) loads it back.
    async with running_worker(mesh, Ledger):
        assert await ref.ask(Total(), timeout=10) == 40
        await ref.tell(Add(by=1))
        assert await ref.ask(Total(), timeout=10) == 41


async def test_a_message_already_applied_is_acked_without_running(mesh: Mesh) -> None:
    """A crash between the commit and the ack: simulated by dropping the first ack,
    so the broker delivers the message again after ack_wait (2 s here)."""
    ref = mesh.ref(Ledger, "k")
    async with running_worker(mesh, Ledger) as worker:
        settler = worker._settler
        real_ack = settler.ack
        dropped: list[int] = []

        async def lose_first_ack(msg: object) -> None:
            if not dropped:
                dropped.append(1)
                settler._release(msg)  # type: ignore[arg-type]
                return
            await real_ack(msg)  # type: ignore[arg-type]

        settler.ack = lose_first_ack  # type: ignore[method-assign]
        await ref.tell(Add(by=5))
        await eventually(lambda: worker._handling.skipped == 1)
        settler.ack = real_ack  # type: ignore[method-assign]
        assert await ref.ask(Total(), timeout=10) == 5
    state, _ = await stored(mesh, "ledger", "k")
    assert state.n == 5


async def test_restart_reloads_the_committed_state(mesh: Mesh) -> None:
    ref = mesh.ref(Ledger, "r")
    config = WorkerConfig()
    async with running_worker(mesh, Ledger, config) as worker:
        await ref.tell(Add(by=10))
        assert await ref.ask(Total(), timeout=10) == 10
        # Changes the state to 11, then raises: not committed; the instance restarts
        # from 10. The message is retried (max_deliver 5) and fails every time.
        await ref.tell(Add(by=1, fail=True))
        await eventually(lambda: worker.dead_lettered == 1)
        assert await ref.ask(Total(), timeout=10) == 10
        assert worker.restarts >= 1
    state, _ = await stored(mesh, "ledger", "r")
    assert state.n == 10


async def test_resume_keeps_the_memory(mesh: Mesh) -> None:
    ref = mesh.ref(ResumingLedger, "r")
    async with running_worker(mesh, ResumingLedger) as worker:
        await ref.tell(Add(by=10))
        await ref.tell(Add(by=1, fail=True))
        await eventually(lambda: worker.dead_lettered == 1)
        # Each of the 5 failing deliveries added 1 to the live instance's state.
        assert await ref.ask(Total(), timeout=10) == 15
        await ref.tell(Add(by=0))  # a change-free message commits nothing
        await ref.tell(Add(by=1))  # this one commits the memory as it is
        assert await ref.ask(Total(), timeout=10) == 16
    state, _ = await stored(mesh, "ledger-resume", "r")
    assert state.n == 16


async def test_resume_keeps_the_memory_of_a_batch(mesh: Mesh) -> None:
    """Both messages wait before the worker starts, so they run as one batch: the
    failure commits the +10 before it and leaves the memory to supervision."""
    ref = mesh.ref(ResumingLedger, "rb")
    await mesh.declare(ResumingLedger)
    await ref.tell_many([Add(by=10), Add(by=1, fail=True)])
    async with running_worker(mesh, ResumingLedger) as worker:
        await eventually(lambda: worker.dead_lettered == 1)
        assert await ref.ask(Total(), timeout=10) == 15
    state, _ = await stored(mesh, "ledger-resume", "rb")
    # Resume made the memory the truth: the next message that succeeded committed it.
    assert state.n == 15


async def test_two_workers_on_one_key_lose_no_update(mesh: Mesh) -> None:
    """Two workers forced onto one unpartitioned mailbox and one key: the
    compare-and-set reloads and re-runs, every increment is counted once."""
    ref = mesh.ref(Ledger, "shared")
    config = WorkerConfig(prefetch=32)
    async with running_worker(mesh, Ledger, config) as a, running_worker(mesh, Ledger, config) as b:
        await ref.tell_many([Add(by=1) for _ in range(600)])
        await eventually(lambda: a.handled + b.handled >= 600, timeout=60)
        assert a.handled > 0 and b.handled > 0, "both workers took messages"
        stores = [w._handling.store for w in (a, b)]
        assert sum(s.conflicts for s in stores if s is not None) > 0, "they did conflict"
    state, _ = await stored(mesh, "ledger", "shared")
    assert state.n == 600


async def test_passivation_keeps_state_and_bounds_instances(mesh: Mesh) -> None:
    async with running_worker(mesh, PassiveLedger) as worker:
        for key in ("a", "b", "c", "d", "e"):
            await mesh.ref(PassiveLedger, key).tell(Add(by=3))
        await eventually(lambda: worker.handled >= 5)
        # max_instances=3: at no point more than 3 live, the oldest went first.
        assert len(worker._handling.instances) <= 3
        assert "a" in Ledger.stops
        # idle_after=0.2 s: every instance is passivated when idle.
        await eventually(lambda: not worker._handling.instances)
        assert worker.passivated == 5
        # The next message activates the key again, with its state loaded.
        assert await mesh.ref(PassiveLedger, "a").ask(Total(), timeout=10) == 3
        assert Ledger.starts.count("a") == 2


async def test_handler_sends_are_deduplicated_when_it_runs_again(mesh: Mesh) -> None:
    """`Forward` tells the sink, then fails twice: it runs three times, the
    target mailbox stores its tell once (the same derived Nats-Msg-Id)."""
    sink = mesh.ref(Ledger, "sink")
    async with running_worker(mesh, Ledger) as worker:
        await mesh.ref(Ledger, "src").tell(Forward(by=7, fail_times=2))
        await eventually(lambda: sum(Ledger.runs.values()) == 3)
        await eventually(lambda: worker.handled >= 2)
        assert await sink.ask(Total(), timeout=10) == 7
    info = await mesh.js.stream_info(mesh.subjects.mailbox_stream("ledger"))
    # Forward, one Add to the sink, the two asks; the repeated tells were dropped.
    assert info.state.messages <= 3


def test_a_short_duplicate_window_is_refused() -> None:
    class Hasty(Actor):
        actor_type = "hasty"
        mailbox = MailboxConfig(duplicate_window=10.0, ack_wait=30.0, max_deliver=3)
        state: Tally

        async def add(self, msg: Add) -> None: ...

    from actormesh._actor import spec_of

    with pytest.raises(ConfigError, match=r"duplicate_window 10s .* at least 60"):
        spec_of(Hasty)


class NoDefault(msgspec.Struct):
    n: int


class Ping(Message):
    pass


def test_state_must_be_a_struct_with_defaults() -> None:
    from actormesh._actor import spec_of

    class Bad(Actor):
        actor_type = "bad-state"
        state: NoDefault

        async def add(self, msg: Add) -> None: ...

    with pytest.raises(ConfigError, match="no arguments"):
        spec_of(Bad)

    class Keyless(Actor):
        actor_type = "keyless-state"
        keyless = True
        state: Tally

        async def ping(self, msg: Ping) -> None: ...

    with pytest.raises(ConfigError, match="keyless"):
        spec_of(Keyless)


async def test_queued_messages_of_a_key_commit_together(mesh: Mesh) -> None:
    """A burst to one key: the worker runs what waits in the key's lane and writes
    the state once for all of it; a failing message in the middle does not take
    the changes of the others with it."""
    ref = mesh.ref(Ledger, "hot")
    burst = [Add(by=1) for _ in range(300)]
    burst[150] = Add(by=1000, fail=True)  # fails on every delivery: dead-lettered
    async with running_worker(mesh, Ledger) as worker:
        await ref.tell_many(burst)
        await eventually(lambda: worker.handled >= 299 and worker.dead_lettered == 1, timeout=60)
        store = worker._handling.store
        assert store is not None
        assert store.commits < 299, "several messages per commit"
        assert await ref.ask(Total(), timeout=10) == 299
    state, _ = await stored(mesh, "ledger", "hot")
    assert state.n == 299


async def test_a_delivery_past_max_deliver_already_applied_is_acked(mesh: Mesh) -> None:
    """Committed on its only delivery, then not acked (a crash, simulated by dropping
    the ack): delivered again past max_deliver, it is acked, not dead-lettered."""
    ref = mesh.ref(OnceLedger, "k")
    async with running_worker(mesh, OnceLedger) as worker:
        settler = worker._settler
        real_ack = settler.ack
        acks: list[str] = []

        async def lose_first_ack(msg: Any) -> None:
            acks.append(msg.reply)
            if len(acks) == 1:
                settler._release(msg)
                return
            await real_ack(msg)

        settler.ack = lose_first_ack  # type: ignore[method-assign]
        await ref.tell(Add(by=5))
        # The second delivery comes after ack_wait (2 s) and is settled.
        await eventually(lambda: len(acks) >= 2 and not settler.held, timeout=30)
        settler.ack = real_ack  # type: ignore[method-assign]
        assert ".ledger_once.2." in acks[1], "the second delivery was acked"
        assert worker.dead_lettered == 0
        assert await ref.ask(Total(), timeout=10) == 5


async def _store_again(mesh: Mesh, ref: Any, message: Message, msg_id: str) -> None:
    """Have the mailbox store a second copy of a message under its id, as nats-server
    has been seen to do across a leader change: the duplicate window is shortened
    for a moment, so the resend is not dropped."""
    name = mesh.subjects.mailbox_stream(ref.actor_type)
    config = (await mesh.js.stream_info(name)).config
    window = config.duplicate_window
    config.duplicate_window = 0.2
    await mesh.js.update_stream(config)
    await asyncio.sleep(0.5)
    receipt = await ref.tell(message, msg_id=msg_id)
    assert not receipt.duplicate, "stored a second time"
    config.duplicate_window = window
    await mesh.js.update_stream(config)


@pytest.fixture
def keep_ids(monkeypatch: pytest.MonkeyPatch) -> None:
    """State stores keep message ids as on a replicated mailbox (on one server they
    keep none: there a leader change cannot store a resend twice)."""
    ensure = StateStore.ensure

    async def ensure_keeping_ids(self: StateStore) -> None:
        await ensure(self)
        self.recent = RecentIds(120.0)

    monkeypatch.setattr(StateStore, "ensure", ensure_keeping_ids)


@pytest.mark.usefixtures("keep_ids")
async def test_a_message_the_broker_stored_twice_is_applied_once(mesh: Mesh) -> None:
    ref = mesh.ref(Ledger, "twice")
    async with running_worker(mesh, Ledger) as worker:
        store = worker._handling.store
        assert store is not None
        await ref.tell(Add(by=5), msg_id="deposit-1")
        assert await ref.ask(Total(), timeout=10) == 5
        await _store_again(mesh, ref, Add(by=5), "deposit-1")
        await eventually(lambda: store.recent.stored_twice == 1)
        assert await ref.ask(Total(), timeout=10) == 5
        assert worker._handling.skipped == 1
        assert worker.dead_lettered == 0
    state, _ = await stored(mesh, "ledger", "twice")
    assert state.n == 5
    info = await mesh.js.stream_info(mesh.subjects.mailbox_stream("ledger"))
    assert info.state.messages == 0, "both copies were acked"


@pytest.mark.usefixtures("keep_ids")
async def test_both_copies_in_one_batch_apply_once(mesh: Mesh) -> None:
    """Both copies are queued before the worker starts, so they usually reach the
    key's lane together and one batch holds both: it runs the first only."""
    ref = mesh.ref(Ledger, "batch")
    await mesh.declare(Ledger)
    await ref.tell(Add(by=1), msg_id="a-1")
    await ref.tell(Add(by=7), msg_id="a-2")
    await _store_again(mesh, ref, Add(by=7), "a-2")
    await ref.tell(Add(by=1), msg_id="a-3")
    async with running_worker(mesh, Ledger) as worker:
        assert await ref.ask(Total(), timeout=10) == 9
        assert worker._handling.skipped == 1
    state, _ = await stored(mesh, "ledger", "batch")
    assert state.n == 9
