"""Message search through the dashboard's API on a real broker: by key, by
`Nats-Msg-Id` and by stream sequence, in a (work-queue) mailbox, a partitioned one
and the dead letters; and nothing consumed: the streams and consumers are as they
were, and a worker started afterwards still gets every message."""

from __future__ import annotations

import asyncio
import contextlib
import time
from typing import Any

import aiohttp
import pytest

from actormesh import Mesh, WorkerConfig
from actormesh.lowlevel import Hdr, ensure_mailbox
from actormesh.testing import running_worker
from actormesh_supervisor import Service
from tests.actors_search import Inbox, Note, PartitionedInbox, Poison
from tests.actors_supervisor import TOKEN, api_get, wait_until

pytestmark = pytest.mark.integration

TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
TRACEPARENT = f"00-{TRACE}-00f067aa0ba902b7-01"
BEARER = {"Authorization": f"Bearer {TOKEN}"}


async def _state(mesh: Mesh, stream: str) -> tuple[Any, ...]:
    """What a consuming read would change: the stream's messages and every consumer's
    delivered, ack-floor and pending counts."""
    info = await mesh.js.stream_info(stream)
    consumers = sorted(await mesh.js.consumers_info(stream), key=lambda c: c.name)
    return (
        info.state.messages, info.state.first_seq, info.state.last_seq,
        [(c.name, c.delivered.stream_seq, c.ack_floor.stream_seq, c.num_pending,
          c.num_ack_pending) for c in consumers],
    )  # fmt: skip


@pytest.mark.timeout(60)
@pytest.mark.parametrize("actor", [Inbox, PartitionedInbox], ids=["plain", "partitioned"])
async def test_search_a_mailbox_by_key_id_and_seq_consumes_nothing(
    service: Service, mesh: Mesh, actor: type[Inbox]
) -> None:
    Inbox.seen.clear()
    await ensure_mailbox(mesh.js, mesh.subjects, actor.actor_type, actor.mailbox)
    stream = mesh.subjects.mailbox_stream(actor.actor_type)
    for i in range(12):
        headers = {Hdr.TRACEPARENT: TRACEPARENT} if i == 7 else None
        await mesh.ref(actor.actor_type, f"k{i % 4}").tell(
            Note(text=f"n{i}"), msg_id=f"m-{i}", headers=headers
        )
    before = await _state(mesh, stream)

    by_key = await api_get(
        service, "search", where="mailbox", actor_type=actor.actor_type, by="key", q="k1"
    )
    assert [m["key"] for m in by_key["messages"]] == ["k1"] * 3
    assert all('"n' in m["preview"] for m in by_key["messages"])
    assert sorted(m["msg_id"] for m in by_key["messages"]) == ["m-1", "m-5", "m-9"]
    assert by_key["incomplete"] is False

    by_id = await api_get(
        service, "search", where="mailbox", actor_type=actor.actor_type, by="id", q="m-7"
    )
    [found] = by_id["messages"]
    assert found["headers"][Hdr.MSG_ID] == "m-7"
    assert found["trace_id"] == TRACE
    assert found["encoding"] == "text" and "n7" in found["preview"]
    assert found["key"] == "k3" and found["stream"] == stream
    assert by_id["scanned"] <= 13  # at most the stream, then the end

    by_seq = await api_get(
        service,
        "search",
        where="mailbox",
        actor_type=actor.actor_type,
        by="seq",
        q=str(found["seq"]),
    )
    assert [m["msg_id"] for m in by_seq["messages"]] == ["m-7"]
    none = await api_get(
        service, "search", where="mailbox", actor_type=actor.actor_type, by="id", q="m-99"
    )
    assert none["messages"] == [] and none["incomplete"] is False
    limited = await api_get(
        service, "search", where="mailbox", actor_type=actor.actor_type, by="key", q="k2", limit=2
    )
    assert len(limited["messages"]) == 2 and limited["incomplete"] is True

    # Read-only: the mailbox and its consumers are as they were...
    assert await _state(mesh, stream) == before
    # ...and the worker still gets every message.
    async with contextlib.AsyncExitStack() as stack:
        for p in range(actor.mailbox.partitions) if actor.mailbox.partitions > 1 else [None]:
            await stack.enter_async_context(
                running_worker(mesh, actor, WorkerConfig(partition=p, heartbeat_interval=0.25))
            )
        await wait_until(lambda: len(Inbox.seen) == 12, 20, what="all 12 handled")
    assert sorted(text for _, text in Inbox.seen) == sorted(f"n{i}" for i in range(12))


