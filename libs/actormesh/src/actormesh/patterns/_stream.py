"""Streams: a pipeline of stages from any AsyncIterable to any async callable.

    metrics = await (
        Stream(source)
        .map(parse)
        .filter(lambda e: e.kind == "order")
        .batch(100, max_wait=0.5)
        .run(sink)
    )

Our own rather than aiostream's: the mesh needs acknowledgement tracking
through every stage (a JetStream message is acked only once what became of it
left the sink, and nacked if it failed or was dropped), explicit backpressure
strategies with exact drop accounting, per-stage error strategies and metrics.

How it runs. Consecutive stages are fused: each is an async generator pulling
from the one before, all in the caller's task, so an item costs a few
generator hops and the natural backpressure is BLOCK (nothing is pulled until
the sink is ready). A decoupling point—`buffer()`, `merge()`, and the time-based
`batch(max_wait=...)` / `window(duration=...)`—runs its upstream in a task of
its own feeding a bounded channel, which is where the backpressure strategies
apply. Internally every item travels with the `Ackable` source items it came
from; batches carry the union.
"""

from __future__ import annotations

import asyncio
import enum
import inspect
import logging
import math
from collections import deque
from collections.abc import AsyncIterable, AsyncIterator, Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from typing import (
    Any,
    ClassVar,
    Generic,
    Protocol,
    TypeAlias,
    TypeVar,
    cast,
    overload,
    runtime_checkable,
)

from .._retry import RetryPolicy
from .._retry import retry as _retry_loop
from ._breaker import CircuitBreaker
from ._errors import BackpressureError, CircuitOpen, StageFailed
from ._limits import RateLimiter

__all__ = [
    "Ackable",
    "Backpressure",
    "ErrorStrategy",
    "OnError",
    "Pipeline",
    "StageMetrics",
    "Stream",
]

T = TypeVar("T")
U = TypeVar("U")

_log = logging.getLogger("actormesh.patterns")


class Backpressure(enum.Enum):
    """What a bounded buffer does with an item that arrives while it is full."""

    #: Wait for room: nothing is lost, the producer slows down.
    BLOCK = "block"
    #: Discard the arriving item.
    DROP_NEWEST = "drop_newest"
    #: Discard the oldest buffered item to make room.
    DROP_OLDEST = "drop_oldest"
    #: Fail with `BackpressureError`.
    RAISE = "raise"


class ErrorStrategy(enum.Enum):
    """What a stage does when its function (or the sink) raises."""

    #: Stop the stream: `run()` raises `StageFailed` from the error.
    STOP = "stop"
    #: Log, count, nak the item's source messages and go on with the next item.
    LOG_AND_CONTINUE = "log_and_continue"
    #: Retry the item per a `RetryPolicy`; when the retries run out, `OnError.exhausted` applies.
    RETRY = "retry"
    #: Call through a circuit breaker: a failed item is logged and nacked like
    #: LOG_AND_CONTINUE, and while the circuit is open the stage waits (holding
    #: the stream back) instead of failing every item.
    CIRCUIT_BREAKER = "circuit_breaker"


@dataclass(frozen=True, kw_only=True, slots=True)
class OnError:
    """An error strategy with its parameters."""

    strategy: ErrorStrategy = ErrorStrategy.STOP
    #: For RETRY; None means `RetryPolicy()` (the DESIGN.md defaults).
    retry: RetryPolicy | None = None
    #: For CIRCUIT_BREAKER; None gives the stage a breaker of its own with default settings.
    breaker: CircuitBreaker | None = None
    #: For RETRY: STOP or LOG_AND_CONTINUE once the retries ran out.
    exhausted: ErrorStrategy = ErrorStrategy.STOP

    def __post_init__(self) -> None:
        if self.exhausted not in (ErrorStrategy.STOP, ErrorStrategy.LOG_AND_CONTINUE):
            raise ValueError("exhausted must be STOP or LOG_AND_CONTINUE")


@runtime_checkable
class Ackable(Protocol):
    """A source item that wants to know its fate (a JetStream message does).

    Detected by duck typing on the item's class: if it defines `ack` and `nak`,
    the pipeline awaits `ack()` once the item (or the batch holding it) left
    the sink, and `nak()` if it failed, was dropped, or was still in flight
    when the stream stopped. Filtered-out items count as done and are acked.
    """

    async def ack(self) -> None: ...

    async def nak(self) -> None: ...


