"""The sending side against a real nats-server: PubAcks and their typed errors,
deadlines, the window of publishes in flight, duplicates and size checks."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import ClassVar

import pytest
from nats.aio.msg import Msg

from actormesh import (
    Actor,
    ActorMeshError,
    AskTimeout,
    BrokerUnavailable,
    FullPolicy,
    MailboxConfig,
    MailboxFull,
    Mesh,
    NoSuchActorType,
    PayloadTooLarge,
)
from actormesh._nats import Client
from actormesh.testing import running_worker
from tests.actors import Item, Ping

pytestmark = pytest.mark.integration


class Sink(Actor):
    actor_type = "sink"
    mailbox: ClassVar[MailboxConfig] = MailboxConfig(max_msgs=20, max_msg_size=512)

    async def item(self, msg: Item) -> None:
        return None

    async def ping(self, msg: Ping) -> str:
        return "pong"


class Tiny(Actor):
    actor_type = "tiny"
    mailbox: ClassVar[MailboxConfig] = MailboxConfig(max_msgs=2)

    async def ping(self, msg: Ping) -> str:
        return "pong"


@pytest.fixture
async def silent(mesh: Mesh) -> AsyncIterator[str]:
    """A mailbox subject with a core subscriber on it and no stream: a publish is
    delivered but never acknowledged (what a broker that stops answering does)."""
    sub = await mesh.nc.subscribe(mesh.subjects.mailbox("silent", "*"))
    await mesh.nc.flush()
    try:
        yield mesh.subjects.mailbox("silent", "k")
    finally:
        await sub.unsubscribe()


async def _mesh(url: str, prefix: str, *, publish_timeout: float, window: int) -> Mesh:
    """A Mesh with a window of `window` publishes in flight (`connect` keeps the default)."""
    nc = Client()
    await nc.connect(url)
    m = Mesh(
        nc,
        prefix=prefix,
        name="sender",
        publish_timeout=publish_timeout,
        max_pending_publishes=window,
    )
    await m.start()
    return m


async def test_no_puback_in_time_is_broker_unavailable(
    nats_url: str, mesh_prefix: str, mesh: Mesh, silent: str
) -> None:
    quick = await _mesh(nats_url, mesh_prefix, publish_timeout=0.2, window=1)
    try:
        ref = quick.ref("silent", "k")
        with pytest.raises(BrokerUnavailable, match="no PubAck") as info:
            await ref.tell(b'{"type":"Ping"}')
        assert info.value.retryable
        with pytest.raises(BrokerUnavailable):
            await ref.tell_many([b'{"type":"Ping"}'] * 3)
        # The timed-out publishes gave their place in the window back.
        await quick.declare(Sink)
        receipt = await quick.ref(Sink, "a").tell(Item(id="1"))
        assert receipt.seq == 1
    finally:
        await quick.nc.close()


async def test_each_publish_keeps_its_own_deadline(mesh: Mesh, silent: str) -> None:
    slow = asyncio.create_task(mesh.publish(silent, b"{}", timeout=1.0))
    fast = asyncio.create_task(mesh.publish(silent, b"{}", timeout=0.1))
    with pytest.raises(BrokerUnavailable, match=r"within 0\.1s"):
        await fast
    assert not slow.done()
    with pytest.raises(BrokerUnavailable, match="within 1s"):
        await slow


async def test_the_window_bounds_publishes_in_flight(
    nats_url: str, mesh_prefix: str, mesh: Mesh, silent: str
) -> None:
    narrow = await _mesh(nats_url, mesh_prefix, publish_timeout=5.0, window=2)
    try:
        held = [asyncio.create_task(narrow.publish(silent, b"{}")) for _ in range(2)]
        await asyncio.sleep(0.1)
        await narrow.declare(Sink)
        waiting = asyncio.create_task(narrow.ref(Sink, "a").tell(Item(id="w")))
        await asyncio.sleep(0.2)
        assert not waiting.done()  # no room while two publishes await their PubAck
        held[0].cancel()  # a sender that gives up makes room
        receipt = await asyncio.wait_for(waiting, 5.0)
        assert receipt.seq == 1
        held[1].cancel()
        # Many more senders than room: all get through, each once.
        receipts = await asyncio.gather(
            *(narrow.ref(Sink, "a").tell(Item(id=str(i))) for i in range(12))
        )
        assert sorted(r.seq for r in receipts) == list(range(2, 14))
    finally:
        await narrow.nc.close()


async def test_duplicates_are_receipted_as_such(mesh: Mesh) -> None:
    await mesh.declare(Sink)
    ref = mesh.ref(Sink, "d")
    first = await ref.tell(Item(id="x"), msg_id="same")
    again = await ref.tell(Item(id="x"), msg_id="same")
    assert not first.duplicate
    assert again.duplicate and again.seq == first.seq and again.stream == first.stream
    raw = await mesh.publish(
        ref.subject, b'{"type":"Item","id":"x"}', headers={"Nats-Msg-Id": "same"}
    )
    assert raw.duplicate and raw.seq == first.seq
    # tell_many gives each message its own id: none is a duplicate.
    many = await ref.tell_many([Item(id="x")] * 5, window=2)
    assert [r.seq for r in many] == list(range(first.seq + 1, first.seq + 6))
    assert not any(r.duplicate for r in many)


async def test_headers_count_toward_the_size_limits(mesh: Mesh) -> None:
    await mesh.declare(Sink)
    ref = mesh.ref(Sink, "s")
    payload = b'{"type":"Item","id":"' + b"x" * 400 + b'"}'
    assert len(payload) < 512
    with pytest.raises(PayloadTooLarge) as info:
        await ref.tell(payload, headers={"X-Pad": "y" * 100})
    assert info.value.limit == 512 and info.value.size > 512
    with pytest.raises(PayloadTooLarge):
        await ref.tell_many([payload + b" " * 60])
    big = mesh.nc.max_payload
    with pytest.raises(PayloadTooLarge) as server:
        await mesh.ref("sink", "s").tell(b"{}", headers={"X-Pad": "y" * big})
    assert server.value.limit == big
    assert mesh.connected
    assert (await ref.tell(payload)).seq == 1  # nothing refused was stored


async def test_the_stream_refusals_are_typed(mesh: Mesh) -> None:
    await mesh.declare(Sink)
    # A ref by name has no client-side mailbox limit: the stream refuses instead.
    untyped = mesh.ref("sink", "s")
    with pytest.raises(PayloadTooLarge, match="stream limit"):
        await untyped.tell(b'{"type":"Item","id":"' + b"x" * 600 + b'"}')
    with pytest.raises(ActorMeshError, match="wrong last sequence") as info:
        await mesh.publish(untyped.subject, b"{}", headers={"Nats-Expected-Last-Sequence": "999"})
    assert not info.value.retryable
    receipts = await untyped.tell_many([b'{"type":"Ping"}'] * 20)
    assert len(receipts) == 20
    with pytest.raises(MailboxFull):
        await untyped.tell(b'{"type":"Ping"}')
    with pytest.raises(MailboxFull):
        await mesh.ref(Sink, "s").tell_many([Ping()])
    with pytest.raises(NoSuchActorType):
        await mesh.ref("nothing", "s").tell_many([b"{}"])


async def test_tell_many_waits_out_a_full_mailbox(mesh: Mesh) -> None:
    await mesh.declare(Sink)
    ref = mesh.ref(Sink, "f")
    sending = asyncio.create_task(ref.tell_many([Ping()] * 30, full_policy=FullPolicy(wait=20)))
    await asyncio.sleep(0.3)
    assert not sending.done()  # 20 stored, the rest waiting for room
    async with running_worker(mesh, Sink):
        receipts = await asyncio.wait_for(sending, 20.0)
    assert len(receipts) == 30 and len({r.seq for r in receipts}) == 30


async def test_close_ends_the_waits(nats_url: str, mesh_prefix: str, silent: str) -> None:
    m = await Mesh.connect(nats_url, prefix=mesh_prefix)
    waiting = asyncio.create_task(m.publish(silent, b"{}"))
    await asyncio.sleep(0.1)
    await m.close()
    with pytest.raises(asyncio.CancelledError):
        await waiting


async def test_an_ask_ends_at_its_deadline_whatever_it_waits_for(
    nats_url: str, mesh_prefix: str, mesh: Mesh, silent: str
) -> None:
    patient = await _mesh(nats_url, mesh_prefix, publish_timeout=5.0, window=1)
    patient.full_policy = FullPolicy(wait=30.0)
    try:
        # No PubAck: an ask times out as an ask (not as a broker failure).
        with pytest.raises(AskTimeout):
            await patient.ref("silent", "k").ask(b'{"type":"Ping"}', timeout=0.2)
        # A full mailbox waited on longer than the ask may live: the ask's deadline wins.
        await patient.declare(Tiny)
        tiny = patient.ref(Tiny, "t")
        for _ in range(2):
            await tiny.tell(Ping())
        with pytest.raises(AskTimeout):
            await tiny.ask(Ping(), timeout=0.3)
        # No room in the window before the deadline: the same.
        held = asyncio.create_task(patient.publish(silent, b"{}"))
        await asyncio.sleep(0.05)
        with pytest.raises(AskTimeout):
            await tiny.ask(Ping(), timeout=0.2)
        held.cancel()
        async with running_worker(patient, Tiny):
            assert await tiny.ask(Ping(), timeout=10.0) == "pong"
    finally:
        await patient.nc.close()


async def test_asks_of_many_timeouts_each_expire(mesh: Mesh, silent: str) -> None:
    ref = mesh.ref("silent", "k")
    timeouts = [0.6 - 0.04 * i for i in range(12)]  # more values than queues kept
    asks = [asyncio.create_task(ref.ask(b'{"type":"Ping"}', timeout=t)) for t in timeouts]
    done_order: list[int] = []
    for i, task in enumerate(asks):
        task.add_done_callback(lambda _t, i=i: done_order.append(i))
    results = await asyncio.gather(*asks, return_exceptions=True)
    assert all(isinstance(r, AskTimeout) for r in results)
    assert done_order[0] == 11 and done_order[-1] == 0  # shortest first, longest last


# -- a durable request's PubAck: checked beside the wait for the reply ------------------


async def test_an_ask_waits_out_a_full_mailbox_and_is_answered(
    nats_url: str, mesh_prefix: str, mesh: Mesh
) -> None:
    patient = await _mesh(nats_url, mesh_prefix, publish_timeout=5.0, window=8)
    patient.full_policy = FullPolicy(wait=30.0)
    refused = 0
    parse = patient._parse_puback

    def counted(*args: object, **kwargs: object) -> object:
        nonlocal refused
        try:
            return parse(*args, **kwargs)  # type: ignore[arg-type]
        except MailboxFull:
            refused += 1
            raise

    patient._parse_puback = counted  # type: ignore[assignment,method-assign]
    try:
        await patient.declare(Tiny)
        tiny = patient.ref(Tiny, "t")
        for _ in range(2):
            await tiny.tell(Ping())
        asking = asyncio.create_task(tiny.ask(Ping(), timeout=20.0))
        await asyncio.sleep(0.3)
        # Refused (the mailbox is full) and waiting to try again, not failed.
        assert not asking.done()
        assert refused >= 1
        async with running_worker(patient, Tiny):
            assert await asking == "pong"
    finally:
        await patient.nc.close()


class _StandIn:
    """A core subscriber on a mailbox subject standing in for its stream, to order
    the PubAck and the reply as a broker seldom does: replies to a request through
    its `Am-Reply-To` header, and acks (or not) the copies it is sent."""

    def __init__(self, mesh: Mesh, actor_type: str, *, ack_from: int | None) -> None:
        self.mesh, self.actor_type, self.ack_from = mesh, actor_type, ack_from
        self.copies: list[str] = []

    async def __aenter__(self) -> _StandIn:
        nc = self.mesh.nc
        self.sub = await nc.subscribe(self.mesh.subjects.mailbox(self.actor_type, "*"), cb=self._on)
        await nc.flush()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.sub.unsubscribe()

    async def _on(self, msg: Msg) -> None:
        headers = msg.headers or {}
        self.copies.append(headers.get("Nats-Msg-Id", ""))
        if self.ack_from is None:
            await self.mesh.nc.publish(headers["Am-Reply-To"], b'"pong"')
            return  # stored, but the PubAck is lost
        if len(self.copies) < self.ack_from:
            return  # this copy is lost, and its PubAck with it
        # The reply first, the PubAck after it: the order the sender must survive.
        await self.mesh.nc.publish(headers["Am-Reply-To"], b'"pong"')
        await self.mesh.nc.publish(msg.reply, b'{"stream":"STANDIN","seq":1}')


async def test_a_reply_answers_an_ask_whose_puback_is_lost(mesh: Mesh) -> None:
    # The reply proves the request was stored: the ask does not wait for the PubAck.
    async with _StandIn(mesh, "standin", ack_from=None) as stand_in:
        started = time.monotonic()
        assert await mesh.ref("standin", "k").ask(b'{"type":"Ping"}', timeout=5.0) == "pong"
        assert time.monotonic() - started < 5.0
    assert len(stand_in.copies) == 1
    assert not mesh._acks.pending  # the PubAck is no longer waited for


async def test_an_ask_resent_for_a_lost_puback_keeps_the_reply_to_the_resend(
    mesh: Mesh,
) -> None:
    # The first copy's PubAck never comes: after its share of the timeout the ask is
    # sent again under its id, and the reply to that copy (ahead of its PubAck) must
    # reach the ask, not a wait that already ended.
    async with _StandIn(mesh, "standin", ack_from=2) as stand_in:
        started = time.monotonic()
        reply = await mesh.ref("standin", "k").ask(b'{"type":"Ping"}', timeout=3.0, msg_id="m-1")
        assert reply == "pong"
        assert 1.0 <= time.monotonic() - started < 3.0
    assert stand_in.copies == ["m-1", "m-1"]
