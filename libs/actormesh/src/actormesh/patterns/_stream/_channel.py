"""The bounded channel behind every decoupling point, and the pumps that feed it.

`buffer()`, `merge()` and the time-based `batch(max_wait=...)` /
`window(duration=...)` run their upstream in a task of their own (a pump)
feeding a bounded `Channel`; the consuming stage reads it in the caller's task.
This is where the backpressure strategies apply, and where items dropped or
left behind are nacked.
"""

from __future__ import annotations

import asyncio
import enum
from collections import deque

from .._backpressure import Backpressure
from .._errors import BackpressureError
from ._acks import Envelope, Flow, settle
from ._metrics import Stats

__all__ = ["Channel", "Signal", "from_channel", "pump", "shut"]


class Signal(enum.Enum):
    """What `Channel.get` returns instead of an item."""

    #: Every producer finished and the buffer is empty.
    END = 0
    #: The caller's deadline passed with nothing to hand out.
    TIMEOUT = 1


class Channel:
    """A bounded FIFO between producer tasks and the one consuming stage.

    BLOCK hands a freed slot to the longest-waiting producer (a reservation),
    so a producer that arrives later cannot overtake one that waited.
    """

    __slots__ = (
        "_buf",
        "_capacity",
        "_error",
        "_getter",
        "_loop",
        "_producers",
        "_putters",
        "_reserved",
        "_stats",
        "_strategy",
    )

    def __init__(self, capacity: int, strategy: Backpressure, stats: Stats, producers: int) -> None:
        self._buf: deque[Envelope] = deque()
        self._capacity = capacity
        self._strategy = strategy
        self._stats = stats
        self._producers = producers
        self._error: BaseException | None = None
        self._getter: asyncio.Future[None] | None = None
        self._putters: deque[asyncio.Future[None]] = deque()
        self._reserved = 0
        self._loop = asyncio.get_running_loop()

    def _wake_getter(self) -> None:
        getter = self._getter
        if getter is not None and not getter.done():
            getter.set_result(None)

    def _wake_putter(self) -> None:
        while self._putters:
            putter = self._putters.popleft()
            if not putter.done():
                self._reserved += 1
                putter.set_result(None)
                return

    async def put(self, env: Envelope) -> Envelope | None:
        """Take `env`, or wait (BLOCK), or raise (RAISE); return the item a DROP
        strategy discarded, which the caller must nak."""
        if len(self._buf) + self._reserved < self._capacity:
            self._buf.append(env)
            self._wake_getter()
            return None
        stats = self._stats
        stats.backpressure_events += 1
        strategy = self._strategy
        if strategy is Backpressure.BLOCK:
            putter = self._loop.create_future()
            self._putters.append(putter)
            try:
                await putter
            except asyncio.CancelledError:
                if putter.done() and not putter.cancelled():
                    # Woken and cancelled at once: pass the reserved slot on.
                    self._reserved -= 1
                    self._wake_putter()
                raise
            self._reserved -= 1
            self._buf.append(env)
            self._wake_getter()
            return None
        if strategy is Backpressure.DROP_NEWEST:
            stats.dropped += 1
            return env
        if strategy is Backpressure.DROP_OLDEST:
            oldest = self._buf.popleft()
            self._buf.append(env)
            stats.dropped += 1
            self._wake_getter()
            return oldest
        raise BackpressureError(stats.name, capacity=self._capacity)

    def producer_done(self) -> None:
        self._producers -= 1
        self._wake_getter()

    def fail(self, error: BaseException) -> None:
        if self._error is None:
            self._error = error
        self._wake_getter()

    async def get(self, deadline: float | None = None) -> Envelope | Signal:
        """The next item; END when every producer finished; TIMEOUT at `deadline` (loop time)."""
        while True:
            if self._error is not None:
                # Fail fast: what is still buffered is nacked by the stage's cleanup.
                raise self._error
            if self._buf:
                env = self._buf.popleft()
                if self._putters:
                    self._wake_putter()
                return env
            if self._producers <= 0:
                return Signal.END
            if deadline is not None and self._loop.time() >= deadline:
                return Signal.TIMEOUT
            getter = self._getter = self._loop.create_future()
            timer = None
            if deadline is not None:
                timer = self._loop.call_at(deadline, _resolve, getter)
            try:
                await getter
            finally:
                self._getter = None
                if timer is not None:
                    timer.cancel()

    def drain(self) -> list[Envelope]:
        items = list(self._buf)
        self._buf.clear()
        return items


def _resolve(fut: asyncio.Future[None]) -> None:
    if not fut.done():
        fut.set_result(None)


async def pump(up: Flow, channel: Channel, stats: Stats) -> None:
    """Move everything from `up` into `channel` (run as a task of its own)."""
    held: Envelope | None = None
    try:
        async for env in up:
            held = env
            dropped = await channel.put(env)
            held = None
            if dropped is not None and dropped[1]:
                await settle(dropped[1], False, stats)
    except Exception as exc:
        channel.fail(exc)
    except BaseException as exc:
        # Cancelled by the consumer's cleanup: it is not waiting. Anything else
        # (SystemExit...) must not leave the consumer waiting forever.
        if not isinstance(exc, asyncio.CancelledError):
            channel.fail(exc)
        raise
    else:
        channel.producer_done()
    finally:
        if held is not None and held[1]:
            await settle(held[1], False, stats)
        await up.aclose()


async def shut(tasks: list[asyncio.Task[None]], channel: Channel, stats: Stats) -> None:
    """Stop the pumps and nak what they left in the channel."""
    for task in tasks:
        task.cancel()
    if tasks:
        await asyncio.wait(tasks)
    for _, acks in channel.drain():
        if acks:
            await settle(acks, False, stats)


async def from_channel(
    inputs: list[Flow], capacity: int, strategy: Backpressure, stats: Stats
) -> Flow:
    """Pump each of `inputs` into one channel of `capacity`; yield what comes out."""
    channel = Channel(capacity, strategy, stats, len(inputs))
    tasks = [asyncio.create_task(pump(up, channel, stats)) for up in inputs]
    try:
        while True:
            env = await channel.get()
            if isinstance(env, Signal):
                # Only END: no deadline was given, so never TIMEOUT.
                return
            stats.processed += 1
            yield env
    finally:
        await shut(tasks, channel, stats)