@dataclass(frozen=True, slots=True)
class StageMetrics:
    """A snapshot of one stage's counters. A batch counts as one unit after the batching stage."""

    name: str
    kind: str
    #: Units the stage handled without error (for a filter: kept or not).
    processed: int
    #: Units lost to a full buffer (DROP_NEWEST / DROP_OLDEST).
    dropped: int
    #: Times the stage found its buffer full, waited on its rate limit,
    #: or paused on an open circuit.
    backpressure_events: int
    #: Units whose function (or sink call) failed for good.
    errors: int
    retries: int
    #: `ack()`/`nak()` calls that raised (the broker will redeliver those messages).
    ack_failures: int


class _Stats:
    __slots__ = (
        "ack_failures",
        "backpressure_events",
        "dropped",
        "errors",
        "kind",
        "name",
        "processed",
        "retries",
    )

    def __init__(self, name: str, kind: str) -> None:
        self.name = name
        self.kind = kind
        self.processed = 0
        self.dropped = 0
        self.backpressure_events = 0
        self.errors = 0
        self.retries = 0
        self.ack_failures = 0

    def snapshot(self) -> StageMetrics:
        return StageMetrics(
            name=self.name,
            kind=self.kind,
            processed=self.processed,
            dropped=self.dropped,
            backpressure_events=self.backpressure_events,
            errors=self.errors,
            retries=self.retries,
            ack_failures=self.ack_failures,
        )


# An item in flight: its value and the Ackable source items it stands for.
_Acks: TypeAlias = "tuple[Ackable, ...] | None"
_Env: TypeAlias = "tuple[Any, _Acks]"

_ACKABLE_TYPES: dict[type, bool] = {}


def _acks_of(item: object) -> tuple[Ackable, ...] | None:
    kind = type(item)
    known = _ACKABLE_TYPES.get(kind)
    if known is None:
        known = callable(getattr(kind, "ack", None)) and callable(getattr(kind, "nak", None))
        _ACKABLE_TYPES[kind] = known
    return cast("tuple[Ackable, ...]", (item,)) if known else None


async def _settle(acks: Iterable[Ackable], ok: bool, stats: _Stats) -> None:
    for item in acks:
        try:
            await (item.ack() if ok else item.nak())
        except Exception:
            # The broker redelivers what was not acked: log and carry on.
            stats.ack_failures += 1
            _log.warning(
                "stream stage %r: %s failed", stats.name, "ack" if ok else "nak", exc_info=True
            )


class _Skip(enum.Enum):
    SKIP = 0


_SKIP = _Skip.SKIP


def _is_async(fn: object) -> bool:
    return inspect.iscoroutinefunction(fn) or inspect.iscoroutinefunction(
        getattr(fn, "__call__", None)  # noqa: B004 - async callable objects
    )


class _Guard:
    """Runs a stage function under a non-STOP error strategy."""

    __slots__ = ("_breaker", "_fn", "_is_async", "_on_error", "_retry", "_stats")

    def __init__(
        self, fn: Callable[[Any], Any], is_async: bool, on_error: OnError, stats: _Stats
    ) -> None:
        self._fn = fn
        self._is_async = is_async
        self._on_error = on_error
        self._stats = stats
        self._retry = on_error.retry or RetryPolicy()
        self._breaker = on_error.breaker or CircuitBreaker(stats.name)

    async def _once(self, value: Any) -> Any:
        if self._is_async:
            return await self._fn(value)
        return self._fn(value)

    def _give_up(self, exc: Exception, strategy: ErrorStrategy) -> _Skip:
        self._stats.errors += 1
        if strategy is ErrorStrategy.STOP:
            raise StageFailed(self._stats.name, exc) from exc
        _log.warning("stream stage %r: item failed, skipped", self._stats.name, exc_info=exc)
        return _SKIP

    def _count_retry(self, attempt: int, exc: Exception, delay: float) -> None:
        self._stats.retries += 1

    async def call(self, value: Any) -> Any:
        strategy = self._on_error.strategy
        if strategy is ErrorStrategy.LOG_AND_CONTINUE:
            try:
                return await self._once(value)
            except Exception as exc:
                return self._give_up(exc, strategy)
        if strategy is ErrorStrategy.RETRY:
            try:
                return await _retry_loop(
                    lambda: self._once(value), self._retry, on_retry=self._count_retry
                )
            except Exception as exc:
                return self._give_up(exc, self._on_error.exhausted)
        # CIRCUIT_BREAKER
        while True:
            try:
                permit = self._breaker.admit()
            except CircuitOpen as refused:
                self._stats.backpressure_events += 1
                # Poll: the breaker turns half-open lazily, on the next admit.
                await asyncio.sleep(max(refused.retry_after, 0.05))
                continue
            try:
                result = await self._once(value)
            except BaseException as exc:
                permit.record(exc)
                if not isinstance(exc, Exception):
                    raise
                return self._give_up(exc, ErrorStrategy.LOG_AND_CONTINUE)
            permit.record(None)
            return result


