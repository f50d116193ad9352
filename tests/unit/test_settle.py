"""Settling without a broker: the direct ack writes what nats-py's `msg.ack()` writes."""

from __future__ import annotations

from nats.aio.client import Client as NatsClient
from nats.aio.msg import Msg
from nats.protocol.command import pub_cmd

from actormesh._nats import Client
from actormesh._worker._settle import Settler

REPLY = "$JS.ACK.MBOX.c.1.42.42.1700000000000000000.0"


def a_connected_client() -> Client:
    nc = Client()
    nc._status = NatsClient.CONNECTED  # only its write buffer is used here
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
