"""ActorRef: where to send one actor's messages (tell, tell_many, ask)."""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Awaitable, Callable, Iterable
from contextlib import AbstractContextManager
from typing import TYPE_CHECKING, Any, Generic, Protocol, TypeVar, overload

import msgspec
from nats.aio.msg import Msg

from ._actor import Actor, spec_of
from ._config import FullPolicy
from ._errors import (
    AskTimeout,
    BrokerUnavailable,
    ConfigError,
    MailboxFull,
    NoSuchActorType,
    PrioritiesOff,
)
from ._errwire import decode_reply
from ._hooks import NO_SPAN, SpanHandle
from ._retry import RetryPolicy
from ._retry import retry as _retry_loop
from ._subjects import KEYLESS, LEVELS, Priority, check_actor_type, check_key
from ._wire import Hdr, Message

if TYPE_CHECKING:
    from ._mesh import Mesh, Receipt

__all__ = ["ActorRef", "Breaker"]

A = TypeVar("A", bound=Actor)
R = TypeVar("R")

_encoder = msgspec.json.Encoder()


class Breaker(Protocol):
    """What `ask(breaker=...)` needs: `actormesh.patterns.CircuitBreaker` is one."""

    async def call(self, fn: Callable[[], Awaitable[R]]) -> R: ...