def _guard_for(
    fn: Callable[[Any], Any], is_async: bool, on_error: ErrorStrategy | OnError, stats: _Stats
) -> _Guard | None:
    spec = on_error if isinstance(on_error, OnError) else OnError(strategy=on_error)
    if spec.strategy is ErrorStrategy.STOP:
        return None
    return _Guard(fn, is_async, spec, stats)


# -- the bounded channel behind buffer(), merge() and the timed stages --------


class _Signal(enum.Enum):
    END = 0
    TIMEOUT = 1


class _Channel:
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

    def __init__(
        self, capacity: int, strategy: Backpressure, stats: _Stats, producers: int
    ) -> None:
        self._buf: deque[_Env] = deque()
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

    async def put(self, env: _Env) -> _Env | None:
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

    async def get(self, deadline: float | None = None) -> _Env | _Signal:
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
                return _Signal.END
            if deadline is not None and self._loop.time() >= deadline:
                return _Signal.TIMEOUT
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

    def drain(self) -> list[_Env]:
        items = list(self._buf)
        self._buf.clear()
        return items


def _resolve(fut: asyncio.Future[None]) -> None:
    if not fut.done():
        fut.set_result(None)


async def _pump(up: AsyncIterator[_Env], channel: _Channel, stats: _Stats) -> None:
    held: _Env | None = None
    try:
        async for env in up:
            held = env
            dropped = await channel.put(env)
            held = None
            if dropped is not None and dropped[1]:
                await _settle(dropped[1], False, stats)
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
            await _settle(held[1], False, stats)
        await up.aclose()  # type: ignore[attr-defined]


async def _shut(tasks: list[asyncio.Task[None]], channel: _Channel, stats: _Stats) -> None:
    for task in tasks:
        task.cancel()
    if tasks:
        await asyncio.wait(tasks)
    for _, acks in channel.drain():
        if acks:
            await _settle(acks, False, stats)


async def _from_channel(
    inputs: list[AsyncIterator[_Env]], capacity: int, strategy: Backpressure, stats: _Stats
) -> AsyncIterator[_Env]:
    channel = _Channel(capacity, strategy, stats, len(inputs))
    tasks = [asyncio.create_task(_pump(up, channel, stats)) for up in inputs]
    try:
        while True:
            env = await channel.get()
            if env is _Signal.END:
                return
            assert not isinstance(env, _Signal)
            stats.processed += 1
            yield env
    finally:
        await _shut(tasks, channel, stats)


# -- stage specifications (immutable) and their runtime generators -----------


class _Spec:
    kind: ClassVar[str] = ""
    name: str | None

    def inputs(self) -> tuple[Stream[Any], ...]:
        return ()

    def open(self, up: AsyncIterator[_Env] | None, ctx: _Context) -> AsyncIterator[_Env]:
        raise NotImplementedError


@dataclass(frozen=True, slots=True, eq=False)
class _Source(_Spec):
    iterable: AsyncIterable[Any]
    name: str | None = None
    kind: ClassVar[str] = "source"

    def open(self, up: AsyncIterator[_Env] | None, ctx: _Context) -> AsyncIterator[_Env]:
        return _source(self.iterable, ctx.stats[self])


async def _source(iterable: AsyncIterable[Any], stats: _Stats) -> AsyncIterator[_Env]:
    it = aiter(iterable)
    try:
        async for item in it:
            stats.processed += 1
            yield (item, _acks_of(item))
    except Exception as exc:
        stats.errors += 1
        raise StageFailed(stats.name, exc) from exc
    finally:
        aclose = getattr(it, "aclose", None)
        if aclose is not None:
            await aclose()


