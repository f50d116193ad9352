"""Mesh: one NATS connection to the mesh, publishing with flow control and typed errors.

`ActorRef` (tell / ask one actor) lives in `_ref`.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, TypeVar, overload

import msgspec
import nats
import nats.errors
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from nats.js import JetStreamContext

if TYPE_CHECKING:
    from ._interceptor import WorkerInterceptor

from ._actor import Actor, spec_of
from ._config import FullPolicy
from ._errors import (
    ActorMeshError,
    BrokerUnavailable,
    MailboxFull,
    NoSuchActorType,
    PayloadTooLarge,
)
from ._hooks import Tracer
from ._nats import Client
from ._ref import ActorRef
from ._subjects import Subjects

__all__ = ["ActorRef", "Mesh", "Receipt"]

log = logging.getLogger("actormesh.mesh")

A = TypeVar("A", bound=Actor)

# JetStream API error codes we turn into typed errors.
_ERR_STORE_FULL = 10077  # stream store failed: "maximum messages/bytes exceeded"
_ERR_MSG_TOO_BIG = 10054  # "message size exceeds maximum allowed"


class Receipt(msgspec.Struct, frozen=True):
    """The broker's acknowledgement of a stored message."""

    stream: str
    seq: int
    duplicate: bool = False


class _ApiError(msgspec.Struct):
    code: int = 0
    err_code: int = 0
    description: str = ""


class _PubAck(msgspec.Struct):
    stream: str = ""
    seq: int = 0
    duplicate: bool = False
    error: _ApiError | None = None


_puback = msgspec.json.Decoder(_PubAck)


def header_size(headers: dict[str, str] | None) -> int:
    """Bytes the NATS protocol spends on these headers (the server counts them)."""
    if not headers:
        return 0
    return 12 + sum(len(k) + len(v) + 4 for k, v in headers.items())


