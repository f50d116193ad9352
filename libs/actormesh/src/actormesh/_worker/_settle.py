"""Settling held messages: ack, nak, in-progress acks, and the idle signal a drain waits for.

Also reads the delivery count and stream sequence from a message's ack subject.
"""

from __future__ import annotations

import asyncio
import logging
import time

from nats.aio.msg import Msg

from .._consumer import PullConsumer

__all__ = ["Settler", "deliveries_of", "stream_seq_of"]

log = logging.getLogger("actormesh.worker")


class Settler:
    """Every message the worker holds, until it is acked or handed back."""

    def __init__(self, *, ack_sync: bool, ack_timeout: float, ack_wait: float) -> None:
        self.ack_sync = ack_sync
        self.ack_timeout = ack_timeout
        self.ack_wait = ack_wait
        #: Every message we hold, by id(msg): the message and when we last told the
        #: server we are still on it.
        self.held: dict[int, tuple[Msg, float]] = {}
        #: Set whenever the worker holds no message: what a drain waits for.
        self.idle = asyncio.Event()
        self.idle.set()
        self.consumer: PullConsumer | None = None

    def hold(self, msg: Msg) -> None:
        self.held[id(msg)] = (msg, time.monotonic())
        self.idle.clear()

    def _release(self, msg: Msg) -> None:
        if self.held.pop(id(msg), None) is not None and self.consumer is not None:
            self.consumer.settled()
        if not self.held:
            self.idle.set()

    async def ack(self, msg: Msg) -> None:
        try:
            if self.ack_sync:
                await msg.ack_sync(timeout=self.ack_timeout)
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

    async def hand_back_all(self) -> None:
        for msg, _ in list(self.held.values()):
            await self.nak(msg, 0.0)

    async def progress_loop(self) -> None:
        """Tell the server we are still on messages held for half their ack_wait."""
        ack_wait = self.ack_wait
        tick = max(0.05, min(ack_wait / 4, 5.0))
        while True:
            await asyncio.sleep(tick)
            now = time.monotonic()
            for key, (msg, since) in list(self.held.items()):
                if now - since > ack_wait / 2 and key in self.held:
                    try:
                        await msg.in_progress()
                    except Exception as exc:
                        log.debug("in-progress ack not sent: %r", exc)
                        continue
                    self.held[key] = (msg, now)


def deliveries_of(msg: Msg) -> int:
    """How many times the broker delivered `msg` (1 when its ack subject does not say)."""
    # $JS.ACK.<stream>.<consumer>.<delivered>.<sseq>.<cseq>.<ts>.<pending> (or the
    # 12-token form with domain and account hash).
    reply = msg.reply or ""
    dots = reply.count(".")
    if dots == 8:
        return int(reply.split(".", 5)[4])
    if dots >= 11:
        return int(reply.split(".", 7)[6])
    return 1


def stream_seq_of(msg: Msg) -> int:
    """The message's sequence in its stream (0 when its ack subject does not say)."""
    parts = (msg.reply or "").split(".")
    if len(parts) == 9:
        return int(parts[5])
    if len(parts) >= 12:
        return int(parts[7])
    return 0