class ActorRef(Generic[A]):
    """Where to send an actor's messages. Cheap: make as many as you like."""

    __slots__ = (
        "_deadline",
        "_ids",
        "_limit",
        "_principal",
        "_spec",
        "actor_type",
        "key",
        "mesh",
        "subject",
    )

    def __init__(self, mesh: Mesh, actor: type[A] | str, key: str | None) -> None:
        self.mesh = mesh
        if isinstance(actor, str):
            self._spec = None
            self.actor_type = check_actor_type(actor)
            self._limit: int | None = None
        else:
            self._spec = spec_of(actor)
            self.actor_type = self._spec.actor_type
            self._limit = self._spec.mailbox.max_msg_size
        self.key = check_key(key) if key is not None else KEYLESS
        self.subject = mesh.subjects.mailbox(self.actor_type, self.key)
        #: Where a send without `msg_id` takes one: the mesh's fresh ids, or (for a
        #: reference made by a handler's `Context`) ids derived from the message being
        #: handled, the same again if the handler runs again.
        self._ids: Callable[[], str] = mesh.new_msg_id
        #: For a handler's reference: the message being handled's deadline (unix
        #: seconds; an ask gets at most what is left of it) and its actor type, sent
        #: as the principal.
        self._deadline: float | None = None
        self._principal: str | None = None

    def __repr__(self) -> str:
        return f"ActorRef({self.actor_type}/{self.key})"

    def _encode(self, msg: Message | bytes) -> bytes:
        return msg if isinstance(msg, bytes) else _encoder.encode(msg)

    def _producer_span(
        self, hdrs: dict[str, str], operation: str
    ) -> AbstractContextManager[SpanHandle]:
        """The sender's span around a send (nothing when tracing is off)."""
        tracer = self.mesh.tracer
        if tracer is None:
            return NO_SPAN
        return tracer.producer(destination=self.subject, headers=hdrs, operation=operation)

    def _headers(
        self, msg_id: str | None, extra: dict[str, str] | None, *, dedupe: bool = True
    ) -> dict[str, str]:
        headers: dict[str, str] = {}
        if msg_id or dedupe:
            headers[Hdr.MSG_ID] = msg_id or self._ids()
        if self.mesh.name:
            headers[Hdr.SENDER] = self.mesh.name
        if self._principal is not None:
            headers[Hdr.PRINCIPAL] = self._principal
        if extra:
            headers.update(extra)
        return headers

    def _subject_for(self, priority: Priority, hdrs: dict[str, str]) -> str:
        """The subject a message of `priority` goes to (and its header, for readers)."""
        if priority == "normal":
            return self.subject
        if priority not in LEVELS:
            raise ConfigError(f"priority must be one of {', '.join(LEVELS)}; got {priority!r}")
        hdrs[Hdr.PRIORITY] = priority
        return self.mesh.subjects.priority_mailbox(self.actor_type, priority, self.key)

    async def _priorities_off(self, exc: NoSuchActorType, priority: str, subject: str) -> None:
        """A priority send found no stream: say whether the type is missing or only
        takes no priorities (its mailbox stream exists)."""
        try:
            await self.mesh.js.stream_info(self.mesh.subjects.mailbox_stream(self.actor_type))
        except asyncio.CancelledError:
            raise
        except Exception:
            raise exc from None
        raise PrioritiesOff(self.actor_type, level=priority, subject=subject) from None

    async def tell(
        self,
        msg: Message | bytes,
        *,
        msg_id: str | None = None,
        headers: dict[str, str] | None = None,
        full_policy: FullPolicy | None = None,
        priority: Priority = "normal",
    ) -> Receipt:
        """Store `msg` in the actor's mailbox; returns once the broker has it.

        `msg_id` makes the send idempotent within the mailbox's duplicate window
        (one is generated if you give none). Raises `MailboxFull` (after waiting as
        `full_policy` says), `PayloadTooLarge`, `NoSuchActorType`, `BrokerUnavailable`
        (retryable: the mesh already resent under the same id until the mesh's
        `publish_timeout`; send again with `msg_id=exc.msg_id`).

        `priority` ("high", "normal", "low") needs a mailbox declared with
        `MailboxConfig(priorities=True)` (else `PrioritiesOff`): the worker serves
        higher levels first; per-key order holds within a level only.
        """
        hdrs = self._headers(msg_id, headers)
        if priority != "normal":
            return await self._tell_at(msg, hdrs, full_policy, priority)
        tracer = self.mesh.tracer
        if tracer is None:  # not even a no-op span per message
            return await self._store(msg, hdrs, full_policy)
        with tracer.producer(destination=self.subject, headers=hdrs, operation="tell"):
            return await self._store(msg, hdrs, full_policy)

    async def _tell_at(
        self,
        msg: Message | bytes,
        hdrs: dict[str, str],
        full_policy: FullPolicy | None,
        priority: Priority,
    ) -> Receipt:
        """`tell` at a priority other than normal (kept off the normal path)."""
        subject = self._subject_for(priority, hdrs)
        try:
            # Spans name the actor's usual subject: one span name per type, any level.
            with self._producer_span(hdrs, "tell"):
                return await self._store(msg, hdrs, full_policy, subject)
        except NoSuchActorType as exc:
            await self._priorities_off(exc, priority, subject)
            raise

    def _store(
        self,
        msg: Message | bytes,
        hdrs: dict[str, str],
        full_policy: FullPolicy | None,
        subject: str | None = None,
    ) -> Awaitable[Receipt]:
        # A plain function handing back the Mesh's coroutine: no frame of its own.
        mesh = self.mesh
        return mesh._store(
            subject or self.subject,
            self._encode(msg),
            hdrs,
            self._limit,
            full_policy,
            ack_timeout=mesh.publish_timeout,
        )

    async def tell_many(
        self,
        msgs: Iterable[Message | bytes],
        *,
        window: int = 1024,
        full_policy: FullPolicy | None = None,
        priority: Priority = "normal",
    ) -> list[Receipt]:
        """Tell many messages, pipelined (`window` awaiting their PubAck at once),
        all at `priority` (see `tell`)."""
        receipts: list[Receipt] = []
        pending: deque[tuple[bytes, dict[str, str], str, asyncio.Future[Msg | None]]] = deque()
        mesh = self.mesh
        level: dict[str, str] = {}
        subject = self._subject_for(priority, level)
        limit, timeout = self._limit, mesh.publish_timeout

        async def settle_one() -> None:
            payload, headers, token, fut = pending.popleft()
            try:
                if fut.done() and not fut.cancelled():
                    # Pipelined sends mostly find their PubAck already here.
                    receipts.append(mesh._parse_puback(subject, fut.result(), timeout))
                else:
                    receipts.append(await mesh._receipt(subject, token, fut, timeout))
            except (MailboxFull, BrokerUnavailable):
                # Retries one by one, as `tell` would, with the same msg id (a stream
                # without a leader for a moment, or a missing one: `publish` tells).
                receipts.append(
                    await mesh.publish(subject, payload, headers=headers, full_policy=full_policy)
                )

        try:
            for msg in msgs:
                payload = self._encode(msg)
                headers = self._headers(None, level)
                if mesh.tracer is not None:
                    mesh.tracer.sent(destination=self.subject, headers=headers, operation="tell")
                mesh.check_size(payload, headers, limit=limit)
                token, fut = await mesh._send(subject, payload, headers, timeout)
                pending.append((payload, headers, token, fut))
                if len(pending) >= window:
                    await settle_one()
            while pending:
                await settle_one()
        except NoSuchActorType as exc:
            if priority != "normal":
                await self._priorities_off(exc, priority, subject)
            raise
        finally:
            for _, _, token, _ in pending:
                mesh._acks.discard(token)
        return receipts

    @overload
    async def ask(
        self,
        msg: Message | bytes,
        *,
        timeout: float = ...,
        reply_type: type[R],
        msg_id: str | None = ...,
        headers: dict[str, str] | None = ...,
        breaker: Breaker | None = ...,
        retry: RetryPolicy | None = ...,
        priority: Priority = ...,
    ) -> R: ...
    @overload
    async def ask(
        self,
        msg: Message | bytes,
        *,
        timeout: float = ...,
        reply_type: None = ...,
        msg_id: str | None = ...,
        headers: dict[str, str] | None = ...,
        breaker: Breaker | None = ...,
        retry: RetryPolicy | None = ...,
        priority: Priority = ...,
    ) -> Any: ...
    async def ask(
        self,
        msg: Message | bytes,
        *,
        timeout: float = 5.0,
        reply_type: type[R] | None = None,
        msg_id: str | None = None,
        headers: dict[str, str] | None = None,
        breaker: Breaker | None = None,
        retry: RetryPolicy | None = None,
        priority: Priority = "normal",
    ) -> Any:
        """Send `msg` and await the handler's reply, decoded to its return annotation.

        The message carries a deadline: if no worker starts it before `timeout`,
        it is not run. Raises `AskTimeout`, `RemoteError` (the handler failed), and
        what `tell` raises.

        With `breaker`, the ask goes through that circuit breaker (one per target is
        the usual choice) and fails fast with `CircuitOpen` while it is open. With
        `retry`, retryable failures (timeouts, full mailbox, retryable remote
        errors) are tried again per the policy. Each attempt is a new message with
        its own deadline and reply inbox (a repeated message id would be dropped as
        a duplicate of the first attempt, whose reply nobody waits for); an earlier
        attempt that is still queued expires unrun. `priority` is as for `tell`.
        """
        if breaker is not None or retry is not None:
            ids = [msg_id]

            async def once() -> Any:
                # Only the first attempt may carry the caller's id (see above).
                attempt_id = ids.pop() if ids else None
                return await self.ask(
                    msg,
                    timeout=timeout,
                    reply_type=reply_type,
                    msg_id=attempt_id,
                    headers=headers,
                    priority=priority,
                )

            async def guarded() -> Any:
                return await (breaker.call(once) if breaker is not None else once())

            return await (_retry_loop(guarded, retry) if retry is not None else guarded())
        if reply_type is None and self._spec is not None and isinstance(msg, Message):
            handler = self._spec.handlers.get(type(msg))
            target: Any = handler.reply_type if handler is not None else Any
        else:
            target = reply_type if reply_type is not None else Any
        # A retry is a new message (see above), so an ask carries a Nats-Msg-Id only
        # when the caller chose one, or on a cluster: there a node may die with the
        # ask written to its socket and never stored, and only an id lets the send
        # be tried again without the risk of storing (and running) it twice.
        if self._deadline is not None:
            # The timeout hierarchy: a call made while handling a message gets at most
            # what is left of that message's deadline.
            left = self._deadline - time.time()
            if left <= 0:
                raise AskTimeout(self.actor_type, self.key, 0.0)
            timeout = min(timeout, left)
        hdrs = self._headers(msg_id, headers, dedupe=self.mesh.clustered)
        hdrs[Hdr.DEADLINE] = str(int((time.time() + timeout) * 1000))
        subject = self._subject_for(priority, hdrs)
        with self._producer_span(hdrs, "ask"):
            try:
                return await self._ask(msg, hdrs, timeout, target, subject)
            except NoSuchActorType as exc:
                if priority != "normal":
                    await self._priorities_off(exc, priority, subject)
                raise

    async def _ask(
        self,
        msg: Message | bytes,
        hdrs: dict[str, str],
        timeout: float,
        target: Any,
        subject: str,
    ) -> Any:
        try:
            reply = await self.mesh.request(
                subject,
                self._encode(msg),
                headers=hdrs,
                timeout=timeout,
                reply_header=Hdr.REPLY_TO,
                max_size=self._limit,
            )
        except TimeoutError:
            raise AskTimeout(self.actor_type, self.key, timeout) from None
        return decode_reply(reply, target)