class Mesh:
    """One NATS connection to the mesh; makes `ActorRef`s and publishes."""

    def __init__(
        self,
        nc: NATS,
        *,
        prefix: str = "mesh",
        name: str = "",
        full_policy: FullPolicy | None = None,
        publish_timeout: float = 5.0,
        max_pending_publishes: int = 4096,
    ) -> None:
        self.nc = nc
        self.js: JetStreamContext = nc.jetstream(timeout=publish_timeout)
        self.subjects = Subjects(prefix)
        self.name = name
        self.full_policy = full_policy or FullPolicy()
        self.publish_timeout = publish_timeout
        self._window = asyncio.Semaphore(max_pending_publishes)
        self._inbox = ""
        self._ids = itertools.count(1)
        # Cheaper than a NUID per message, and as unique: random per connection.
        self._msg_id_prefix = f"{uuid.uuid4().hex[:16]}-"
        self._msg_ids = itertools.count(1)
        self._waiters: dict[str, asyncio.Future[Msg]] = {}
        self._reconnect_listeners: list[Callable[[], Awaitable[None]]] = []
        self._disconnect_listeners: list[Callable[[], Awaitable[None]]] = []
        self._owns_connection = False
        #: Set by `actormesh.observability.instrument`; None means no tracing at all.
        self.tracer: Tracer | None = None
        #: Worker interceptors every `Worker` built on this mesh uses, outermost
        #: first and ahead of the worker's own (`instrument` adds the tracing one).
        self.interceptors: tuple[WorkerInterceptor, ...] = ()

    # -- connection -----------------------------------------------------------------

    @classmethod
    async def connect(
        cls,
        servers: str | list[str] = "nats://127.0.0.1:4222",
        *,
        prefix: str = "mesh",
        name: str = "",
        full_policy: FullPolicy | None = None,
        publish_timeout: float = 5.0,
        connect_wait: float = 10.0,
        **options: Any,
    ) -> Mesh:
        """Connect to NATS. `options` pass through to `nats.connect` (credentials,
        TLS, reconnect settings, ...). Once connected, the connection reconnects
        forever; the first connection is tried for `connect_wait` seconds."""
        mesh_ref: list[Mesh] = []

        async def error_cb(exc: Exception) -> None:
            log.warning("nats connection: %s", exc)

        options.setdefault("max_reconnect_attempts", -1)
        options.setdefault("reconnect_time_wait", 0.5)
        options.setdefault("connect_timeout", 2)
        options.setdefault("name", name or "actormesh")
        options.setdefault("error_cb", error_cb)
        options.setdefault("allow_reconnect", True)
        user_reconnected = options.pop("reconnected_cb", None)
        user_disconnected = options.pop("disconnected_cb", None)

        async def on_reconnected() -> None:
            if mesh_ref:
                await mesh_ref[0]._notify(mesh_ref[0]._reconnect_listeners)
            if user_reconnected:
                await user_reconnected()

        async def on_disconnected() -> None:
            if mesh_ref:
                await mesh_ref[0]._notify(mesh_ref[0]._disconnect_listeners)
            if user_disconnected:
                await user_disconnected()

        url = servers if isinstance(servers, str) else ",".join(servers)
        try:
            # nats-py retries a failed first connect forever when reconnects are
            # unlimited; bound it so a missing broker is reported, not waited on.
            async with asyncio.timeout(connect_wait):
                nc = Client()
                await nc.connect(
                    servers,
                    reconnected_cb=on_reconnected,
                    disconnected_cb=on_disconnected,
                    **options,
                )
        except (OSError, nats.errors.Error, TimeoutError) as exc:
            raise BrokerUnavailable(
                f"cannot connect to NATS at {url} (tried for {connect_wait:g}s: {exc!r}). "
                "Is the broker running? `make up` starts one; or set NATS_URL",
                url=url,
            ) from exc
        mesh = cls(
            nc, prefix=prefix, name=name, full_policy=full_policy, publish_timeout=publish_timeout
        )
        mesh._owns_connection = True
        mesh_ref.append(mesh)
        await mesh.start()
        return mesh

    async def start(self) -> None:
        """Subscribe the reply inbox (done by `connect`; call it for a Mesh you built)."""
        if self._inbox:
            return
        self._inbox = self.nc.new_inbox()
        await self.nc.subscribe(
            self._inbox + ".*", cb=self._on_inbox, pending_msgs_limit=-1, pending_bytes_limit=-1
        )

    async def close(self, timeout: float = 5.0) -> None:
        """Drain and close the connection (if `connect` made it), within `timeout`
        seconds: a broker that takes nothing more gets its connection dropped."""
        for fut in self._waiters.values():
            if not fut.done():
                fut.cancel()
        self._waiters.clear()
        if not self._owns_connection or self.nc.is_closed:
            return
        # In a task of its own, waited on with a deadline: nats-py's drain swallows a
        # cancellation (so `asyncio.timeout` cannot stop it), and its close waits
        # for the socket to take the unsent bytes, which a stuck broker never does.
        closing = asyncio.ensure_future(self._drain_and_close())
        done, _ = await asyncio.wait({closing}, timeout=timeout)
        if done:
            return
        log.warning("the NATS connection did not drain within %gs: dropping it", timeout)
        _abort(self.nc)
        # With the socket gone nothing in nats-py's close can block any more.
        with contextlib.suppress(Exception):
            async with asyncio.timeout(1.0):
                await self.nc.close()
        if not closing.done():
            closing.cancel()

    async def _drain_and_close(self) -> None:
        with contextlib.suppress(Exception):
            await self.nc.drain()
        if not self.nc.is_closed:
            with contextlib.suppress(Exception):
                await self.nc.close()

    async def __aenter__(self) -> Mesh:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    def on_reconnect(self, cb: Callable[[], Awaitable[None]]) -> None:
        self._reconnect_listeners.append(cb)

    def on_disconnect(self, cb: Callable[[], Awaitable[None]]) -> None:
        self._disconnect_listeners.append(cb)

    @staticmethod
    async def _notify(listeners: list[Callable[[], Awaitable[None]]]) -> None:
        for cb in list(listeners):
            try:
                await cb()
            except Exception:
                log.exception("connection listener failed")

    @property
    def connected(self) -> bool:
        return bool(self.nc.is_connected)

    # -- refs -------------------------------------------------------------------------

    @overload
    def ref(self, actor: type[A], key: str | None = None) -> ActorRef[A]: ...
    @overload
    def ref(self, actor: str, key: str | None = None) -> ActorRef[Actor]: ...
    def ref(self, actor: type[A] | str, key: str | None = None) -> ActorRef[Any]:
        """A reference to the actor `key` of a type (a class, or its type name)."""
        return ActorRef(self, actor, key)

    async def declare(self, actor: type[Actor], *, update: bool = False) -> None:
        """Create the actor type's mailbox now, so senders can tell before a worker runs."""
        from ._mailbox import ensure_mailbox

        spec = spec_of(actor)
        await ensure_mailbox(self.js, self.subjects, spec.actor_type, spec.mailbox, update=update)

    # -- publishing -------------------------------------------------------------------

    def _new_token(self) -> tuple[str, asyncio.Future[Msg]]:
        token = f"{next(self._ids):x}"
        fut: asyncio.Future[Msg] = asyncio.get_running_loop().create_future()
        self._waiters[token] = fut
        return token, fut

    async def _on_inbox(self, msg: Msg) -> None:
        fut = self._waiters.pop(msg.subject[len(self._inbox) + 1 :], None)
        if fut is not None and not fut.done():
            fut.set_result(msg)

    def check_size(
        self, payload: bytes, headers: dict[str, str] | None, *, limit: int | None = None
    ) -> None:
        """Refuse what the server would reject by resetting the connection."""
        size = len(payload) + header_size(headers)
        server_max = self.nc.max_payload
        if size > server_max:
            raise PayloadTooLarge(size, server_max)
        if limit is not None and size > limit:
            raise PayloadTooLarge(size, limit, what="mailbox max_msg_size")

    async def _send(
        self, subject: str, payload: bytes, headers: dict[str, str] | None
    ) -> asyncio.Future[Msg]:
        """Publish to JetStream without waiting; the future resolves to the PubAck."""
        await self._window.acquire()
        token, fut = self._new_token()
        fut.add_done_callback(self._release_window)
        try:
            await self.nc.publish(subject, payload, reply=f"{self._inbox}.{token}", headers=headers)
        except nats.errors.MaxPayloadError as exc:
            self._drop(token, fut)
            raise PayloadTooLarge(len(payload), self.nc.max_payload) from exc
        except (nats.errors.ConnectionClosedError, nats.errors.OutboundBufferLimitError) as exc:
            self._drop(token, fut)
            raise BrokerUnavailable(f"cannot publish to {subject}: {exc!r}") from exc
        except BaseException:
            self._drop(token, fut)
            raise
        return fut

    def _release_window(self, _fut: asyncio.Future[Msg]) -> None:
        self._window.release()

    def new_msg_id(self) -> str:
        """A unique message id: this connection's random prefix and a counter."""
        return f"{self._msg_id_prefix}{next(self._msg_ids)}"

    def _drop(self, token: str, fut: asyncio.Future[Msg]) -> None:
        self._waiters.pop(token, None)
        if not fut.done():
            fut.cancel()

    async def _receipt(
        self, subject: str, fut: asyncio.Future[Msg], timeout: float | None
    ) -> Receipt:
        if fut.done() and not fut.cancelled():
            # Pipelined sends mostly find their PubAck already here: skip the timer.
            return self._parse_puback(subject, fut.result())
        limit = timeout if timeout is not None else self.publish_timeout
        try:
            async with asyncio.timeout(limit):
                msg = await fut
        except TimeoutError:
            raise BrokerUnavailable(
                f"no PubAck for {subject} within {limit:g}s: the broker is "
                "unreachable or overloaded; retrying with the same msg_id is safe"
            ) from None
        finally:
            if not fut.done():
                fut.cancel()
        return self._parse_puback(subject, msg)

    def _parse_puback(self, subject: str, msg: Msg) -> Receipt:
        if not msg.data and msg.headers and msg.headers.get("Status") == "503":
            actor_type = subject.split(".")[2] if ".mbox." in subject else subject
            raise NoSuchActorType(actor_type, subject=subject)
        try:
            ack = _puback.decode(msg.data)
        except msgspec.DecodeError as exc:
            raise ActorMeshError(f"unreadable PubAck for {subject}: {msg.data[:200]!r}") from exc
        if ack.error is not None:
            err = ack.error
            actor_type = subject.split(".")[2] if ".mbox." in subject else subject
            if err.err_code == _ERR_STORE_FULL:
                raise MailboxFull(actor_type, reason=err.description)
            if err.err_code == _ERR_MSG_TOO_BIG:
                raise PayloadTooLarge(len(msg.data), 0, what=f"stream limit ({err.description})")
            raise ActorMeshError(
                f"JetStream refused the message on {subject}: {err.description} "
                f"(code {err.code}, err_code {err.err_code})",
                retryable=err.code >= 500,
            )
        return Receipt(ack.stream, ack.seq, ack.duplicate)

    async def publish(
        self,
        subject: str,
        payload: bytes,
        *,
        headers: dict[str, str] | None = None,
        timeout: float | None = None,
        max_size: int | None = None,
        full_policy: FullPolicy | None = None,
    ) -> Receipt:
        """Publish raw bytes to a JetStream subject and wait for the PubAck."""
        return await self._store(
            subject,
            payload,
            headers,
            max_size,
            full_policy,
            ack_timeout=timeout if timeout is not None else self.publish_timeout,
        )

    async def request(
        self,
        subject: str,
        payload: bytes,
        *,
        headers: dict[str, str] | None = None,
        timeout: float,
        reply_header: str | None = None,
        max_size: int | None = None,
        full_policy: FullPolicy | None = None,
    ) -> Msg:
        """Publish with a reply inbox and await the reply; raises TimeoutError.

        With `reply_header`, the message goes to JetStream (PubAck awaited, full
        mailbox handled as `publish` does) and the inbox travels in that header;
        otherwise it is a core NATS request with the inbox as reply subject. One
        deadline covers both the PubAck and the reply.
        """
        token, fut = self._new_token()
        inbox = f"{self._inbox}.{token}"
        try:
            async with asyncio.timeout(timeout):
                if reply_header is None:
                    await self.nc.publish(subject, payload, reply=inbox, headers=headers)
                else:
                    # The caller's dict: ours to extend (ActorRef builds a fresh one).
                    hdrs = headers if headers is not None else {}
                    hdrs[reply_header] = inbox
                    await self._store(subject, payload, hdrs, max_size, full_policy)
                return await fut
        finally:
            self._drop(token, fut)

    async def _store(
        self,
        subject: str,
        payload: bytes,
        headers: dict[str, str] | None,
        max_size: int | None,
        full_policy: FullPolicy | None,
        *,
        ack_timeout: float | None = None,
    ) -> Receipt:
        """Publish and parse the PubAck, waiting `ack_timeout` for it (None: under the
        caller's own deadline, with no timer here), retrying a full mailbox per policy."""
        self.check_size(payload, headers, limit=max_size)
        policy = full_policy or self.full_policy
        started = time.monotonic()
        retry = 0
        while True:
            ack = await self._send(subject, payload, headers)
            try:
                if ack_timeout is not None:
                    return await self._receipt(subject, ack, ack_timeout)
                return self._parse_puback(subject, await ack)
            except MailboxFull as exc:
                waited = time.monotonic() - started
                if waited >= policy.wait:
                    exc.waited = waited
                    raise
                retry += 1
                await asyncio.sleep(min(policy.backoff.delay(retry), policy.wait - waited))
            finally:
                if not ack.done():
                    ack.cancel()

    async def flush(self, timeout: float = 5.0) -> None:
        await self.nc.flush(max(1, round(timeout)))


def _abort(nc: NATS) -> None:
    """Drop the connection's socket now, unsent bytes and all (nats-py has no API
    for it: this reaches the asyncio transport under its TCP transport)."""
    writer = getattr(getattr(nc, "_transport", None), "_io_writer", None)
    # Duck-typed: uvloop's transports do not derive from asyncio's classes.
    abort = getattr(getattr(writer, "transport", None), "abort", None)
    if callable(abort):
        abort()
