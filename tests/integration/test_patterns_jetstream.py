"""JetStreamSource and MailboxSink against a real nats-server."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable

import nats
import pytest
import pytest_asyncio
from nats.aio.client import Client
from nats.js.api import AckPolicy, ConsumerConfig, DiscardPolicy, RetentionPolicy, StreamConfig

from actormesh._errors import MailboxFull
from actormesh.patterns import (
    Backpressure,
    ErrorStrategy,
    JetStreamMessage,
    JetStreamSource,
    MailboxSink,
    RetryPolicy,
    StageFailed,
    Stream,
)

pytestmark = pytest.mark.integration


async def eventually(check: Callable[[], Awaitable[bool]]) -> None:
    """Acks and naks are fire-and-forget: the server applies them a moment later."""
    for _ in range(250):
        if await check():
            return
        await asyncio.sleep(0.02)
    raise AssertionError("condition not reached within 5 s")


async def settled_acks(nc: Client, stream: str, messages_left: int) -> None:
    js = nc.jetstream()

    async def check() -> bool:
        return (await js.stream_info(stream)).state.messages == messages_left

    await eventually(check)


async def settled(nc: Client, stream: str, consumer: str, messages_left: int) -> None:
    js = nc.jetstream()

    async def check() -> bool:
        info = await js.consumer_info(stream, consumer)
        left = (await js.stream_info(stream)).state.messages
        return info.num_ack_pending == 0 and left == messages_left

    await eventually(check)


@pytest_asyncio.fixture
async def nc(nats_url: str) -> AsyncIterator[Client]:
    client = await nats.connect(nats_url)
    try:
        yield client
    finally:
        await client.drain()


async def work_queue(
    nc: Client, name: str, subject: str, *, max_msgs: int = -1, consumer: str | None = None
) -> None:
    js = nc.jetstream()
    await js.add_stream(
        StreamConfig(
            name=name,
            subjects=[subject],
            retention=RetentionPolicy.WORK_QUEUE,
            discard=DiscardPolicy.NEW,
            max_msgs=max_msgs,
        )
    )
    if consumer:
        await js.add_consumer(
            name, ConsumerConfig(durable_name=consumer, ack_policy=AckPolicy.EXPLICIT, ack_wait=30)
        )


async def test_source_delivers_everything_and_acks_after_the_sink(
    nc: Client, mesh_prefix: str
) -> None:
    stream, subject = f"{mesh_prefix}_IN", f"{mesh_prefix}.in"
    await work_queue(nc, stream, subject, consumer="worker")
    js = nc.jetstream()
    for i in range(25):
        await js.publish(subject, str(i).encode())

    batches: list[list[int]] = []

    async def sink(batch: list[int]) -> None:
        # Acked only after the sink returned: this batch and later ones are unacked.
        info = await js.consumer_info(stream, "worker")
        assert info.num_ack_pending + info.num_pending == 25 - sum(map(len, batches))
        batches.append(batch)

    source = JetStreamSource(
        nc, stream, "worker", batch=10, fetch_timeout=1.0, stop_when_idle=True, double_ack=True
    )
    metrics = await Stream(source).map(lambda m: int(m.data)).batch(10).run(sink)
    assert sorted(x for b in batches for x in b) == list(range(25))
    assert metrics["sink"].processed == 3
    # Double acks were confirmed by the server: nothing is left, no waiting needed.
    info = await js.consumer_info(stream, "worker")
    assert (info.num_ack_pending, info.num_pending) == (0, 0)
    assert (await js.stream_info(stream)).state.messages == 0  # work queue: acked = removed


async def test_a_failed_item_is_nacked_and_redelivered(nc: Client, mesh_prefix: str) -> None:
    stream, subject = f"{mesh_prefix}_RD", f"{mesh_prefix}.rd"
    await work_queue(nc, stream, subject, consumer="worker")
    js = nc.jetstream()
    for i in range(5):
        await js.publish(subject, str(i).encode())

    deliveries: list[tuple[int, int]] = []

    async def sink(msg: JetStreamMessage) -> None:
        n, delivered = int(msg.data), msg.metadata.num_delivered
        deliveries.append((n, delivered))
        if n == 3 and delivered == 1:
            raise ConnectionError("downstream hiccup")

    source = JetStreamSource(
        nc, stream, "worker", batch=5, fetch_timeout=1.0, stop_when_idle=True, nak_backoff=None
    )
    metrics = await Stream(source).run(sink, on_error=ErrorStrategy.LOG_AND_CONTINUE)
    assert (3, 1) in deliveries and (3, 2) in deliveries
    assert sorted(n for n, _ in deliveries) == [0, 1, 2, 3, 3, 4]
    assert metrics["sink"].errors == 1
    await settled(nc, stream, "worker", messages_left=0)


async def test_stopping_naks_what_was_fetched_but_not_processed(
    nc: Client, mesh_prefix: str
) -> None:
    stream, subject = f"{mesh_prefix}_ST", f"{mesh_prefix}.st"
    await work_queue(nc, stream, subject, consumer="worker")
    js = nc.jetstream()
    for i in range(10):
        await js.publish(subject, str(i).encode())

    async def sink(msg: JetStreamMessage) -> None:
        if int(msg.data) == 2:
            raise ValueError("poison")

    source = JetStreamSource(nc, stream, "worker", batch=10, fetch_timeout=1.0, nak_backoff=None)
    with pytest.raises(StageFailed):
        await Stream(source).run(sink)
    # 0 and 1 acked; 2 (failed) and 3..9 (fetched, never processed) nacked: offered again
    # at once, not after the 30 s ack_wait that abandoned messages would need.
    await settled_acks(nc, stream, messages_left=8)
    sub = await js.pull_subscribe_bind(durable="worker", stream=stream)
    again = await sub.fetch(8, timeout=5)
    assert sorted(int(m.data) for m in again) == list(range(2, 10))
    assert all(m.metadata.num_delivered == 2 for m in again)
    for m in again:
        await m.ack()


async def test_mailbox_sink_raise_maps_a_full_stream_to_mailbox_full(
    nc: Client, mesh_prefix: str
) -> None:
    stream, subject = f"{mesh_prefix}_MB", f"{mesh_prefix}.mbox.counter.k"
    await work_queue(nc, stream, subject, max_msgs=2)
    sink: MailboxSink[bytes] = MailboxSink(nc, subject, on_full=Backpressure.RAISE, name="counter")
    await sink(b"1")
    await sink(b"2")
    with pytest.raises(MailboxFull) as info:
        await sink(b"3")
    assert info.value.actor_type == "counter"
    assert "maximum messages" in info.value.reason
    assert info.value.retryable
    assert (sink.published, sink.full_events) == (2, 1)


async def test_mailbox_sink_block_waits_for_room_then_publishes(
    nc: Client, mesh_prefix: str
) -> None:
    stream, subject = f"{mesh_prefix}_BL", f"{mesh_prefix}.bl"
    await work_queue(nc, stream, subject, max_msgs=1, consumer="worker")
    js = nc.jetstream()
    backing_off = asyncio.Event()

    async def sleep(delay: float) -> None:
        backing_off.set()
        await asyncio.sleep(delay)

    sink: MailboxSink[str] = MailboxSink(
        nc, subject, retry=RetryPolicy(attempts=1000, base=0.01, cap=0.05), sleep=sleep
    )
    await sink("first")
    blocked = asyncio.create_task(sink("second"))
    await backing_off.wait()  # the stream refused "second": the sink is backing off
    assert not blocked.done()
    sub = await js.pull_subscribe_bind(durable="worker", stream=stream)
    (msg,) = await sub.fetch(1, timeout=2)
    assert msg.data == b"first"
    await msg.ack_sync()  # the work queue drops it: room for one
    await blocked
    (msg,) = await sub.fetch(1, timeout=2)
    assert msg.data == b"second"
    assert sink.published == 2


async def test_mailbox_sink_block_gives_up_with_the_time_waited(
    nc: Client, mesh_prefix: str
) -> None:
    stream, subject = f"{mesh_prefix}_GU", f"{mesh_prefix}.gu"
    await work_queue(nc, stream, subject, max_msgs=1)
    slept: list[float] = []

    async def fake_sleep(delay: float) -> None:
        slept.append(delay)

    sink: MailboxSink[bytes] = MailboxSink(
        nc, subject, retry=RetryPolicy(attempts=4, base=0.5, jitter=0), sleep=fake_sleep
    )
    await sink(b"fill")
    with pytest.raises(MailboxFull) as info:
        await sink(b"overflow")
    assert slept == [0.5, 1.0, 2.0]
    assert info.value.waited == pytest.approx(3.5)
    assert sink.full_events == 4


async def test_source_to_mailbox_pipeline_with_dedupe_headers(nc: Client, mesh_prefix: str) -> None:
    src_stream, src_subject = f"{mesh_prefix}_A", f"{mesh_prefix}.a"
    dst_stream, dst_subject = f"{mesh_prefix}_B", f"{mesh_prefix}.b"
    await work_queue(nc, src_stream, src_subject, consumer="mover")
    await work_queue(nc, dst_stream, dst_subject)
    js = nc.jetstream()
    for i in range(12):
        await js.publish(src_subject, f"m{i}".encode())

    sink: MailboxSink[JetStreamMessage] = MailboxSink(
        nc,
        dst_subject,
        encode=lambda m: m.data.upper(),
        headers=lambda m: {"Nats-Msg-Id": f"{m.metadata.sequence.stream}"},
    )
    source = JetStreamSource(
        nc, src_stream, "mover", batch=5, fetch_timeout=1.0, stop_when_idle=True
    )
    await Stream(source).buffer(4).run(sink)
    assert (await js.stream_info(dst_stream)).state.messages == 12
    await settled(nc, src_stream, "mover", messages_left=0)
    first = await js.get_msg(dst_stream, seq=1)
    assert first.data == b"M0"
