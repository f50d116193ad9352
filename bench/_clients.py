"""The clients the benchmarks drive: one raw nats-py publisher shared by every
contender, and each framework's own API (actormesh refs, FastStream's broker).

`RawPublisher` is the end-to-end tell publisher for every contender (what
`RawClient.tell` did before issue 14, plus a unique ``Nats-Msg-Id`` per message):
a core publish with a reply subject per message on one wildcard inbox, a future
per PubAck, ``window`` PubAcks in flight. A PubAck that refuses the message
because the mailbox is full (err_code 10077, "maximum messages exceeded") is
counted in `refusals` and the same message is sent again with the same id: at
once the first time (the window in flight took ~20 ms, the worker has drained
since), then after 1, 2, 4 ... 50 ms. Any other refusal fails the run.

Its `ask` is a "durable request": a JetStream publish whose headers carry the
reply inbox (``Reply-To`` for the raw worker; actormesh's ``Am-Reply-To`` and
``Am-Deadline`` in bench_sender), awaiting the PubAck and then the reply.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
from collections import deque
from collections.abc import Callable
from typing import Any

import msgspec
import nats
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg

MSG_ID = "Nats-Msg-Id"
WINDOW = 1024
PAYLOAD = 128
MAX_BACKOFF = 0.05


class RawAckError(Exception):
    pass


def refused_full(msg: Msg) -> bool:
    data = msg.data
    return b'"error"' in data and (b"10077" in data or b"maximum messages" in data)


def check_puback(msg: Msg) -> None:
    # A PubAck is {"stream":..,"seq":..}; a refusal carries "error"; no body is a 503.
    if not msg.data or b'"error"' in msg.data:
        raise RawAckError(f"JetStream refused the message: {msg.data!r} {msg.headers}")


def blob_payload() -> bytes:
    """A `bench.actors.Blob` whose JSON is exactly PAYLOAD bytes."""
    from bench.actors import Blob

    pad = PAYLOAD - len(msgspec.json.encode(Blob(data="")))
    out = msgspec.json.encode(Blob(data="x" * pad))
    if len(out) != PAYLOAD:
        raise RuntimeError(f"Blob payload is {len(out)} bytes")
    return out


def echo_payload(i: int) -> bytes:
    return b"P%021d" % i


class RawPublisher:
    """Raw nats-py: pipelined tells with a msg id each, and durable requests."""

    def __init__(
        self,
        subject: str,
        payload: bytes,
        *,
        headers: dict[str, str] | None = None,
        ask_payload: Callable[[int], bytes] = echo_payload,
        ask_headers: Callable[[str], dict[str, str]] = lambda inbox: {"Reply-To": inbox},
        echo: bool = True,
        window: int = WINDOW,
    ) -> None:
        self.nc: NATS | None = None
        self.subject = subject
        self.payload = payload
        self.extra = headers or {}
        self.ask_payload = ask_payload
        self.ask_headers = ask_headers
        self.echo = echo
        self.window = window
        self.refusals = 0
        self._seq = itertools.count(1)
        self._ids = itertools.count(1)
        self._id_prefix = ""
        self._waiters: dict[str, asyncio.Future[Msg]] = {}
        self._inbox = ""
        self._cut = 0

    async def start(self, url: str) -> None:
        self.nc = await nats.connect(url, name="bench-raw-client")
        self._inbox = self.nc.new_inbox()
        self._id_prefix = self._inbox.rsplit(".", 1)[-1] + "-"
        self._cut = len(self._inbox) + 1
        await self.nc.subscribe(
            self._inbox + ".*", cb=self._on, pending_msgs_limit=-1, pending_bytes_limit=-1
        )

    async def _on(self, msg: Msg) -> None:
        fut = self._waiters.pop(msg.subject[self._cut :], None)
        if fut is not None and not fut.done():
            fut.set_result(msg)

    def _future(self) -> tuple[str, str, asyncio.Future[Msg]]:
        token = f"{next(self._ids):x}"
        fut: asyncio.Future[Msg] = asyncio.get_running_loop().create_future()
        self._waiters[token] = fut
        return token, f"{self._inbox}.{token}", fut

    async def _send(self, subject: str, msg_id: str) -> asyncio.Future[Msg]:
        if self.nc is None:
            raise RuntimeError("not started")
        _, reply, fut = self._future()
        headers = {MSG_ID: msg_id, **self.extra} if self.extra else {MSG_ID: msg_id}
        await self.nc.publish(subject, self.payload, reply=reply, headers=headers)
        return fut

    async def _settle(self, subject: str, msg_id: str, fut: asyncio.Future[Msg]) -> None:
        msg = await fut
        delay = 0.0
        while refused_full(msg):
            self.refusals += 1
            if delay:
                await asyncio.sleep(delay)
            delay = min(MAX_BACKOFF, delay * 2 or 0.001)
            msg = await (await self._send(subject, msg_id))
        check_puback(msg)

    async def tell(self, n: int, subject_of: Callable[[int], str] | None = None) -> None:
        """`n` tells, `window` PubAcks in flight; `subject_of(i)` picks each subject."""
        pending: deque[tuple[str, str, asyncio.Future[Msg]]] = deque()
        prefix, seq = self._id_prefix, self._seq
        for i in range(n):
            subject = self.subject if subject_of is None else subject_of(i)
            msg_id = f"{prefix}{next(seq)}"
            pending.append((subject, msg_id, await self._send(subject, msg_id)))
            if len(pending) >= self.window:
                await self._settle(*pending.popleft())
        while pending:
            await self._settle(*pending.popleft())

    async def tell_one(self) -> None:
        """One tell, awaiting its PubAck (what `ActorRef.tell` does)."""
        msg_id = f"{self._id_prefix}{next(self._seq)}"
        await self._settle(self.subject, msg_id, await self._send(self.subject, msg_id))

    async def ask(self, i: int) -> None:
        await self.request(i)

    async def request(self, i: int) -> Msg:
        """One durable request: PubAck, then the reply on our inbox."""
        if self.nc is None:
            raise RuntimeError("not started")
        ack_token, ack_to, ack = self._future()
        reply_token, reply_to, reply = self._future()
        payload = self.ask_payload(i)
        try:
            async with asyncio.timeout(30.0):
                await self.nc.publish(
                    self.subject, payload, reply=ack_to, headers=self.ask_headers(reply_to)
                )
                check_puback(await ack)
                got = await reply
        finally:
            self._waiters.pop(ack_token, None)
            self._waiters.pop(reply_token, None)
        if self.echo and got.data != payload:
            raise RuntimeError(f"wrong reply {got.data!r}")
        return got

    async def close(self) -> None:
        if self.nc is not None:
            with contextlib.suppress(Exception):
                await self.nc.drain()


class MeshClient:
    """actormesh: `ref.tell_many` (the sender path, window 1024) and `ref.ask`.

    A full mailbox is retried by `tell_many` itself (its `full_policy`: here up to
    60 s); the refusals are counted by wrapping this Mesh's PubAck parser."""

    def __init__(self, actor: Any, key: str, *, name: str = "", count: bool = True) -> None:
        from bench.actors import Blob, Ping

        self._ping, self._actor, self._key, self._name = Ping, actor, key, name
        self.blob = msgspec.json.decode(blob_payload(), type=Blob)
        self.mesh: Any = None
        self.ref: Any = None
        self.refusals = 0
        self.counts_refusals = False
        self._count = count

    async def start(self, url: str) -> None:
        from actormesh import FullPolicy, MailboxFull, Mesh

        self.mesh = await Mesh.connect(
            url, prefix="bench", name=self._name, full_policy=FullPolicy(wait=60.0)
        )
        self.ref = self.mesh.ref(self._actor, self._key)
        # A private method (its signature changes: arguments pass through). If it is
        # gone, `counts_refusals` stays False and the report shows n/a.
        parse = getattr(self.mesh, "_parse_puback", None)
        if not self._count or parse is None:
            return

        def counted(*args: Any, **kwargs: Any) -> Any:
            try:
                return parse(*args, **kwargs)
            except MailboxFull:
                self.refusals += 1
                raise

        self.mesh._parse_puback = counted
        self.counts_refusals = True

    async def tell(self, n: int) -> None:
        await self.ref.tell_many(itertools.repeat(self.blob, n), window=WINDOW)

    async def tell_one(self) -> None:
        await self.ref.tell(self.blob)

    async def ask(self, i: int) -> None:
        reply = await self.ref.ask(self._ping(n=i), timeout=30.0)
        if reply != i:
            raise RuntimeError(f"wrong reply {reply!r}")

    async def close(self) -> None:
        if self.mesh is not None:
            await self.mesh.close()


class FastStreamClient:
    """FastStream 0.7: ``broker.request(..., stream=)`` (asks only: the tells of
    every contender go through `RawPublisher`)."""

    refusals = 0

    def __init__(self, subject: str, stream: str) -> None:
        self.broker: Any = None
        self.subject, self.stream = subject, stream

    async def start(self, url: str) -> None:
        from faststream.nats import NatsBroker

        self.broker = NatsBroker(url, logger=None)
        await self.broker.connect()

    async def tell(self, n: int) -> None:
        raise NotImplementedError("tells use RawPublisher")

    async def ask(self, i: int) -> None:
        payload = echo_payload(i)
        msg = await self.broker.request(payload, self.subject, stream=self.stream, timeout=30.0)
        if msg.body != payload:
            raise RuntimeError(f"wrong reply {msg.body!r}")

    async def close(self) -> None:
        if self.broker is not None:
            with contextlib.suppress(Exception):
                await self.broker.stop()
