"""Replies without a broker: `value_soon` puts on the write buffer exactly what
`value` would publish, and leaves every other case to `value`."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

from actormesh._nats import Client, publish_bytes
from actormesh._worker._replies import Replies
from tests.unit._buffer import buffering

INBOX = "_INBOX.abc.7f"


def replies_on_a_connected_client() -> tuple[Replies, Client]:
    nc = buffering()
    assert isinstance(nc, Client)
    mesh: Any = SimpleNamespace(tracer=None, nc=nc)
    replies = Replies(mesh)
    replies.nc = nc
    return replies, nc


async def _settle(pending: Any) -> None:
    if pending is not None:
        await pending


async def test_value_soon_queues_what_value_publishes() -> None:
    replies, nc = replies_on_a_connected_client()
    await _settle(replies.value_soon(INBOX, {"n": 1}))
    soon = list(nc._pending)
    nc._pending.clear()
    await replies.value(INBOX, {"n": 1})
    assert soon == nc._pending == [publish_bytes(INBOX, "", b'{"n":1}', None)]


async def test_value_soon_leaves_an_unencodable_value_to_value() -> None:
    replies, nc = replies_on_a_connected_client()
    await _settle(replies.value_soon(INBOX, object()))
    # `value` answers with an error reply, which carries its status in headers.
    assert len(nc._pending) == 1 and nc._pending[0].startswith(b"HPUB " + INBOX.encode())
    assert b"cannot be encoded" in nc._pending[0]


async def test_value_soon_sends_nothing_to_a_subject_nobody_can_publish_to() -> None:
    replies, nc = replies_on_a_connected_client()
    await _settle(replies.value_soon("not a subject", 1))
    await _settle(replies.value_soon("x" * 5000, 1))
    assert nc._pending == []