@dataclass(frozen=True, slots=True, eq=False)
class _Merge(_Spec):
    streams: tuple[Stream[Any], ...]
    capacity: int
    strategy: Backpressure
    name: str | None = None
    kind: ClassVar[str] = "merge"

    def inputs(self) -> tuple[Stream[Any], ...]:
        return self.streams

    def open(self, up: AsyncIterator[_Env] | None, ctx: _Context) -> AsyncIterator[_Env]:
        chains = [ctx.chain(stream) for stream in self.streams]
        return _from_channel(chains, self.capacity, self.strategy, ctx.stats[self])


@dataclass(frozen=True, slots=True, eq=False)
class _Map(_Spec):
    fn: Callable[[Any], Any]
    on_error: ErrorStrategy | OnError
    name: str | None = None
    kind: ClassVar[str] = "map"

    def open(self, up: AsyncIterator[_Env] | None, ctx: _Context) -> AsyncIterator[_Env]:
        assert up is not None
        stats = ctx.stats[self]
        is_async = _is_async(self.fn)
        return _map(
            up, self.fn, is_async, _guard_for(self.fn, is_async, self.on_error, stats), stats
        )


async def _map(
    up: AsyncIterator[_Env],
    fn: Callable[[Any], Any],
    is_async: bool,
    guard: _Guard | None,
    stats: _Stats,
) -> AsyncIterator[_Env]:
    try:
        async for value, acks in up:
            out = await _apply(fn, is_async, guard, value, acks, stats)
            if out is _SKIP:
                continue
            stats.processed += 1
            yield (out, acks)
    finally:
        await up.aclose()  # type: ignore[attr-defined]


async def _apply(
    fn: Callable[[Any], Any],
    is_async: bool,
    guard: _Guard | None,
    value: Any,
    acks: Any,
    stats: _Stats,
) -> Any:
    """`fn(value)` for a map or filter stage; `_SKIP` when the error strategy drops it.

    The item is ours until yielded: it is nak'ed whether we failed or were cancelled.
    """
    if guard is None:
        try:
            return (await fn(value)) if is_async else fn(value)
        except BaseException as exc:
            if acks:
                await _settle(acks, False, stats)
            if not isinstance(exc, Exception):
                raise
            stats.errors += 1
            raise StageFailed(stats.name, exc) from exc
    try:
        out = await guard.call(value)
    except BaseException:
        if acks:
            await _settle(acks, False, stats)
        raise
    if out is _SKIP and acks:
        await _settle(acks, False, stats)
    return out


@dataclass(frozen=True, slots=True, eq=False)
class _Filter(_Spec):
    fn: Callable[[Any], Any]
    on_error: ErrorStrategy | OnError
    name: str | None = None
    kind: ClassVar[str] = "filter"

    def open(self, up: AsyncIterator[_Env] | None, ctx: _Context) -> AsyncIterator[_Env]:
        assert up is not None
        stats = ctx.stats[self]
        is_async = _is_async(self.fn)
        guard = _guard_for(self.fn, is_async, self.on_error, stats)
        return _filter(up, self.fn, is_async, guard, stats)


async def _filter(
    up: AsyncIterator[_Env],
    fn: Callable[[Any], Any],
    is_async: bool,
    guard: _Guard | None,
    stats: _Stats,
) -> AsyncIterator[_Env]:
    try:
        async for env in up:
            value, acks = env
            keep = await _apply(fn, is_async, guard, value, acks, stats)
            if keep is _SKIP:
                continue
            stats.processed += 1
            if keep:
                yield env
            elif acks:
                await _settle(acks, True, stats)
    finally:
        await up.aclose()  # type: ignore[attr-defined]


class _Bucket:
    """Items a batch or window stage has taken and not yet emitted, with their acks."""

    __slots__ = ("acks", "values")

    def __init__(self) -> None:
        self.values: list[Any] = []
        self.acks: list[Ackable] = []

    def __len__(self) -> int:
        return len(self.values)

    def add(self, value: Any, acks: tuple[Ackable, ...] | None) -> None:
        self.values.append(value)
        if acks:
            self.acks.extend(acks)

    def take(self, stats: _Stats) -> _Env:
        """Everything taken so far, as one item downstream; the bucket starts over."""
        out: _Env = (self.values, tuple(self.acks) if self.acks else None)
        stats.processed += len(self.values)
        self.values, self.acks = [], []
        return out

    async def nak(self, stats: _Stats) -> None:
        """The stage ends with items never emitted: hand them back."""
        if self.acks:
            await _settle(self.acks, False, stats)


