"""Tell, ask, lanes, limits, errors and dead letters against a real nats-server."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from typing import ClassVar

import msgspec
import nats
import pytest

from actormesh import (
    Actor,
    AskTimeout,
    FullPolicy,
    MailboxConfig,
    MailboxConflict,
    MailboxFull,
    Mesh,
    Message,
    NoSuchActorType,
    PayloadTooLarge,
    RemoteError,
    WorkerConfig,
)
from actormesh._dlq import DeadLetters
from actormesh.testing import running_worker
from actormesh_counter import Counter, Get, Inc, Reset
from tests.actors import Crashy, Fail, Item, Ping, Point, Pool, Recorder, Resumer, Sum

pytestmark = pytest.mark.integration


@pytest.fixture(autouse=True)
def _reset_recorders() -> None:
    Recorder.reset()
    Crashy.events.clear()
    Resumer.events.clear()


async def eventually(predicate: object, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():  # type: ignore[operator]
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached in time")
        await asyncio.sleep(0.02)


async def stream_msgs(mesh: Mesh, actor_type: str) -> int:
    info = await mesh.js.stream_info(mesh.subjects.mailbox_stream(actor_type))
    return info.state.messages


async def test_tell_then_ask_round_trip(mesh: Mesh) -> None:
    async with running_worker(mesh, Counter):
        ref = mesh.ref(Counter, "user-42")
        receipt = await ref.tell(Inc(by=2))
        assert receipt.seq >= 1 and not receipt.duplicate
        await ref.tell(Inc(by=3))
        assert await ref.ask(Get()) == 5
        assert await ref.ask(Reset()) == 5
        assert await ref.ask(Get()) == 0
        # Keys are separate instances.
        assert await mesh.ref(Counter, "user-7").ask(Get()) == 0


async def test_typed_replies_struct_and_sync_handler(mesh: Mesh) -> None:
    async with running_worker(mesh, Recorder):
        ref = mesh.ref(Recorder, "k")
        reply = await ref.ask(Point(x=1, y=2))
        assert reply == Point(x=2, y=1)
        assert isinstance(reply, Point)
        assert await ref.ask(Sum(a=2, b=40)) == 42


async def test_typed_remote_error(mesh: Mesh) -> None:
    async with running_worker(mesh, Recorder):
        with pytest.raises(RemoteError) as info:
            await mesh.ref(Recorder, "k").ask(Fail(code="out_of_stock", retryable=False))
        err = info.value
        assert err.code == "out_of_stock"
        assert err.type == "HandlerError"
        assert "failing on purpose" in err.remote_message
        assert err.retryable is False
        # A failed ask is answered once, not retried behind the caller's back.
        await asyncio.sleep(0.3)
        assert Recorder.deliveries["out_of_stock"] == 1


async def test_ask_by_type_name_returns_plain_json(mesh: Mesh) -> None:
    async with running_worker(mesh, Counter):
        await mesh.ref("counter", "a").tell(b'{"type":"Inc","by":4}')
        assert await mesh.ref("counter", "a").ask(b'{"type":"Get"}') == 4


async def test_per_key_order_under_concurrency(mesh: Mesh) -> None:
    keys = [f"k{i}" for i in range(6)]
    async with running_worker(mesh, Recorder, WorkerConfig(concurrency=8, prefetch=64)):
        for n in range(60):
            for key in keys:
                await mesh.ref(Recorder, key).tell(
                    Item(id=f"{key}-{n}", n=n, sleep=0.001 * (n % 3))
                )
        await eventually(lambda: len(Recorder.log) == 60 * len(keys))
    for key in keys:
        seen = [n for k, _, n in Recorder.log if k == key]
        assert seen == list(range(60)), f"key {key} out of order"
    # Different keys did run concurrently.
    assert Recorder.max_running > 1


async def test_concurrency_limit_is_honoured(mesh: Mesh) -> None:
    async with running_worker(mesh, Pool, WorkerConfig(concurrency=4, prefetch=32)):
        ref = mesh.ref(Pool)
        await ref.tell_many([Item(id=str(i), sleep=0.05) for i in range(24)])
        await eventually(lambda: len(Pool.log) == 24)
    assert Pool.max_running == 4


class Tiny(Actor):
    actor_type = "tiny"
    mailbox: ClassVar[MailboxConfig] = MailboxConfig(max_msgs=5)

    async def ping(self, msg: Ping) -> str:
        return "pong"


async def test_mailbox_full_raises_and_drops_nothing(mesh: Mesh) -> None:
    await mesh.declare(Tiny)
    ref = mesh.ref(Tiny, "x")
    for _ in range(5):
        await ref.tell(Ping())
    with pytest.raises(MailboxFull) as info:
        await ref.tell(Ping())
    assert info.value.actor_type == "tiny"
    assert "maximum messages" in info.value.reason
    assert await stream_msgs(mesh, "tiny") == 5

    # The waiting policy gets through once a worker makes room.
    waiting = asyncio.create_task(ref.tell(Ping(), full_policy=FullPolicy(wait=20.0)))
    await asyncio.sleep(0.3)
    assert not waiting.done()
    async with running_worker(mesh, Tiny):
        receipt = await waiting
        assert receipt.seq == 6
        await eventually(lambda: waiting.done())


async def test_waiting_on_a_full_mailbox_gives_up_at_the_deadline(mesh: Mesh) -> None:
    await mesh.declare(Tiny)
    ref = mesh.ref(Tiny, "x")
    for _ in range(5):
        await ref.tell(Ping())
    with pytest.raises(MailboxFull) as info:
        await ref.tell(Ping(), full_policy=FullPolicy(wait=0.5))
    assert info.value.waited >= 0.5


async def test_poison_message_dead_lettered_after_max_deliver(mesh: Mesh) -> None:
    async with running_worker(mesh, Recorder) as worker:
        await mesh.ref(Recorder, "k").tell(Fail(code="poison"))
        await eventually(lambda: worker.dead_lettered == 1)
        assert Recorder.deliveries["poison"] == Recorder.mailbox.max_deliver == 3
        # Still serving.
        assert await mesh.ref(Recorder, "k").ask(Sum(a=1, b=1)) == 2
    assert await stream_msgs(mesh, "recorder") == 0
    letters = await DeadLetters(mesh).list("recorder")
    assert len(letters) == 1
    dl = letters[0]
    assert dl.error_type == "HandlerError"
    assert dl.error_code == "poison"
    assert dl.deliveries == 3
    assert dl.original_subject == mesh.subjects.mailbox("recorder", "k")
    assert json.loads(dl.payload) == {"type": "Fail", "code": "poison", "retryable": True}
    assert dl.worker == worker.id


async def test_non_retryable_failure_is_dead_lettered_at_once(mesh: Mesh) -> None:
    async with running_worker(mesh, Recorder) as worker:
        await mesh.ref(Recorder, "k").tell(Fail(code="fatal", retryable=False))
        await eventually(lambda: worker.dead_lettered == 1)
    assert Recorder.deliveries["fatal"] == 1


async def test_dead_letter_replay_and_purge(mesh: Mesh) -> None:
    async with running_worker(mesh, Counter) as worker:
        await mesh.publish(mesh.subjects.mailbox("counter", "r"), b'{"type":"Nope"}')
        await mesh.publish(mesh.subjects.mailbox("counter", "r"), b'{"type":"Nope"}')
        await eventually(lambda: worker.dead_lettered == 2)
        dlq = DeadLetters(mesh)
        letters = await dlq.list("counter")
        assert [d.error_code for d in letters] == ["bad_message", "bad_message"]
        await dlq.replay(letters[0].seq)
        await eventually(lambda: worker.dead_lettered == 3)
        assert len(await dlq.list("counter")) == 2  # replayed one came back, still bad
        assert await dlq.purge("counter") == 2
        assert await dlq.list("counter") == []


async def test_malformed_json_and_unknown_type(mesh: Mesh) -> None:
    async with running_worker(mesh, Counter) as worker:
        ref = mesh.ref("counter", "m")
        for bad, fragment in (
            (b"{not json", "malformed"),
            (b'{"type":"Dance"}', "Dance"),
            (b'{"by":1}', "type"),
            (b'{"type":"Inc","by":"x"}', "int"),
        ):
            with pytest.raises(RemoteError) as info:
                await ref.ask(bad, timeout=5)
            assert info.value.code == "bad_message"
            assert info.value.retryable is False
            assert fragment.lower() in info.value.remote_message.lower()
        await ref.tell(b"\xff\xfe garbage")
        await eventually(lambda: worker.dead_lettered == 5)
        # The worker kept running.
        await ref.tell(Inc(by=1))
        assert await ref.ask(Get()) == 1
    assert len(await DeadLetters(mesh).list("counter")) == 5


async def test_oversized_payload_is_refused_before_sending(mesh: Mesh) -> None:
    async with running_worker(mesh, Counter):
        ref = mesh.ref("counter", "big")
        max_payload = mesh.nc.max_payload
        # Small enough for the client's own (payload-only) check, too big with headers.
        payload = b'{"type":"Inc","by":1,"pad":"' + b"x" * (max_payload - 40) + b'"}'
        assert len(payload) <= max_payload
        with pytest.raises(PayloadTooLarge) as info:
            await ref.tell(payload)
        assert info.value.limit == max_payload
        with pytest.raises(PayloadTooLarge):
            await ref.tell(b"x" * (max_payload + 1))
        # The connection is intact.
        assert mesh.connected
        await ref.tell(Inc(by=2))
        assert await ref.ask(Get()) == 2


async def test_typed_ref_checks_the_mailbox_message_size(mesh: Mesh) -> None:
    class Small(Actor):
        actor_type = "small"
        mailbox: ClassVar[MailboxConfig] = MailboxConfig(max_msg_size=256)

        async def item(self, msg: Item) -> None:
            return None

    with pytest.raises(PayloadTooLarge) as info:
        await mesh.ref(Small, "a").tell(Item(id="x" * 400))
    assert info.value.limit == 256


async def test_no_such_actor_type(mesh: Mesh) -> None:
    with pytest.raises(NoSuchActorType) as info:
        await mesh.ref("ghost", "a").tell(b'{"type":"Boo"}')
    assert info.value.actor_type == "ghost"
    with pytest.raises(NoSuchActorType):
        await mesh.ref("ghost", "a").ask(b'{"type":"Boo"}', timeout=2)


async def test_conflicting_mailbox_is_refused_not_reconfigured(mesh: Mesh) -> None:
    await mesh.declare(Tiny)

    class Tiny2(Tiny):
        actor_type = "tiny"
        mailbox: ClassVar[MailboxConfig] = MailboxConfig(max_msgs=50)

    with pytest.raises(MailboxConflict) as info:
        await mesh.declare(Tiny2)
    assert info.value.differences["max_msgs"] == (5, 50)
    info_before = await mesh.js.stream_info(mesh.subjects.mailbox_stream("tiny"))
    assert info_before.config.max_msgs == 5
    await mesh.declare(Tiny2, update=True)
    after = await mesh.js.stream_info(mesh.subjects.mailbox_stream("tiny"))
    assert after.config.max_msgs == 50


async def test_duplicate_msg_id_is_stored_and_handled_once(mesh: Mesh) -> None:
    async with running_worker(mesh, Recorder) as worker:
        ref = mesh.ref(Recorder, "d")
        first = await ref.tell(Item(id="once"), msg_id="order-1")
        second = await ref.tell(Item(id="once"), msg_id="order-1")
        assert second.duplicate and second.seq == first.seq
        assert await ref.ask(Sum(a=0, b=0)) == 0  # lane is ordered: "once" ran before
        assert worker.handled == 2
    assert Recorder.deliveries == {"once": 1}
    assert Recorder.seqs == {"once": first.seq}  # ctx.seq: its place in the mailbox


async def test_expired_ask_is_not_run(mesh: Mesh) -> None:
    await mesh.declare(Recorder)
    ref = mesh.ref(Recorder, "late")
    with pytest.raises(AskTimeout):
        await ref.ask(Item(id="too-late"), timeout=0.3)
    async with running_worker(mesh, Recorder) as worker:
        await eventually(lambda: worker.expired == 1)
        assert await ref.ask(Item(id="on-time", n=7)) == 7
    assert "too-late" not in Recorder.deliveries
    letters = await DeadLetters(mesh).list("recorder")
    assert [d.error_code for d in letters] == ["deadline_exceeded"]


async def test_long_handler_sends_in_progress_and_runs_once(mesh: Mesh) -> None:
    class Patient(Recorder):
        actor_type = "patient"
        mailbox: ClassVar[MailboxConfig] = MailboxConfig(ack_wait=1.0, max_deliver=5)

    async with running_worker(mesh, Patient) as worker:
        assert await mesh.ref(Patient, "p").ask(Item(id="long", n=1, sleep=2.5), timeout=10) == 1
        assert worker.redelivered == 0
    assert Recorder.deliveries["long"] == 1


async def test_any_nats_client_can_tell_and_ask(mesh: Mesh, nats_url: str) -> None:
    """What `nats pub` does: plain JSON to the mailbox subject, reply inbox in a header."""
    async with running_worker(mesh, Counter):
        nc = await nats.connect(nats_url)
        try:
            js = nc.jetstream()
            subject = mesh.subjects.mailbox("counter", "user-42")
            await js.publish(subject, b'{"type":"Inc","by":2}')
            inbox = nc.new_inbox()
            sub = await nc.subscribe(inbox)
            await js.publish(subject, b'{"type":"Get"}', headers={"Am-Reply-To": inbox})
            reply = await sub.next_msg(timeout=5)
            assert json.loads(reply.data) == 2
        finally:
            await nc.close()


async def test_ask_timeout_when_no_worker(mesh: Mesh) -> None:
    await mesh.declare(Counter)
    with pytest.raises(AskTimeout) as info:
        await mesh.ref(Counter, "nobody").ask(Get(), timeout=0.3)
    assert info.value.timeout == 0.3


async def test_handler_restart_policy_and_intensity(mesh: Mesh) -> None:
    config = WorkerConfig(drain_grace=1.0)
    worker_cm = running_worker(mesh, Crashy, config)
    async with worker_cm as worker:
        ref = mesh.ref(Crashy, "c")
        assert await ref.ask(Ping()) == 1
        with pytest.raises(RemoteError):
            await ref.ask(Fail())
        # A fresh instance: its state starts over, and on_restart ran.
        assert await ref.ask(Ping()) == 1
        assert Crashy.events == ["start:c", "stop:c", "restart:c:RuntimeError"]
        for _ in range(3):
            with pytest.raises(RemoteError):
                await ref.ask(Fail())
        # The 4th failing message of key "c" within the period exceeds its intensity
        # 3: the key is parked, not the worker (containment); asks to it are refused.
        await eventually(lambda: worker.parked == 1)
        assert worker.status == "running"
        with pytest.raises(RemoteError) as parked:
            await ref.ask(Ping())
        assert parked.value.code == "key_parked"
        # Failures across more keys than max_failing_keys (10) within the period:
        # the process is failing, and the worker escalates.
        for i in range(10):
            with pytest.raises(RemoteError):
                await mesh.ref(Crashy, f"c{i}").ask(Fail())
        await eventually(lambda: worker.status in ("escalated", "stopped"))
        await asyncio.wait_for(worker._done.wait(), 10)
        assert worker.exit_code == 3
    events = await mesh.js.get_last_msg(
        mesh.subjects.events_stream, mesh.subjects.event("escalated", "crashy")
    )
    body = msgspec.json.decode(events.data or b"")
    assert body["kind"] == "escalated" and body["actor_type"] == "crashy"


async def test_resume_policy_keeps_state(mesh: Mesh) -> None:
    async with running_worker(mesh, Resumer):
        ref = mesh.ref(Resumer, "r")
        assert await ref.ask(Ping()) == 1
        with pytest.raises(RemoteError):
            await ref.ask(Fail())
        assert await ref.ask(Ping()) == 2
    assert Resumer.events == ["start:r", "stop:r"]


async def test_control_subject_stats_and_health(mesh: Mesh) -> None:
    async with running_worker(mesh, Counter) as worker:
        await mesh.ref(Counter, "s").ask(Get())
        reply = await mesh.nc.request(
            mesh.subjects.control(worker.id), b'{"op":"stats"}', timeout=5
        )
        body = json.loads(reply.data)
        assert body["ok"] and body["stats"]["handled"] == 1
        reply = await mesh.nc.request(
            mesh.subjects.control(worker.id), b'{"op":"health"}', timeout=5
        )
        health = json.loads(reply.data)["health"]
        assert health["status"] == "healthy"
        assert {c["name"] for c in health["components"]} == {"broker", "consumer", "event_loop"}
        reply = await mesh.nc.request(
            mesh.subjects.control(worker.id), b'{"op":"dance"}', timeout=5
        )
        assert json.loads(reply.data)["ok"] is False


async def test_drain_hands_back_buffered_messages(mesh: Mesh) -> None:
    async with running_worker(mesh, Pool, WorkerConfig(concurrency=1, prefetch=16)) as worker:
        await mesh.ref(Pool).tell_many([Item(id=str(i), sleep=0.2) for i in range(10)])
        await eventually(lambda: worker.in_flight == 1)
        await worker.drain(grace=0.0)
    handled = len(Pool.log)
    # Nothing lost: what was not handled is back in the mailbox.
    assert handled + await stream_msgs(mesh, "pool") == 10


@pytest.fixture
async def second_mesh(nats_url: str, mesh_prefix: str) -> AsyncIterator[Mesh]:
    m = await Mesh.connect(nats_url, prefix=mesh_prefix)
    yield m
    await m.close()


async def test_two_workers_share_one_mailbox(mesh: Mesh, second_mesh: Mesh) -> None:
    async with running_worker(mesh, Pool) as w1, running_worker(second_mesh, Pool) as w2:
        await mesh.ref(Pool).tell_many([Item(id=str(i), sleep=0.01) for i in range(200)])
        await eventually(lambda: w1.handled + w2.handled == 200)
    assert sorted(int(i) for _, i, _ in Pool.log) == list(range(200))


class Wrong(Message):
    pass


async def test_unknown_message_class_for_a_typed_ref(mesh: Mesh) -> None:
    async with running_worker(mesh, Counter):
        with pytest.raises(RemoteError) as info:
            await mesh.ref(Counter, "u").ask(Wrong())
        assert info.value.code == "bad_message"


async def test_headers_cross_the_wire_as_nats_py_writes_and_reads_them(
    mesh: Mesh, nats_url: str
) -> None:
    """The mesh's one-pass header code and a stock nats-py client agree on the wire."""
    from actormesh._nats import Client

    assert type(mesh.nc) is Client
    headers = {"Nats-Msg-Id": "m-1", "k": " padded\r\nvalue ", "unicode": "naïve ☃"}
    expected = {"Nats-Msg-Id": "m-1", "k": "padded  value", "unicode": "naïve ☃"}
    stock = await nats.connect(nats_url)
    try:
        subject = f"hdr.{mesh.subjects.prefix}"
        seen_by_stock = await stock.subscribe(subject)
        seen_by_mesh = await mesh.nc.subscribe(subject)
        await stock.flush()
        await mesh.nc.flush()
        await mesh.nc.publish(subject, b"from mesh", headers=headers)
        await mesh.nc.flush()
        await stock.publish(subject, b"from stock", headers=headers)
        await stock.flush()
        for sub in (seen_by_stock, seen_by_mesh):
            got = {}
            for _ in range(2):
                msg = await sub.next_msg(timeout=5)
                got[msg.data] = msg.headers
            assert got == {b"from mesh": expected, b"from stock": expected}
    finally:
        await stock.close()
