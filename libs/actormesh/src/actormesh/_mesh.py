"""Mesh: one NATS connection to the mesh, publishing with flow control and typed errors.

`ActorRef` (tell / ask one actor) lives in `_ref`, a send's retries through a
broker outage in `_outage`. About 600 lines: the connection, the publishes
awaiting a PubAck (window, full-mailbox retry), the reply inbox and the
PubAck-to-error mapping share the in-flight tables.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import itertools
import logging
import sys
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, NamedTuple, TypeVar, cast, overload

import msgspec
import nats
import nats.errors
import nats.js.errors
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from nats.js import JetStreamContext

if TYPE_CHECKING:
    from ._interceptor import WorkerInterceptor

from ._actor import Actor, spec_of
from ._config import FullPolicy, Replication
from ._errors import (
    ActorMeshError,
    BrokerUnavailable,
    MailboxFull,
    PayloadTooLarge,
    StateConflict,
)
from ._hooks import Tracer
from ._inflight import InFlight
from ._nats import Client
from ._outage import Outage, first_attempt, no_pub_ack
from ._ref import ActorRef
from ._subjects import Subjects
from ._tools import ToolBus
from ._wire import Hdr

__all__ = ["ActorRef", "Mesh", "Receipt"]

log = logging.getLogger("actormesh.mesh")

A = TypeVar("A", bound=Actor)

# JetStream API error codes we turn into typed errors.
_ERR_STORE_FULL = 10077  # stream store failed: "maximum messages/bytes exceeded"
_ERR_MSG_TOO_BIG = 10054  # "message size exceeds maximum allowed"
_ERR_WRONG_LAST_SEQ = 10071  # "wrong last sequence": a compare-and-set that lost
#: "duplicate message id is in process": a copy sent earlier (same id) waits for
#: the stream's quorum; this one is neither stored nor refused for good.
_ERR_DUPLICATE_IN_PROCESS = 10158


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


class _AckFailed(NamedTuple):
    """A durable request's PubAck was a refusal or did not come (`error`); its
    reply is now awaited on `reply`."""

    error: Exception
    reply: asyncio.Future[Msg | _AckFailed | None]


_puback = msgspec.json.Decoder(_PubAck)
#: A PubAck with no error decodes straight to its Receipt.
_receipt_decoder = msgspec.json.Decoder(Receipt)


def header_size(headers: dict[str, str] | None) -> int:
    """Bytes the NATS protocol spends on these headers (the server counts them)."""
    if not headers:
        return 0
    size = 12  # a plain loop: for the usual two or three headers, the quickest
    for name, value in headers.items():
        size += len(name) + len(value) + 4
    return size


class Mesh:
    """One NATS connection to the mesh; makes `ActorRef`s and publishes."""

    #: Replicas and placement of every stream and bucket made through this
    #: connection (mailboxes unless their type says otherwise, dead letters,
    #: events, state, tools, grants): assign before starting workers.
    replication: Replication = Replication()

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
        #: Publishes awaiting their PubAck: at most `max_pending_publishes` at once.
        self._acks: InFlight[Msg] = InFlight(max_pending_publishes)
        self._inbox = ""
        self._inbox_dot = ""
        self._ids = itertools.count(1)
        # Cheaper than a NUID per message, and as unique: random per connection.
        self._msg_id_prefix = f"{uuid.uuid4().hex[:16]}-"
        self._msg_ids = itertools.count(1)
        #: Replies to requests (asks), each until its deadline; or the news that a
        #: durable request's PubAck failed (`_AckFailed`, see `_durable_request`).
        self._replies: InFlight[Msg | _AckFailed] = InFlight(sys.maxsize)
        self._reconnect_listeners: list[Callable[[], Awaitable[None]]] = []
        self._disconnect_listeners: list[Callable[[], Awaitable[None]]] = []
        self._owns_connection = False
        #: The server connected to is a node of a cluster: a node may die under a
        #: send, and another take over (asks then carry an id, to be resent).
        self.clustered = False
        #: Set by `actormesh.observability.instrument`; None means no tracing at all.
        self.tracer: Tracer | None = None
        #: Worker interceptors every `Worker` built on this mesh uses, outermost
        #: first and ahead of the worker's own (`instrument` adds the tracing one).
        self.interceptors: tuple[WorkerInterceptor, ...] = ()
        self._tools: ToolBus | None = None

    @property
    def tools(self) -> ToolBus:
        """The tool bus: list, call and grant the mesh's tools."""
        if self._tools is None:
            self._tools = ToolBus(self)
        return self._tools

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
        replication: Replication | None = None,
        **options: Any,
    ) -> Mesh:
        """Connect to NATS: one server or a cluster's, as a list or comma-separated
        (``"nats://a:4222,nats://b:4222"``, as NATS_URL takes them). A URL that
        cannot be parsed raises `BadServerUrl` at once, naming it.

        The first connection tries the servers (in random order) for
        `connect_wait` seconds, then raises `BrokerUnavailable` with the last
        error. Once connected, the connection reconnects forever: to any server
        given or learned from the cluster, each tried every `reconnect_time_wait`
        (0.5 s) after a loss, `max_reconnect_attempts=-1`; `connect_timeout` 2 s;
        a server that stops answering pings (`ping_interval` 5 s,
        `max_outstanding_pings` 2) is left for another. `options` pass through to
        `nats.connect` (credentials, TLS, these settings, ...) and override these
        defaults; docs/cluster.md has the whole list. `replication` sets
        `Mesh.replication` (the replicas of what this connection creates)."""
        from ._settings import redact, server_list

        pool = server_list(servers)
        mesh_ref: list[Mesh] = []

        async def error_cb(exc: Exception) -> None:
            # Some of nats-py's errors (a stale connection) have an empty message.
            log.warning("nats connection: %s", str(exc) or type(exc).__name__)

        options.setdefault("max_reconnect_attempts", -1)
        options.setdefault("reconnect_time_wait", 0.5)
        options.setdefault("connect_timeout", 2)
        # nats-py pings every 120 s: a frozen (SIGSTOPped, partitioned) node would hold
        # the connection for minutes. Every 5 s, two unanswered: left within ~15 s.
        options.setdefault("ping_interval", 5)
        options.setdefault("max_outstanding_pings", 2)
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

        url = redact(",".join(pool))
        nc = Client()
        try:
            # nats-py retries a failed first connect forever when reconnects are
            # unlimited; bound it so a missing broker is reported, not waited on.
            async with asyncio.timeout(connect_wait):
                await nc.connect(
                    pool,
                    reconnected_cb=on_reconnected,
                    disconnected_cb=on_disconnected,
                    **options,
                )
        except (OSError, nats.errors.Error, TimeoutError) as exc:
            # On the timeout, the client's own last error says why (refused, auth...).
            cause = nc.last_error if isinstance(exc, TimeoutError) and nc.last_error else exc
            tried = "" if len(pool) == 1 else f"none of the {len(pool)} servers answered; "
            raise BrokerUnavailable(
                f"cannot connect to NATS at {url} within {connect_wait:g}s ({tried}"
                f"last error: {cause!r}). Is the broker running? `make up` starts one; "
                "or set NATS_URL (servers separated by commas)",
                url=url,
                reason="connect",
            ) from exc
        mesh = cls(
            nc, prefix=prefix, name=name, full_policy=full_policy, publish_timeout=publish_timeout
        )
        mesh._owns_connection = True
        if replication is not None:
            mesh.replication = replication
        mesh_ref.append(mesh)
        await mesh.start()
        return mesh

    async def start(self) -> None:
        """Subscribe the reply inbox (done by `connect`; call it for a Mesh you built)."""
        if self._inbox:
            return
        self._read_clustered()
        self.on_reconnect(self._reconnected)
        self._inbox = self.nc.new_inbox()
        self._inbox_dot = self._inbox + "."
        sub = await self.nc.subscribe(
            self._inbox + ".*", cb=self._on_inbox, pending_msgs_limit=-1, pending_bytes_limit=-1
        )
        if isinstance(self.nc, Client):
            # Resolving a future never waits: the read loop can do it, without the
            # subscription's queue, task switch and coroutine per PubAck and reply.
            self.nc.deliver_directly(sub, self._resolve)

    async def _reconnected(self) -> None:
        self._read_clustered()

    async def close(self, timeout: float = 5.0) -> None:
        """Drain and close the connection (if `connect` made it), within `timeout`
        seconds: a broker that takes nothing more gets its connection dropped."""
        self._acks.close()
        self._replies.close()
        if self._tools is not None:
            await self._tools.grants.close()
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
        await ensure_mailbox(
            self.js,
            self.subjects,
            spec.actor_type,
            spec.mailbox,
            update=update,
            replication=self.replication,
        )

    # -- publishing -------------------------------------------------------------------

    async def _on_inbox(self, msg: Msg) -> None:
        self._resolve(msg)

    def _resolve(self, msg: Msg) -> None:
        """Hand a PubAck or a reply to whoever waits for it (nobody: dropped)."""
        token = msg.subject[len(self._inbox_dot) :]
        if not self._acks.resolve(token, msg):
            self._replies.resolve(token, msg)

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
        self,
        subject: str,
        payload: bytes,
        headers: dict[str, str] | None,
        timeout: float | None,
        at: float | None = None,
        ack_at: float | None = None,
    ) -> tuple[str, asyncio.Future[Msg | None]]:
        """Publish to JetStream without waiting: the PubAck's token and future, which
        resolves to the PubAck, or to None if `timeout` (None: none) passes first
        (with `at`, when the loop's clock reaches it; the wait for room ends there;
        `ack_at`, if given, ends the wait for the PubAck instead)."""
        acks = self._acks
        if acks.full():
            if at is None:
                await acks.wait_room()
            else:
                async with asyncio.timeout_at(at):
                    await acks.wait_room()
        token = f"{next(self._ids):x}"
        fut = acks.add(token, timeout, at if ack_at is None else ack_at)
        nc = self.nc
        try:
            if type(nc) is Client:
                pending = nc.publish_soon(subject, payload, self._inbox_dot + token, headers)
                if pending is not None:
                    await pending
            else:
                await nc.publish(subject, payload, reply=self._inbox_dot + token, headers=headers)
        except nats.errors.MaxPayloadError as exc:
            acks.discard(token)
            raise PayloadTooLarge(len(payload), self.nc.max_payload) from exc
        except (nats.errors.ConnectionClosedError, nats.errors.OutboundBufferLimitError) as exc:
            acks.discard(token)
            closed = isinstance(exc, nats.errors.ConnectionClosedError)
            raise BrokerUnavailable(
                f"cannot publish to {subject}: {exc!r}",
                reason="closed" if closed else "disconnected",
                subject=subject,
                msg_id=(headers or {}).get(Hdr.MSG_ID, ""),
            ) from exc
        except BaseException:
            acks.discard(token)
            raise
        return token, fut

    def _read_clustered(self) -> None:
        """Whether the server connected to is a node of a cluster (its INFO names
        one), into `clustered`: read at start and after each reconnect, not per
        send (it is on every ask's path)."""
        # nats-py keeps the server's INFO only in this attribute (no public API).
        info = getattr(self.nc, "_server_info", None)
        self.clustered = bool(info.get("cluster")) if isinstance(info, dict) else False

    def new_msg_id(self) -> str:
        """A unique message id: this connection's random prefix and a counter."""
        return f"{self._msg_id_prefix}{next(self._msg_ids)}"

    async def _receipt(
        self, subject: str, token: str, fut: asyncio.Future[Msg | None], timeout: float | None
    ) -> Receipt:
        """The Receipt of a `_send` that was given `timeout` (named in the error)."""
        try:
            msg = await fut
        finally:
            self._acks.discard(token)  # cancelled while waiting: no longer in flight
        return self._parse_puback(subject, msg, timeout)

    def _parse_puback(self, subject: str, msg: Msg | None, timeout: float | None = None) -> Receipt:
        """The Receipt in a PubAck, or the typed error for its absence (None: not
        within `timeout`) or for the refusal it carries."""
        if msg is None:
            raise no_pub_ack(subject, timeout)
        data = msg.data
        if data and b'"error"' not in data:
            try:
                return _receipt_decoder.decode(data)
            except msgspec.DecodeError:
                pass  # reported below, with the whole PubAck looked at
        if not data and msg.headers and msg.headers.get("Status") == "503":
            # No stream listens: it does not exist, or has no leader right now (an
            # election, its node down). `_store` asks JetStream which it is.
            raise BrokerUnavailable(
                f"no stream leader answered on {subject} (no responders)",
                reason="no_responders",
                subject=subject,
            )
        try:
            ack = _puback.decode(data)
        except msgspec.DecodeError as exc:
            raise ActorMeshError(f"unreadable PubAck for {subject}: {data[:200]!r}") from exc
        if ack.error is not None:
            raise _refusal(subject, ack.error, len(data))
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
        at = asyncio.get_running_loop().time() + timeout
        token = f"{next(self._ids):x}"
        fut = self._replies.add(token, timeout, at)
        inbox = self._inbox_dot + token
        try:
            if reply_header is None:
                await self.nc.publish(subject, payload, reply=inbox, headers=headers)
                msg = cast("Msg | None", await fut)  # no PubAck: no `_AckFailed`
            else:
                # The caller's dict: ours to extend (ActorRef builds a fresh one).
                hdrs = headers if headers is not None else {}
                hdrs[reply_header] = inbox
                msg = await self._durable_request(
                    subject, payload, hdrs, max_size, full_policy, timeout, at, token, fut
                )
        finally:
            self._replies.discard(token)
        if msg is None:
            raise TimeoutError
        return msg

    async def _durable_request(
        self,
        subject: str,
        payload: bytes,
        headers: dict[str, str],
        max_size: int | None,
        full_policy: FullPolicy | None,
        timeout: float,
        at: float,
        token: str,
        reply: asyncio.Future[Msg | _AckFailed | None],
    ) -> Msg | None:
        """Store a request and await its reply (None: not in time), the task waking
        once in the common case instead of twice.

        The PubAck is checked by a callback as it arrives (`_request_acked`), not by
        this task: only a problem with it (a refusal, or none in time) wakes the task
        before the reply, and `_store`'s loop then handles it as it handles its own
        (retry a full mailbox, resend through an outage, raise). A reply proves the
        request was stored, so it ends the wait even if its PubAck is still to come."""
        self.check_size(payload, headers, limit=max_size)
        started = time.monotonic()
        wait, ack_at = first_attempt(headers, timeout, at)
        failed: Exception
        try:
            # A PubAck that may not be resent needs no deadline of its own: the
            # reply's (`at`, the same) ends the ask with TimeoutError either way.
            ack_wait = wait if ack_at is not None else None
            ack_token, ack = await self._send(subject, payload, headers, ack_wait, at, ack_at)
        except BrokerUnavailable as exc:
            failed = exc
        else:
            ack.add_done_callback(functools.partial(self._request_acked, subject, wait, token))
            try:
                got = await reply
            finally:
                self._acks.discard(ack_token)  # a reply before its PubAck, or cancelled
            if not isinstance(got, _AckFailed):
                return got
            failed, reply = got.error, got.reply
        await self._store(
            subject,
            payload,
            headers,
            max_size,
            full_policy,
            ack_timeout=timeout,
            at=at,
            failed=failed,
            started=started,
        )
        # Only the first send's PubAck has the callback: no second `_AckFailed`.
        return cast("Msg | None", await reply)

    def _request_acked(
        self, subject: str, wait: float | None, token: str, ack: asyncio.Future[Msg | None]
    ) -> None:
        """A durable request's PubAck came (or its wait ended): if it is not a plain
        "stored", wake the request with the error, its reply `token` awaited anew."""
        if ack.cancelled():
            return
        fut = self._replies.pending.get(token)
        if fut is None or fut.done():
            return  # answered already, or no longer awaited
        try:
            self._parse_puback(subject, ack.result(), wait)
        except Exception as exc:  # the refusal or absence `_parse_puback` raises
            # A new future under the same deadline before the old one wakes anybody:
            # a reply that comes while the send is retried must find it.
            fut.set_result(_AckFailed(exc, self._replies.renew(token)))

    async def _store(
        self,
        subject: str,
        payload: bytes,
        headers: dict[str, str] | None,
        max_size: int | None,
        full_policy: FullPolicy | None,
        *,
        ack_timeout: float | None = None,
        at: float | None = None,
        failed: Exception | None = None,
        started: float | None = None,
    ) -> Receipt:
        """Publish and parse the PubAck, waiting `ack_timeout` for it, retrying a full
        mailbox per policy. With `at` (the loop's clock), a request's deadline, set
        with timeout `ack_timeout`: the wait for room in the window, for the PubAck
        and between retries end there, with TimeoutError.

        A broker that cannot take the message for a moment (a cluster electing the
        stream's leader, a node down) is tried again with the same headers, so the
        same `Nats-Msg-Id`, until the deadline: no responders or a JetStream 503
        while the stream exists, and a PubAck that does not come (resent only if
        the message has an id or is a compare-and-set, so a copy cannot be stored
        twice). Then `BrokerUnavailable`; a stream that does not exist is
        `NoSuchActorType` (for a mailbox) at once.

        `failed`: the first attempt was made by the caller (`_durable_request`, at
        `started` on the monotonic clock) and failed so; the loop goes on from there.
        """
        if failed is None:
            self.check_size(payload, headers, limit=max_size)
        if started is None:
            started = time.monotonic()
        retry = 0
        # Until something fails, no outage bookkeeping: the common case stays cheap.
        outage: Outage | None = None
        wait, ack_at = first_attempt(headers, ack_timeout, at)
        while True:
            try:
                if failed is not None:
                    # Handled below as if this attempt had failed so (see `failed`).
                    exc, failed = failed, None
                    raise exc
                return await self._attempt(subject, payload, headers, wait, at, ack_at)
            except MailboxFull as exc:
                policy = full_policy or self.full_policy
                waited = time.monotonic() - started
                if waited >= policy.wait:
                    exc.waited = waited
                    raise
                retry += 1
                await _pause(min(policy.backoff.delay(retry), policy.wait - waited), at)
            except BrokerUnavailable as exc:
                if outage is None:
                    elapsed = time.monotonic() - started
                    outage = Outage(self, subject, headers, ack_timeout, at, elapsed)
                await outage.handle(exc)
            if outage is not None:
                wait, ack_at = outage.attempt()

    async def _attempt(
        self,
        subject: str,
        payload: bytes,
        headers: dict[str, str] | None,
        wait: float | None,
        at: float | None,
        ack_at: float | None,
    ) -> Receipt:
        token, ack = await self._send(subject, payload, headers, wait, at, ack_at)
        try:
            msg = await ack
        finally:
            self._acks.discard(token)  # cancelled while waiting: no longer in flight
        return self._parse_puback(subject, msg, wait)

    async def stream_missing(self, subject: str, timeout: float = 1.0) -> bool:
        """Whether JetStream says no stream stores `subject`; False when it cannot
        say within `timeout` (its meta leader being elected, say)."""
        try:
            async with asyncio.timeout(timeout):
                await self.js.find_stream_name_by_subject(subject)
        except nats.js.errors.NotFoundError:
            return True
        except (TimeoutError, nats.errors.Error):
            return False
        return False

    async def flush(self, timeout: float = 5.0) -> None:
        await self.nc.flush(max(1, round(timeout)))