@dataclass(frozen=True, slots=True, eq=False)
class _Batch(_Spec):
    size: int
    max_wait: float | None
    name: str | None = None
    kind: ClassVar[str] = "batch"

    def open(self, up: AsyncIterator[_Env] | None, ctx: _Context) -> AsyncIterator[_Env]:
        assert up is not None
        stats = ctx.stats[self]
        if self.max_wait is None:
            return _batch_by_count(up, self.size, stats)
        return _batch_by_time(up, self.size, self.max_wait, stats)


async def _batch_by_count(up: AsyncIterator[_Env], size: int, stats: _Stats) -> AsyncIterator[_Env]:
    bucket = _Bucket()
    try:
        async for value, item_acks in up:
            bucket.add(value, item_acks)
            if len(bucket) >= size:
                yield bucket.take(stats)
        if bucket:
            yield bucket.take(stats)
    finally:
        await bucket.nak(stats)
        await up.aclose()  # type: ignore[attr-defined]


async def _batch_by_time(
    up: AsyncIterator[_Env], size: int, max_wait: float, stats: _Stats
) -> AsyncIterator[_Env]:
    loop = asyncio.get_running_loop()
    channel = _Channel(size, Backpressure.BLOCK, stats, 1)
    pump = asyncio.create_task(_pump(up, channel, stats))
    bucket = _Bucket()
    deadline: float | None = None
    try:
        while True:
            env = await channel.get(deadline)
            if env is _Signal.END:
                break
            if env is _Signal.TIMEOUT:
                deadline = None
            else:
                assert not isinstance(env, _Signal)
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
        await _shut([pump], channel, stats)


@dataclass(frozen=True, slots=True, eq=False)
class _Window(_Spec):
    count: int | None
    duration: float | None
    name: str | None = None
    kind: ClassVar[str] = "window"

    def open(self, up: AsyncIterator[_Env] | None, ctx: _Context) -> AsyncIterator[_Env]:
        assert up is not None
        stats = ctx.stats[self]
        if self.count is not None:
            return _batch_by_count(up, self.count, stats)
        assert self.duration is not None
        return _window_by_time(up, self.duration, stats)


async def _window_by_time(
    up: AsyncIterator[_Env], duration: float, stats: _Stats
) -> AsyncIterator[_Env]:
    loop = asyncio.get_running_loop()
    # A small prefetch: membership is decided when the window takes an item,
    # so a deep buffer would only smear window edges.
    channel = _Channel(1, Backpressure.BLOCK, stats, 1)
    pump = asyncio.create_task(_pump(up, channel, stats))
    start = loop.time()
    boundary = start + duration
    bucket = _Bucket()
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
            if env is _Signal.END:
                break
            if env is _Signal.TIMEOUT:
                continue
            assert not isinstance(env, _Signal)
            bucket.add(env[0], env[1])
        if bucket:
            yield bucket.take(stats)
    finally:
        await bucket.nak(stats)
        await _shut([pump], channel, stats)


@dataclass(frozen=True, slots=True, eq=False)
class _Buffer(_Spec):
    size: int
    strategy: Backpressure
    name: str | None = None
    kind: ClassVar[str] = "buffer"

    def open(self, up: AsyncIterator[_Env] | None, ctx: _Context) -> AsyncIterator[_Env]:
        assert up is not None
        return _from_channel([up], self.size, self.strategy, ctx.stats[self])


@dataclass(frozen=True, slots=True, eq=False)
class _RateLimit(_Spec):
    rate: float
    per: float
    name: str | None = None
    kind: ClassVar[str] = "rate_limit"

    def open(self, up: AsyncIterator[_Env] | None, ctx: _Context) -> AsyncIterator[_Env]:
        assert up is not None
        stats = ctx.stats[self]
        # Made here, not in the spec: aiolimiter binds to the loop that uses it.
        limiter = RateLimiter(self.rate, self.per, name=stats.name)
        return _rate_limited(up, limiter, stats)


