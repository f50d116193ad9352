"""Batches and tumbling windows: stages that gather items and emit them as one list.

The list carries the union of its items' acks, so a batch is acked (or nacked)
as a whole. Count-based grouping is fused like any stage; the time-based
forms pump their upstream through a channel so that a deadline can pass while
the upstream is slow.
"""

from __future__ import annotations

import asyncio
import math
from dataclasses import dataclass
from typing import Any, ClassVar

from .._backpressure import Backpressure
from ._acks import Ackable, Acks, Envelope, Flow, settle
from ._channel import Channel, Signal, pump, shut
from ._metrics import StageKind, Stats
from ._stages import Stage

__all__ = ["Batch", "Bucket", "CountWindow", "TimeWindow"]


class Bucket:
    """Items a batch or window stage has taken and not yet emitted, with their acks."""

    __slots__ = ("acks", "values")

    def __init__(self) -> None:
        self.values: list[Any] = []
        self.acks: list[Ackable] = []

    def __len__(self) -> int:
        return len(self.values)

    def add(self, value: Any, acks: Acks) -> None:
        self.values.append(value)
        if acks:
            self.acks.extend(acks)

    def take(self, stats: Stats) -> Envelope:
        """Everything taken so far, as one item downstream; the bucket starts over."""
        out: Envelope = (self.values, tuple(self.acks) if self.acks else None)
        stats.processed += len(self.values)
        self.values, self.acks = [], []
        return out

    async def nak(self, stats: Stats) -> None:
        """The stage ends with items never emitted: hand them back."""
        if self.acks:
            await settle(self.acks, False, stats)


@dataclass(frozen=True, slots=True, eq=False)
class Batch(Stage):
    size: int
    max_wait: float | None
    name: str | None = None
    kind: ClassVar[StageKind] = "batch"

    def open(self, up: Flow, stats: Stats) -> Flow:
        if self.max_wait is None:
            return _batch_by_count(up, self.size, stats)
        return _batch_by_time(up, self.size, self.max_wait, stats)


class CountWindow(Batch):
    """`window(count=n)`: the same grouping as `batch(n)`, under the window's name."""

    __slots__ = ()
    kind: ClassVar[StageKind] = "window"


@dataclass(frozen=True, slots=True, eq=False)
class TimeWindow(Stage):
    duration: float
    name: str | None = None
    kind: ClassVar[StageKind] = "window"

    def open(self, up: Flow, stats: Stats) -> Flow:
        return _window_by_time(up, self.duration, stats)


async def _batch_by_count(up: Flow, size: int, stats: Stats) -> Flow:
    bucket = Bucket()
    try:
        async for value, item_acks in up:
            bucket.add(value, item_acks)
            if len(bucket) >= size:
                yield bucket.take(stats)
        if bucket:
            yield bucket.take(stats)
    finally:
        await bucket.nak(stats)
        await up.aclose()


async def _batch_by_time(up: Flow, size: int, max_wait: float, stats: Stats) -> Flow:
    loop = asyncio.get_running_loop()
    channel = Channel(size, Backpressure.BLOCK, stats, 1)
    pumping = asyncio.create_task(pump(up, channel, stats))
    bucket = Bucket()
    deadline: float | None = None
    try:
        while True:
            env = await channel.get(deadline)
            if env is Signal.END:
                break
            if isinstance(env, Signal):  # TIMEOUT: the batch is due, full or not
                deadline = None
            else:
                if not bucket:
                    deadline = loop.time() + max_wait
                bucket.add(env[0], env[1])
                if len(bucket) < size:
                    continue
                deadline = None
            if bucket:
                yield bucket.take(stats)
        if bucket:
            yield bucket.take(stats)
    finally:
        await bucket.nak(stats)
        await shut([pumping], channel, stats)


async def _window_by_time(up: Flow, duration: float, stats: Stats) -> Flow:
    loop = asyncio.get_running_loop()
    # A small prefetch: membership is decided when the window takes an item,
    # so a deep buffer would only smear window edges.
    channel = Channel(1, Backpressure.BLOCK, stats, 1)
    pumping = asyncio.create_task(pump(up, channel, stats))
    start = loop.time()
    boundary = start + duration
    bucket = Bucket()
    try:
        while True:
            now = loop.time()
            if now >= boundary:
                # Tumbling windows on a fixed grid from the stream's start;
                # windows that saw no item are not emitted.
                boundary = start + duration * (math.floor((now - start) / duration) + 1)
                if bucket:
                    yield bucket.take(stats)
                continue
            env = await channel.get(boundary)
            if env is Signal.END:
                break
            if isinstance(env, Signal):  # TIMEOUT: the window closed with nothing new
                continue
            bucket.add(env[0], env[1])
        if bucket:
            yield bucket.take(stats)
    finally:
        await bucket.nak(stats)
        await shut([pumping], channel, stats)
