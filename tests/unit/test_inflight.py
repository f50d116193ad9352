"""The sender's bookkeeping of publishes awaiting a PubAck (`_inflight.InFlight`)
and its reading of PubAcks (`Mesh._parse_puback`), without a broker."""

from __future__ import annotations

import asyncio

import pytest
from nats.aio.msg import Msg

from actormesh import ActorMeshError, BrokerUnavailable, MailboxFull, PayloadTooLarge
from actormesh._inflight import InFlight
from actormesh._mesh import Mesh, Receipt


async def test_a_reply_resolves_its_future_once() -> None:
    waits: InFlight[str] = InFlight(10)
    fut = waits.add("a", None)
    assert waits.resolve("a", "ack")
    assert not waits.resolve("a", "again")  # a second reply is not waited on
    assert await fut == "ack"
    assert not waits.pending


async def test_deadlines_of_different_timeouts_expire_each_on_time() -> None:
    waits: InFlight[str] = InFlight(10)
    slow = waits.add("slow", 0.4)
    fast = waits.add("fast", 0.05)
    answered = waits.add("answered", 0.05)
    waits.resolve("answered", "ack")
    assert await fast is None  # expired: "no reply in time"
    assert not slow.done()
    assert await answered == "ack"
    assert await slow is None
    assert not waits.pending


async def test_expiry_skips_answered_entries_and_keeps_later_deadlines() -> None:
    waits: InFlight[str] = InFlight(100)
    futs = [waits.add(str(i), 0.05) for i in range(5)]
    for i in range(4):
        waits.resolve(str(i), "ack")
    later = waits.add("later", 0.3)
    assert await futs[4] is None
    assert not later.done()
    waits.resolve("later", "ack")
    assert await later == "ack"


async def test_a_deadline_set_out_of_order_still_expires_on_time() -> None:
    waits: InFlight[str] = InFlight(10)
    later = waits.add("later", 0.5)
    now = asyncio.get_running_loop().time()
    # Same timeout, earlier deadline (an ask's PubAck sent after waiting for room).
    earlier = waits.add("earlier", 0.5, at=now + 0.05)
    assert await earlier is None
    assert not later.done()
    # Deadlines of more timeout values than get a queue each expire too, in order.
    many = [waits.add(str(i), 0.2 + i / 100) for i in range(12)]
    expired = await asyncio.gather(*many)
    assert expired == [None] * 12
    assert not later.done()
    assert await later is None


async def test_a_renewed_wait_keeps_its_first_deadline() -> None:
    waits: InFlight[str] = InFlight(10)
    first = waits.add("a", 0.05)
    first.set_result("settled by its owner")  # not through `resolve`: still waited on
    renewed = waits.renew("a")
    assert renewed is not first and waits.pending["a"] is renewed
    assert await renewed is None  # the first deadline still applies
    assert not waits.pending
    again = waits.add("b", 10.0)
    again.set_result("settled")
    answered = waits.renew("b")
    assert waits.resolve("b", "reply")
    assert await answered == "reply"


async def test_the_window_holds_senders_until_room_is_made() -> None:
    waits: InFlight[str] = InFlight(2)
    waits.add("a", None)
    waits.add("b", None)
    assert waits.full()
    third = asyncio.create_task(waits.wait_room())
    fourth = asyncio.create_task(waits.wait_room())
    await asyncio.sleep(0.01)
    assert not third.done() and not fourth.done()
    waits.resolve("a", "ack")
    await third
    waits.add("c", None)
    await asyncio.sleep(0.01)
    assert not fourth.done()  # room went to the third, in turn
    waits.discard("b")  # a wait given up makes room too
    await fourth
    assert not waits._room


async def test_a_cancelled_sender_passes_its_turn_on() -> None:
    waits: InFlight[str] = InFlight(1)
    waits.add("a", None)
    first = asyncio.create_task(waits.wait_room())
    second = asyncio.create_task(waits.wait_room())
    await asyncio.sleep(0.01)
    waits.resolve("a", "ack")  # wakes `first`...
    first.cancel()  # ...which is cancelled before it runs
    with pytest.raises(asyncio.CancelledError):
        await first
    await asyncio.wait_for(second, 1.0)
    assert not waits._room


async def test_a_cancelled_waiter_leaves_no_trace() -> None:
    waits: InFlight[str] = InFlight(1)
    waits.add("a", None)
    gone = asyncio.create_task(waits.wait_room())
    await asyncio.sleep(0.01)
    gone.cancel()
    with pytest.raises(asyncio.CancelledError):
        await gone
    waits.resolve("a", "ack")
    assert not waits.full()


async def test_close_cancels_every_wait() -> None:
    waits: InFlight[str] = InFlight(1)
    fut = waits.add("a", 10.0)
    room = asyncio.create_task(waits.wait_room())
    await asyncio.sleep(0.01)
    waits.close()
    assert fut.cancelled()
    with pytest.raises(asyncio.CancelledError):
        await room
    assert not waits.pending


def _msg(data: bytes, headers: dict[str, str] | None = None) -> Msg:
    return Msg(_client=None, subject="_INBOX.x.1", data=data, headers=headers)  # type: ignore[arg-type]


def _parse(data: bytes, headers: dict[str, str] | None = None) -> Receipt:
    mesh = Mesh.__new__(Mesh)  # parsing needs no connection
    return mesh._parse_puback("p.mbox.thing.k", _msg(data, headers))


def test_puback_to_receipt() -> None:
    assert _parse(b'{"stream":"P_MBOX_THING","seq":7}') == Receipt("P_MBOX_THING", 7)
    dup = _parse(b'{"stream":"S","seq":3,"duplicate":true,"domain":"hub"}')
    assert dup == Receipt("S", 3, duplicate=True)
    # A stream may be named "error": still a receipt, not a refusal.
    assert _parse(b'{"stream":"error","seq":1}') == Receipt("error", 1)


def test_puback_errors_are_typed() -> None:
    with pytest.raises(MailboxFull) as full:
        _parse(b'{"error":{"code":503,"err_code":10077,"description":"maximum messages exceeded"}}')
    assert full.value.actor_type == "thing"
    assert full.value.reason == "maximum messages exceeded"
    with pytest.raises(PayloadTooLarge):
        _parse(b'{"error":{"code":400,"err_code":10054,"description":"message size exceeds"}}')
    with pytest.raises(ActorMeshError) as other:
        _parse(b'{"error":{"code":400,"err_code":10071,"description":"wrong last sequence: 1"}}')
    assert not other.value.retryable and "wrong last sequence" in str(other.value)
    with pytest.raises(ActorMeshError) as server:
        _parse(b'{"error":{"code":500,"err_code":1,"description":"boom"}}')
    assert server.value.retryable
    # No responders: no stream leader listens. Retryable here; `Mesh._store` asks
    # JetStream whether the stream exists and raises NoSuchActorType only if not.
    with pytest.raises(BrokerUnavailable) as none:
        _parse(b"", {"Status": "503"})
    assert none.value.reason == "no_responders" and none.value.retryable
    with pytest.raises(ActorMeshError, match="unreadable PubAck"):
        _parse(b"not json")