async def _rate_limited(
    up: AsyncIterator[_Env], limiter: RateLimiter, stats: _Stats
) -> AsyncIterator[_Env]:
    held: _Acks = None
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
            await _settle(held, False, stats)
        await up.aclose()  # type: ignore[attr-defined]


class _Context:
    """One pipeline run: stage names, counters, and chain construction."""

    def __init__(self, stream: Stream[Any], sink_name: str) -> None:
        self.stats: dict[_Spec, _Stats] = {}
        taken: set[str] = set()
        order: list[_Spec] = []
        self._walk(stream, order)
        for spec in order:
            if spec.name is not None:
                if spec.name in taken:
                    raise ValueError(f"two stream stages are named {spec.name!r}")
                taken.add(spec.name)
        for spec in order:
            self.stats[spec] = _Stats(spec.name or _fresh(spec.kind, taken), spec.kind)
        if sink_name in taken:
            raise ValueError(f"the sink's name {sink_name!r} is taken by a stage")
        self.sink = _Stats(sink_name, "sink")

    def _walk(self, stream: Stream[Any], order: list[_Spec]) -> None:
        for spec in stream._specs:
            if spec in order:
                raise ValueError(
                    "a stream (or its source) appears twice in one pipeline; "
                    "an AsyncIterable can be consumed once"
                )
            for sub in spec.inputs():
                self._walk(sub, order)
            order.append(spec)

    def chain(self, stream: Stream[Any]) -> AsyncIterator[_Env]:
        it: AsyncIterator[_Env] | None = None
        for spec in stream._specs:
            it = spec.open(it, self)
        assert it is not None
        return it


def _fresh(kind: str, taken: set[str]) -> str:
    name, n = kind, 1
    while name in taken:
        n += 1
        name = f"{kind}-{n}"
    taken.add(name)
    return name


class Stream(Generic[T]):
    """A description of a pipeline, from a source to (eventually) a sink.

    Immutable: each method returns a new Stream. Nothing runs until `run()`.
    A source is any `AsyncIterable`; it is iterated once, so run a pipeline once.
    Stage functions may be sync or async (`async def`, or an object with an
    `async def __call__`).
    """

    __slots__ = ("_specs",)

    def __init__(self, source: AsyncIterable[T], *, name: str | None = None) -> None:
        self._specs: tuple[_Spec, ...] = (_Source(source, name),)

    @classmethod
    def _of(cls, specs: tuple[_Spec, ...]) -> Stream[Any]:
        stream: Stream[Any] = cls.__new__(cls)
        stream._specs = specs
        return stream

    def _then(self, spec: _Spec) -> Stream[Any]:
        return Stream._of((*self._specs, spec))

    @overload
    def map(
        self,
        fn: Callable[[T], Awaitable[U]],
        *,
        on_error: ErrorStrategy | OnError = ...,
        name: str | None = ...,
    ) -> Stream[U]: ...
    @overload
    def map(
        self,
        fn: Callable[[T], U],
        *,
        on_error: ErrorStrategy | OnError = ...,
        name: str | None = ...,
    ) -> Stream[U]: ...
    def map(
        self,
        fn: Callable[[T], Any],
        *,
        on_error: ErrorStrategy | OnError = ErrorStrategy.STOP,
        name: str | None = None,
    ) -> Stream[Any]:
        """Transform each item."""
        return self._then(_Map(fn, on_error, name))

    def filter(
        self,
        predicate: Callable[[T], bool] | Callable[[T], Awaitable[bool]],
        *,
        on_error: ErrorStrategy | OnError = ErrorStrategy.STOP,
        name: str | None = None,
    ) -> Stream[T]:
        """Keep the items for which `predicate` is true (the others are acked as done)."""
        return self._then(_Filter(predicate, on_error, name))

    def batch(
        self, size: int, *, max_wait: float | None = None, name: str | None = None
    ) -> Stream[list[T]]:
        """Group items into lists of `size`; with `max_wait`, a batch is also
        emitted that many seconds after its first item, full or not."""
        if size < 1:
            raise ValueError("batch size must be >= 1")
        if max_wait is not None and not max_wait > 0:
            raise ValueError("max_wait must be > 0 (or None)")
        return self._then(_Batch(size, max_wait, name))

    def window(
        self, *, count: int | None = None, duration: float | None = None, name: str | None = None
    ) -> Stream[list[T]]:
        """Tumbling windows: every `count` items, or every `duration` seconds on a
        fixed grid from the stream's start (empty windows are skipped). Give one."""
        if (count is None) == (duration is None):
            raise ValueError("give exactly one of count and duration")
        if count is not None and count < 1:
            raise ValueError("count must be >= 1")
        if duration is not None and not duration > 0:
            raise ValueError("duration must be > 0")
        return self._then(_Window(count, duration, name))

    def buffer(
        self, size: int, *, strategy: Backpressure = Backpressure.BLOCK, name: str | None = None
    ) -> Stream[T]:
        """Decouple: run everything upstream in its own task, up to `size` items ahead."""
        if size < 1:
            raise ValueError("buffer size must be >= 1")
        return self._then(_Buffer(size, strategy, name))

    def rate_limit(self, rate: float, per: float = 1.0, *, name: str | None = None) -> Stream[T]:
        """Let at most `rate` items through per `per` seconds (bursts up to `rate`)."""
        if rate <= 0 or per <= 0:
            raise ValueError("need rate > 0 and per > 0")
        return self._then(_RateLimit(rate, per, name))

    def merge(
        self,
        *others: Stream[T] | AsyncIterable[T],
        capacity: int = 1000,
        strategy: Backpressure = Backpressure.BLOCK,
        name: str | None = None,
    ) -> Stream[T]:
        """Interleave this stream with others, each pulled by its own task into a
        shared buffer of `capacity`; each input's order is kept."""
        if capacity < 1:
            raise ValueError("capacity must be >= 1")
        streams = (self, *(o if isinstance(o, Stream) else Stream(o) for o in others))
        return Stream._of((_Merge(streams, capacity, strategy, name),))

    def to(
        self,
        sink: Callable[[T], Awaitable[object]],
        *,
        on_error: ErrorStrategy | OnError = ErrorStrategy.STOP,
        name: str = "sink",
    ) -> Pipeline[T]:
        """Attach a sink: an async callable awaited once per item (or batch)."""
        return Pipeline(self, sink, on_error=on_error, name=name)

    async def run(
        self,
        sink: Callable[[T], Awaitable[object]],
        *,
        on_error: ErrorStrategy | OnError = ErrorStrategy.STOP,
    ) -> dict[str, StageMetrics]:
        """`self.to(sink, on_error=on_error).run()`."""
        return await self.to(sink, on_error=on_error).run()


