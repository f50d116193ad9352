"""JetStream at the ends of a stream: a pull-consumer source and a publishing sink.

`JetStreamSource` yields `JetStreamMessage`s (which are `Ackable`) from an
existing durable pull consumer, so a pipeline acks each message only once
what became of it left the sink, and naks it (with backoff) otherwise.

`MailboxSink` publishes into a JetStream subject and waits for the PubAck. A
mailbox stream is bounded with discard-new, so a full mailbox is an error reply
(err_code 10077, "maximum messages/bytes exceeded"): that is backpressure, and
the sink either waits with backoff and retries (BLOCK) or raises `MailboxFull`
(RAISE). Never a silent drop.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from typing import Any, Generic, TypeVar

import msgspec
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.js.errors import APIError

from .._errors import ConfigError, MailboxFull
from .._retry import RetryPolicy
from ._backpressure import Backpressure

__all__ = ["JetStreamMessage", "JetStreamSource", "MailboxSink"]

T = TypeVar("T")

_log = logging.getLogger("actormesh.patterns")

#: JetStream's "stream store failed" API error: with discard-new, the stream is
#: at max_msgs / max_bytes / max_msgs_per_subject and refused the message.
STREAM_FULL = 10077

# Redelivery after a nak: 1 s, 2 s, 4 s ... up to 15 s, by delivery count.
_NAK_BACKOFF = RetryPolicy(base=1.0, cap=15.0)
# A full mailbox drains at the consumers' pace: back off to 5 s, ~20 s in all.
_FULL_BACKOFF = RetryPolicy(attempts=10, base=0.1, multiplier=2.0, cap=5.0)


class JetStreamMessage:
    """A message from a `JetStreamSource`: its data, plus `ack`/`nak` for the pipeline.

    `nak()` asks for redelivery after a delay from the source's `nak_backoff`,
    growing with the number of deliveries so far, rather than at once (which
    would spin on a message that keeps failing).
    """

    __slots__ = ("_backoff", "_double_ack", "msg")

    def __init__(self, msg: Msg, backoff: RetryPolicy | None, double_ack: bool = False) -> None:
        self.msg = msg
        self._backoff = backoff
        self._double_ack = double_ack

    def __repr__(self) -> str:
        return f"<JetStreamMessage {self.msg.subject} {len(self.msg.data)}B>"

    @property
    def subject(self) -> str:
        return self.msg.subject

    @property
    def data(self) -> bytes:
        return self.msg.data

    @property
    def headers(self) -> dict[str, str] | None:
        return self.msg.headers

    @property
    def metadata(self) -> Msg.Metadata:
        """Stream and consumer sequences, delivery count, pending count, timestamp."""
        return self.msg.metadata

    async def ack(self) -> None:
        if self._double_ack:
            await self.msg.ack_sync()
        else:
            await self.msg.ack()

    async def nak(self) -> None:
        delay = None
        if self._backoff is not None:
            delay = self._backoff.delay(max(1, self.msg.metadata.num_delivered))
        await self.msg.nak(delay=delay)

    async def in_progress(self) -> None:
        """Reset the ack timer while a long step works on this message."""
        await self.msg.in_progress()


class JetStreamSource:
    """An `AsyncIterable[JetStreamMessage]` over an existing durable pull consumer.

    Fetches up to `batch` messages at a time, each fetch waiting at most
    `fetch_timeout` seconds. Iteration ends when `close()` is called (after the
    current fetch) or, with `stop_when_idle`, after a fetch that found nothing.
    Messages fetched but not yet handed out when iteration stops are nacked.
    With `double_ack`, each ack waits for the server's confirmation (a round
    trip per message) instead of being fire-and-forget: no redelivery of a
    message whose ack was lost. Create the stream and consumer first.

    A fetched message's ack timer runs while it waits its turn: keep `batch`
    times the per-message processing time well under the consumer's
    `ack_wait`, or the broker redelivers messages still queued here.
    """

    def __init__(
        self,
        nc: Client,
        stream: str,
        durable: str,
        *,
        batch: int = 100,
        fetch_timeout: float = 5.0,
        stop_when_idle: bool = False,
        nak_backoff: RetryPolicy | None = _NAK_BACKOFF,
        double_ack: bool = False,
    ) -> None:
        if batch < 1:
            raise ConfigError("batch must be >= 1")
        if not fetch_timeout > 0:
            raise ConfigError("fetch_timeout must be > 0")
        self._nc = nc
        self.stream = stream
        self.durable = durable
        self._batch = batch
        self._fetch_timeout = fetch_timeout
        self._stop_when_idle = stop_when_idle
        self._backoff = nak_backoff
        self._double_ack = double_ack
        self._closed = False
        self.fetched = 0

    def __repr__(self) -> str:
        return f"<JetStreamSource {self.stream}/{self.durable}>"

    def close(self) -> None:
        """Stop iterating once the current fetch returns."""
        self._closed = True

    def __aiter__(self) -> AsyncIterator[JetStreamMessage]:
        return self._messages()

    async def _messages(self) -> AsyncIterator[JetStreamMessage]:
        js = self._nc.jetstream()
        sub = await js.pull_subscribe_bind(durable=self.durable, stream=self.stream)
        pending: deque[Msg] = deque()
        try:
            while not self._closed:
                try:
                    msgs = await sub.fetch(self._batch, timeout=self._fetch_timeout)
                except TimeoutError:
                    # nats.errors.TimeoutError, or asyncio's from deeper in fetch().
                    if self._stop_when_idle:
                        return
                    continue
                self.fetched += len(msgs)
                pending.extend(msgs)
                while pending:
                    yield JetStreamMessage(pending.popleft(), self._backoff, self._double_ack)
        finally:
            # Handed out nothing of these: let the broker redeliver them now.
            for msg in pending:
                try:
                    await msg.nak()
                except Exception:
                    _log.warning("%r: nak of an unprocessed message failed", self, exc_info=True)
            try:
                await sub.unsubscribe()
            except Exception:
                _log.debug("%r: unsubscribe failed", self, exc_info=True)


def _encode(item: object) -> bytes:
    if isinstance(item, bytes):
        return item
    if isinstance(item, bytearray | memoryview):
        return bytes(item)
    if isinstance(item, str):
        return item.encode()
    return msgspec.json.encode(item)


class MailboxSink(Generic[T]):
    """An async callable that publishes each item to JetStream and awaits its PubAck.

    `subject` is a string or a function of the item. Items are encoded by
    `encode` (default: bytes as is, str as UTF-8, anything else as msgspec
    JSON); `headers(item)` may add headers, e.g. ``Nats-Msg-Id`` so that a
    retried publish is deduplicated by the stream.

    When the stream is full: with `on_full=BLOCK`, wait per `retry` (its
    delays; by default up to ~20 s in all) and publish again, raising
    `MailboxFull` with the time waited if it stays full; with RAISE, raise
    `MailboxFull` at once. Other errors propagate.
    """

    def __init__(
        self,
        nc: Client,
        subject: str | Callable[[T], str],
        *,
        encode: Callable[[T], bytes] = _encode,
        headers: Callable[[T], Mapping[str, str]] | None = None,
        on_full: Backpressure = Backpressure.BLOCK,
        retry: RetryPolicy = _FULL_BACKOFF,
        timeout: float | None = None,
        name: str | None = None,
        sleep: Callable[[float], Awaitable[object]] = asyncio.sleep,
    ) -> None:
        if on_full not in (Backpressure.BLOCK, Backpressure.RAISE):
            raise ConfigError("on_full must be BLOCK or RAISE: a mailbox never drops silently")
        self._js = nc.jetstream()
        self._subject = subject
        self._encode = encode
        self._headers = headers
        self.on_full = on_full
        self.retry = retry
        self._timeout = timeout
        self.name = name or (subject if isinstance(subject, str) else "mailbox")
        self._sleep = sleep
        self.published = 0
        #: Publishes refused because the stream was full (each retry counts).
        self.full_events = 0

    def __repr__(self) -> str:
        return f"<MailboxSink {self.name!r} {self.on_full.name}>"

    async def __call__(self, item: T) -> None:
        subject = self._subject if isinstance(self._subject, str) else self._subject(item)
        payload = self._encode(item)
        headers: dict[str, Any] | None = dict(self._headers(item)) if self._headers else None
        waited = 0.0
        retry_number = 0
        while True:
            try:
                await self._js.publish(
                    subject,
                    payload,
                    timeout=self._timeout,
                    headers=dict(headers) if headers else None,
                )
            except APIError as exc:
                if exc.err_code != STREAM_FULL:
                    raise
                self.full_events += 1
                retry_number += 1
                reason = exc.description or "stream full"
                if self.on_full is Backpressure.RAISE or retry_number >= self.retry.attempts:
                    raise MailboxFull(self.name, reason=reason, waited=waited) from exc
                delay = self.retry.delay(retry_number)
            else:
                self.published += 1
                return
            await self._sleep(delay)
            waited += delay