@pytest.mark.timeout(60)
async def test_search_the_dead_letters_by_key_id_and_seq(service: Service, mesh: Mesh) -> None:
    s = mesh.subjects
    seqs = []
    for i, (actor_type, key, data) in enumerate(
        [
            ("searchinbox", "user-1", b'{"type":"Note","text":"poison one"}'),
            ("searchinbox", "user-2", b"\x82\xa4type\xa4Note\x00\x01\x02binary"),
            ("othertype", "user-1", b'{"type":"Other"}'),
        ]
    ):
        receipt = await mesh.publish(
            s.dlq(actor_type), data,
            headers={Hdr.ORIGINAL_SUBJECT: s.mailbox(actor_type, key), Hdr.MSG_ID: f"dead-{i}",
                     Hdr.ERROR_CODE: "handler_error", Hdr.DEAD_AT: f"{time.time():.3f}",
                     Hdr.TRACEPARENT: TRACEPARENT},
        )  # fmt: skip
        seqs.append(receipt.seq)
    before = await _state(mesh, s.dlq_stream)

    by_key = await api_get(
        service, "search", where="dlq", actor_type="searchinbox", by="key", q="user-1"
    )
    assert [(m["seq"], m["key"]) for m in by_key["messages"]] == [(seqs[0], "user-1")]
    assert by_key["messages"][0]["trace_id"] == TRACE
    every_type = await api_get(service, "search", where="dlq", by="key", q="user-1")
    assert [m["seq"] for m in every_type["messages"]] == [seqs[0], seqs[2]]

    by_id = await api_get(service, "search", where="dlq", by="id", q="dead-1")
    [binary] = by_id["messages"]
    assert binary["encoding"] == "hex"
    assert binary["preview"].startswith("00000000  82 a4 74 79 70 65")
    assert binary["headers"][Hdr.ERROR_CODE] == "handler_error"

    by_seq = await api_get(service, "search", where="dlq", by="seq", q=str(seqs[2]))
    assert [m["msg_id"] for m in by_seq["messages"]] == ["dead-2"]
    # A sequence of another type's dead letter is not shown under this type.
    scoped = await api_get(
        service, "search", where="dlq", actor_type="searchinbox", by="seq", q=str(seqs[2])
    )
    assert scoped["messages"] == []

    assert await _state(mesh, s.dlq_stream) == before
    async with (
        aiohttp.ClientSession() as http,
        http.get(service.url + "api/dlq", headers=BEARER) as r,
    ):
        assert {d["seq"] for d in await r.json()} == set(seqs)


@pytest.mark.timeout(60)
async def test_a_worker_dead_letter_is_found_by_the_senders_id_with_its_trace(
    service: Service, mesh: Mesh
) -> None:
    await ensure_mailbox(mesh.js, mesh.subjects, Inbox.actor_type, Inbox.mailbox)
    async with running_worker(mesh, Inbox, WorkerConfig(heartbeat_interval=0.25)):
        await mesh.ref(Inbox.actor_type, "user-9").tell(
            Poison(text="p"), msg_id="poison-1", headers={Hdr.TRACEPARENT: TRACEPARENT}
        )

        async def dead() -> bool:
            found = await api_get(service, "search", where="dlq", by="id", q="poison-1")
            return bool(found["messages"])

        deadline = time.monotonic() + 20
        while not await dead():
            assert time.monotonic() < deadline, "the poison message was not dead-lettered"
            await asyncio.sleep(0.2)
    [letter] = (await api_get(service, "search", where="dlq", by="id", q="poison-1"))["messages"]
    assert letter["msg_id"] == "poison-1" and letter["key"] == "user-9"
    assert letter["trace_id"] == TRACE
    assert letter["headers"][Hdr.ERROR_TYPE] == "ValueError"
    # Its own id finds it too, and the dead_lettered event carries the trace.
    own = await api_get(service, "search", where="dlq", by="id", q=letter["headers"][Hdr.MSG_ID])
    assert [m["seq"] for m in own["messages"]] == [letter["seq"]]
    events: list[dict[str, Any]] = []
    async with aiohttp.ClientSession() as http:
        while not events:  # published right after the dead letter is stored
            assert time.monotonic() < deadline, "no dead_lettered event"
            await asyncio.sleep(0.1)
            async with http.get(service.url + "api/events?kind=dead_lettered", headers=BEARER) as r:
                events = await r.json()
    assert events[0]["detail"]["traceparent"] == TRACEPARENT


async def test_search_needs_auth_and_a_good_query(service: Service) -> None:
    url = service.url + "api/search"
    q = {"where": "dlq", "by": "id", "q": "x"}
    async with aiohttp.ClientSession() as http:
        async with http.get(url, params=q, headers={"Host": "evil.example"}) as r:
            assert r.status == 401  # as every other read: no session, no token
        async with http.get(url, params=q, headers={"Host": "evil.example", **BEARER}) as r:
            assert r.status == 200
        async with http.get(url, params={**q, "by": "seq", "q": "x"}, headers=BEARER) as r:
            assert r.status == 400
            assert "whole number" in (await r.json())["error"]
        params = {"where": "mailbox", "actor_type": "nosuchtype", "by": "key", "q": "k"}
        async with http.get(url, params=params, headers=BEARER) as r:
            assert r.status == 404
        async with http.post(url, params=q, headers=BEARER) as r:
            assert r.status == 405  # a search is a read: there is no POST
