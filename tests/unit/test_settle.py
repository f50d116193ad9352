"""Settling without a broker: the direct ack writes what nats-py's `msg.ack()` writes."""

from __future__ import annotations

from nats.aio.msg import Msg
from nats.protocol.command import pub_cmd

from actormesh._nats import Client
from actormesh._worker._settle import Settler
from tests.unit._buffer import buffering

REPLY = "$JS.ACK.MBOX.c.1.42.42.1700000000000000000.0"


def a_connected_client() -> Client:
    nc = buffering()
    assert isinstance(nc, Client)
    return nc


async def test_the_direct_ack_writes_the_bytes_msg_ack_writes() -> None:
    nc = a_connected_client()
    settler = Settler(ack_sync=False, ack_timeout=1.0, ack_wait=30.0)
    settler.nc = nc
    msg = Msg(_client=nc, subject="m.mbox.t.k", reply=REPLY, data=b"{}")
    settler.hold(msg)
    await settler.ack(msg)
    assert nc._pending == [pub_cmd(REPLY, "", b"")]
    assert msg._ackd and not settler.held and settler.idle.is_set()


async def test_without_a_direct_connection_msg_ack_is_used() -> None:
    nc = a_connected_client()
    settler = Settler(ack_sync=False, ack_timeout=1.0, ack_wait=30.0)
    msg = Msg(_client=nc, subject="m.mbox.t.k", reply=REPLY, data=b"{}")
    settler.hold(msg)
    await settler.ack(msg)
    assert nc._pending == [pub_cmd(REPLY, "", b"")]
    assert msg._ackd and not settler.held


async def test_ack_soon_writes_the_same_bytes_without_a_coroutine_of_its_own() -> None:
    nc = a_connected_client()
    settler = Settler(ack_sync=False, ack_timeout=1.0, ack_wait=30.0)
    settler.nc = nc
    msgs = [Msg(_client=nc, subject="m.mbox.t.k", reply=REPLY, data=b"{}") for _ in range(2)]
    for msg in msgs:
        settler.hold(msg)
    # The flusher never runs: the first ack returns what wakes it (to await), the
    # second nothing (it has been woken and not yet run).
    first = settler.ack_soon(msgs[0])
    assert first is not None
    await first
    assert settler.ack_soon(msgs[1]) is None
    assert nc._pending == [pub_cmd(REPLY, "", b"")] * 2
    assert all(m._ackd for m in msgs) and not settler.held and settler.idle.is_set()


async def test_ack_soon_leaves_an_already_acked_message_to_ack() -> None:
    nc = a_connected_client()
    settler = Settler(ack_sync=False, ack_timeout=1.0, ack_wait=30.0)
    settler.nc = nc
    msg = Msg(_client=nc, subject="m.mbox.t.k", reply=REPLY, data=b"{}")
    msg._ackd = True
    settler.hold(msg)
    pending = settler.ack_soon(msg)
    assert pending is not None
    await pending  # msg.ack() refuses a second ack: logged, and the message released
    assert nc._pending == [] and not settler.held