async def _pause(delay: float, at: float | None) -> None:
    """Sleep `delay` seconds; with a deadline `at` that comes first, until it, then
    raise TimeoutError."""
    if at is not None:
        left = at - asyncio.get_running_loop().time()
        if left <= delay:
            await asyncio.sleep(max(left, 0.0))
            raise TimeoutError
    await asyncio.sleep(delay)


def _refusal(subject: str, err: _ApiError, size: int) -> ActorMeshError:
    """The typed error for a PubAck that carries a JetStream API error."""
    actor_type = subject.split(".")[2] if ".mbox." in subject else subject
    if err.err_code == _ERR_STORE_FULL:
        return MailboxFull(actor_type, reason=err.description)
    if err.err_code == _ERR_MSG_TOO_BIG:
        return PayloadTooLarge(size, 0, what=f"stream limit ({err.description})")
    if err.err_code == _ERR_WRONG_LAST_SEQ and subject.startswith("$KV."):
        _, bucket, key = subject.split(".", 2)
        expected = err.description.rpartition(" ")[2]
        return StateConflict(bucket, key, expected=int(expected) if expected.isdigit() else -1)
    if err.err_code == _ERR_DUPLICATE_IN_PROCESS:
        return BrokerUnavailable(
            f"an earlier copy of the message on {subject} (same Nats-Msg-Id) still waits "
            "for the stream's quorum",
            reason="in_process",
            subject=subject,
        )
    if err.code >= 500:
        # 503: no quorum, or the store busy. 500: a cluster in transition, e.g. a
        # node that is no longer the stream's leader (err_code 10009, "JetStream
        # cluster can not handle request"). Both pass; retried like no responders.
        return BrokerUnavailable(
            f"JetStream cannot store the message on {subject} now: {err.description} "
            f"(code {err.code}, err_code {err.err_code})",
            reason="jetstream_unavailable",
            subject=subject,
        )
    return ActorMeshError(
        f"JetStream refused the message on {subject}: {err.description} "
        f"(code {err.code}, err_code {err.err_code})"
    )


def _abort(nc: NATS) -> None:
    """Drop the connection's socket now, unsent bytes and all (nats-py has no API
    for it: this reaches the asyncio transport under its TCP transport)."""
    writer = getattr(getattr(nc, "_transport", None), "_io_writer", None)
    # Duck-typed: uvloop's transports do not derive from asyncio's classes.
    abort = getattr(getattr(writer, "transport", None), "abort", None)
    if callable(abort):
        abort()
