"""`actormesh._nats.Client.deliver_directly` on a real server: the read loop
hands a subscription's messages to a plain function, headers parsed as nats-py
parses them, and a function that raises does not stop the connection."""

from __future__ import annotations

import pytest
from nats.aio.msg import Msg

from actormesh import Mesh
from actormesh._nats import Client
from actormesh.testing import eventually

pytestmark = pytest.mark.integration


async def test_messages_go_to_the_function_in_order_and_a_raise_is_only_logged(
    mesh: Mesh, caplog: pytest.LogCaptureFixture
) -> None:
    nc = mesh.nc
    assert isinstance(nc, Client)
    got: list[Msg] = []
    queued: list[Msg] = []

    def direct(msg: Msg) -> None:
        if msg.data == b"boom":
            raise RuntimeError("boom")
        got.append(msg)

    async def callback(msg: Msg) -> None:
        queued.append(msg)

    subject = nc.new_inbox()
    sub = await nc.subscribe(subject, cb=callback)
    assert nc.deliver_directly(sub, direct)
    await nc.publish(subject, b"1", headers={"Am-Deadline": "123", "X-Odd": " spaced "})
    await nc.publish(subject, b"boom")
    await nc.publish(subject, b"2", headers={"Nats-Msg-Id": "ñ-non-ascii"})  # nats-py parses
    await nc.publish(subject, b"3")
    await eventually(lambda: len(got) == 3)
    assert [m.data for m in got] == [b"1", b"2", b"3"]
    assert got[0].headers == {"Am-Deadline": "123", "X-Odd": "spaced"}
    assert got[1].headers == {"Nats-Msg-Id": "ñ-non-ascii"}
    assert got[2].headers is None and got[2].subject == subject
    assert "a directly delivered message's handler raised" in caplog.text
    assert queued == []
    # Undone: the subscription's callback gets its messages again.
    nc.deliver_queued(sub)
    await nc.publish(subject, b"4")
    await eventually(lambda: len(queued) == 1)
    assert queued[0].data == b"4" and len(got) == 3
    await sub.unsubscribe()