@dataclass(eq=False)
class Pipeline(Generic[T]):
    """A stream with its sink, run once; `metrics()` may be read while it runs."""

    stream: Stream[T]
    sink: Callable[[T], Awaitable[object]]
    on_error: ErrorStrategy | OnError = ErrorStrategy.STOP
    name: str = "sink"
    _ctx: _Context = field(init=False, repr=False)
    _started: bool = field(default=False, init=False, repr=False)

    def __post_init__(self) -> None:
        self._ctx = _Context(self.stream, self.name)

    def metrics(self) -> dict[str, StageMetrics]:
        """Counters per stage, in pipeline order (merge inputs first), then the sink."""
        out = {s.name: s.snapshot() for s in self._ctx.stats.values()}
        out[self.name] = self._ctx.sink.snapshot()
        return out

    async def run(self) -> dict[str, StageMetrics]:
        """Pull every item through to the sink; return the final metrics.

        Raises `StageFailed` (or `BackpressureError`) when a stage stops the
        stream; source items in flight are nacked first. Cancellation stops
        the stream the same way and propagates.
        """
        if self._started:
            raise RuntimeError("a pipeline runs once (its source is consumed)")
        self._started = True
        ctx = self._ctx
        stats = ctx.sink
        sink = self.sink
        guard = _guard_for(sink, True, self.on_error, stats)
        chain = ctx.chain(self.stream)
        held: _Acks = None
        try:
            async for value, acks in chain:
                held = acks
                if guard is None:
                    try:
                        await sink(value)
                    except Exception as exc:
                        stats.errors += 1
                        raise StageFailed(stats.name, exc) from exc
                elif await guard.call(value) is _SKIP:
                    held = None
                    if acks:
                        await _settle(acks, False, stats)
                    continue
                held = None
                stats.processed += 1
                if acks:
                    await _settle(acks, True, stats)
        finally:
            if held:
                await _settle(held, False, stats)
            await chain.aclose()  # type: ignore[attr-defined]
        return self.metrics()
