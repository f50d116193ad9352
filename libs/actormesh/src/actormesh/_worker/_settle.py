"""Settling held messages: ack, nak, in-progress acks, and the idle signal a drain waits for."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Coroutine
from typing import TYPE_CHECKING, Any

from nats.aio.msg import Msg

from .._consumer import PullConsumer
from .._nats import flushed

if TYPE_CHECKING:
    from .._nats import Client

__all__ = ["Settler"]

log = logging.getLogger("actormesh.worker")


class Settler:
    """Every message the worker holds, until it is acked or handed back."""

    def __init__(self, *, ack_sync: bool, ack_timeout: float, ack_wait: float) -> None:
        self.ack_sync = ack_sync
        self.ack_timeout = ack_timeout
        self.ack_wait = ack_wait
        #: Every message we hold, by id(msg): the message and the progress tick at
        #: which we took it or last told the server we are still on it. A tick
        #: count, not a clock: no time call per message.
        self.held: dict[int, tuple[Msg, int]] = {}
        self._tick = 0
        #: Set whenever the worker holds no message: what a drain waits for.
        self.idle = asyncio.Event()
        self.idle.set()
        self.consumer: PullConsumer | None = None
        #: With priority levels, the consumer a message came from (None: `consumer`).
        self.route: Callable[[Msg], PullConsumer] | None = None
        #: The connection acks are written to directly (see `ack`); None: `msg.ack()`.
        self.nc: Client | None = None

    def hold(self, msg: Msg) -> None:
        held = self.held
        if not held:
            self.idle.clear()
        held[id(msg)] = (msg, self._tick)

    def _release(self, msg: Msg) -> None:
        held = self.held
        if held.pop(id(msg), None) is not None:
            consumer = self.consumer if self.route is None else self.route(msg)
            if consumer is not None:
                consumer.settled()
        if not held:
            self.idle.set()

    def ack_soon(self, msg: Msg) -> Coroutine[Any, Any, None] | None:
        """`ack`, done here when it can be (the common case): None, or what the
        caller must await (waking the flusher, once per loop turn, or `ack`
        itself). Saves the hot path a coroutine per message."""
        nc = self._direct(msg)
        if nc is None:
            return self.ack(msg)
        flush = self._queue_ack(msg, nc)
        self._release(msg)
        return None if flush is None else flushed(flush, "ack")

    def _direct(self, msg: Msg) -> Client | None:
        """The connection to queue `msg`'s ack on (`_queue_ack`), or None: `msg.ack()`
        or `ack_sync` do it."""
        nc = self.nc
        if self.ack_sync or nc is None or not msg.reply or msg._ackd or not nc.is_connected:
            return None
        return nc

    @staticmethod
    def _queue_ack(msg: Msg, nc: Client) -> Coroutine[Any, Any, None] | None:
        # The bytes `msg.ack()` writes (nats-py's `pub_cmd`, empty reply and body; a
        # unit test pins them), queued on the connection's buffer without nats-py's
        # publish checks (two coroutines and a subject scan per message): the
        # subject is the server's own ack subject. The buffer goes out once per loop
        # turn, so acks are batched. What to await, if anything: see `Client.queue`.
        msg._ackd = True
        return nc.queue(b"PUB %s  0\r\n\r\n" % msg.reply.encode())

    async def ack(self, msg: Msg) -> None:
        try:
            if self.ack_sync:
                await msg.ack_sync(timeout=self.ack_timeout)
            elif (nc := self._direct(msg)) is not None:
                flush = self._queue_ack(msg, nc)
                if flush is not None:
                    await flush
            else:
                await msg.ack()
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            # The server will redeliver after ack_wait: at-least-once, nothing lost.
            log.warning("ack failed (%r): the message will be redelivered", exc)
        self._release(msg)

    async def nak(self, msg: Msg, delay: float) -> None:
        try:
            await msg.nak(delay=delay or None)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            log.warning("nak failed (%r): the message returns after ack_wait", exc)
        self._release(msg)

    def holds(self, msg: Msg) -> bool:
        """Whether `msg` is still ours to settle."""
        return id(msg) in self.held

    async def hand_back(self, msgs: list[Msg]) -> None:
        """Nak those of `msgs` still held, for redelivery now (a runner cancelled
        mid-message gives its message and its lane back this way)."""
        for msg in msgs:
            if id(msg) in self.held:
                await self.nak(msg, 0.0)

    async def hand_back_all(self) -> None:
        for msg, _ in list(self.held.values()):
            await self.nak(msg, 0.0)

    async def progress_loop(self) -> None:
        """Tell the server we are still on messages held for half their ack_wait."""
        ack_wait = self.ack_wait
        tick = max(0.05, min(ack_wait / 4, 5.0))
        while True:
            await asyncio.sleep(tick)
            self._tick += 1
            now = self._tick
            for key, (msg, since) in list(self.held.items()):
                # Held since between (now - since - 1) and (now - since) ticks: the
                # in-progress ack goes at most one tick earlier than "half ack_wait".
                if (now - since) * tick > ack_wait / 2 and key in self.held:
                    try:
                        await msg.in_progress()
                    except Exception as exc:
                        log.debug("in-progress ack not sent: %r", exc)
                        continue
                    self.held[key] = (msg, now)
