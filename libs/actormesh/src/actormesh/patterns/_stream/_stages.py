"""Stage specifications and the async generators that run them, one item at a time.

A spec is immutable and describes a stage; `open()` makes the running
generator for one pipeline run. Consecutive stages are fused: each generator
pulls from the one before, all in the caller's task. A `Head` starts a chain
(a source, or a merge of other streams); every other stage is a `Stage` that
wraps the chain before it. Batching and windows live in `_batching`.
"""

from __future__ import annotations

from collections.abc import AsyncIterable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

from .._backpressure import Backpressure
from .._errors import StageFailed
from .._limits import RateLimiter
from ._acks import Acks, Flow, acks_of, settle
from ._channel import from_channel
from ._metrics import StageKind, Stats
from ._strategy import SKIP, ErrorStrategy, OnError, StageCall, apply

if TYPE_CHECKING:
    from ._pipeline import Context, Stream

__all__ = [
    "Buffer",
    "Filter",
    "Head",
    "Map",
    "Merge",
    "PerItem",
    "RateLimit",
    "Source",
    "Stage",
]


class Head:
    """The first spec of a stream: it makes items rather than taking them."""

    __slots__ = ()
    kind: ClassVar[StageKind]
    name: str | None

    def inputs(self) -> tuple[Stream[Any], ...]:
        """The streams this one is made of (for a merge); walked to name every stage."""
        return ()

    def open(self, ctx: Context) -> Flow:
        raise NotImplementedError


class Stage:
    """A spec that runs on the items of the chain before it."""

    __slots__ = ()
    kind: ClassVar[StageKind]
    name: str | None

    def open(self, up: Flow, stats: Stats) -> Flow:
        raise NotImplementedError


@dataclass(frozen=True, slots=True, eq=False)
class Source(Head):
    iterable: AsyncIterable[Any]
    name: str | None = None
    kind: ClassVar[StageKind] = "source"

    def open(self, ctx: Context) -> Flow:
        return _source(self.iterable, ctx.stats[self])


async def _source(iterable: AsyncIterable[Any], stats: Stats) -> Flow:
    it = aiter(iterable)
    try:
        async for item in it:
            stats.processed += 1
            yield (item, acks_of(item))
    except Exception as exc:
        stats.errors += 1
        raise StageFailed(stats.name, exc) from exc
    finally:
        aclose = getattr(it, "aclose", None)
        if aclose is not None:
            await aclose()


@dataclass(frozen=True, slots=True, eq=False)
class Merge(Head):
    streams: tuple[Stream[Any], ...]
    capacity: int
    strategy: Backpressure
    name: str | None = None
    kind: ClassVar[StageKind] = "merge"

    def inputs(self) -> tuple[Stream[Any], ...]:
        return self.streams

    def open(self, ctx: Context) -> Flow:
        chains = [ctx.chain(stream) for stream in self.streams]
        return from_channel(chains, self.capacity, self.strategy, ctx.stats[self])


@dataclass(frozen=True, slots=True, eq=False)
class PerItem(Stage):
    """A stage that calls a function on each item, under an error strategy."""

    fn: Callable[[Any], Any]
    on_error: ErrorStrategy | OnError
    name: str | None = None


class Map(PerItem):
    __slots__ = ()
    kind: ClassVar[StageKind] = "map"

    def open(self, up: Flow, stats: Stats) -> Flow:
        return _map(up, StageCall(self.fn, self.on_error, stats), stats)


async def _map(up: Flow, call: StageCall, stats: Stats) -> Flow:
    try:
        async for value, acks in up:
            out = await apply(call, value, acks, stats)
            if out is SKIP:
                continue
            stats.processed += 1
            yield (out, acks)
    finally:
        await up.aclose()


class Filter(PerItem):
    __slots__ = ()
    kind: ClassVar[StageKind] = "filter"

    def open(self, up: Flow, stats: Stats) -> Flow:
        return _filter(up, StageCall(self.fn, self.on_error, stats), stats)


async def _filter(up: Flow, call: StageCall, stats: Stats) -> Flow:
    try:
        async for env in up:
            value, acks = env
            keep = await apply(call, value, acks, stats)
            if keep is SKIP:
                continue
            stats.processed += 1
            if keep:
                yield env
            elif acks:
                await settle(acks, True, stats)
    finally:
        await up.aclose()


@dataclass(frozen=True, slots=True, eq=False)
class Buffer(Stage):
    size: int
    strategy: Backpressure
    name: str | None = None
    kind: ClassVar[StageKind] = "buffer"

    def open(self, up: Flow, stats: Stats) -> Flow:
        return from_channel([up], self.size, self.strategy, stats)


@dataclass(frozen=True, slots=True, eq=False)
class RateLimit(Stage):
    rate: float
    per: float
    name: str | None = None
    kind: ClassVar[StageKind] = "rate_limit"

    def open(self, up: Flow, stats: Stats) -> Flow:
        # Made here, not in the spec: aiolimiter binds to the loop that uses it.
        limiter = RateLimiter(self.rate, self.per, name=stats.name)
        return _rate_limited(up, limiter, stats)


async def _rate_limited(up: Flow, limiter: RateLimiter, stats: Stats) -> Flow:
    held: Acks = None
    try:
        async for env in up:
            if not limiter.has_capacity():
                stats.backpressure_events += 1
                held = env[1]
                await limiter.acquire()
                held = None
            else:
                await limiter.acquire()
            stats.processed += 1
            yield env
    finally:
        if held:
            await settle(held, False, stats)
        await up.aclose()
