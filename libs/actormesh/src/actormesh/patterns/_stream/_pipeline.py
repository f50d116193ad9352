"""The public face of streams: `Stream` describes a pipeline, `Pipeline` runs it.

A `Stream` is an immutable chain of specs (a head, then stages); each builder
method checks its arguments and returns a new Stream. `Pipeline.run()` opens
the chain into fused generators (`Context.chain`), pulls every item through to
the sink, and settles each item's acks by what became of it.
"""

from __future__ import annotations

from collections.abc import AsyncIterable, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar, overload

from ..._errors import ConfigError
from .._backpressure import Backpressure
from .._errors import StageFailed
from ._acks import Acks, Flow, settle
from ._batching import Batch, CountWindow, TimeWindow
from ._metrics import StageKind, StageMetrics, Stats
from ._stages import Buffer, Filter, Head, Map, Merge, RateLimit, Source, Stage
from ._strategy import SKIP, ErrorStrategy, OnError, guard_for

__all__ = ["Context", "Pipeline", "Stream"]

T = TypeVar("T")
U = TypeVar("U")


class Context:
    """One pipeline run: stage names, counters, and chain construction."""

    def __init__(self, stream: Stream[Any], sink_name: str) -> None:
        self.stats: dict[Head | Stage, Stats] = {}
        taken: set[str] = set()
        order: list[Head | Stage] = []
        self._walk(stream, order)
        for spec in order:
            if spec.name is not None:
                if spec.name in taken:
                    raise ConfigError(f"two stream stages are named {spec.name!r}")
                taken.add(spec.name)
        for spec in order:
            self.stats[spec] = Stats(spec.name or _fresh(spec.kind, taken), spec.kind)
        if sink_name in taken:
            raise ConfigError(f"the sink's name {sink_name!r} is taken by a stage")
        self.sink = Stats(sink_name, "sink")

    def _walk(self, stream: Stream[Any], order: list[Head | Stage]) -> None:
        """Every spec in pipeline order: a merge's inputs before the merge."""
        head = stream._head
        _check_new(head, order)
        for sub in head.inputs():
            self._walk(sub, order)
        order.append(head)
        for stage in stream._stages:
            _check_new(stage, order)
            order.append(stage)

    def chain(self, stream: Stream[Any]) -> Flow:
        flow = stream._head.open(self)
        for stage in stream._stages:
            flow = stage.open(flow, self.stats[stage])
        return flow


def _check_new(spec: Head | Stage, order: list[Head | Stage]) -> None:
    if spec in order:
        raise ConfigError(
            "a stream (or its source) appears twice in one pipeline; "
            "an AsyncIterable can be consumed once"
        )


def _fresh(kind: StageKind, taken: set[str]) -> str:
    name, n = str(kind), 1
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

    __slots__ = ("_head", "_stages")

    def __init__(self, source: AsyncIterable[T], *, name: str | None = None) -> None:
        self._head: Head = Source(source, name)
        self._stages: tuple[Stage, ...] = ()

    @classmethod
    def _of(cls, head: Head, stages: tuple[Stage, ...] = ()) -> Stream[Any]:
        stream: Stream[Any] = cls.__new__(cls)
        stream._head = head
        stream._stages = stages
        return stream

    def _then(self, stage: Stage) -> Stream[Any]:
        return Stream._of(self._head, (*self._stages, stage))

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
        return self._then(Map(fn, on_error, name))

    def filter(
        self,
        predicate: Callable[[T], bool] | Callable[[T], Awaitable[bool]],
        *,
        on_error: ErrorStrategy | OnError = ErrorStrategy.STOP,
        name: str | None = None,
    ) -> Stream[T]:
        """Keep the items for which `predicate` is true (the others are acked as done)."""
        return self._then(Filter(predicate, on_error, name))

    def batch(
        self, size: int, *, max_wait: float | None = None, name: str | None = None
    ) -> Stream[list[T]]:
        """Group items into lists of `size`; with `max_wait`, a batch is also
        emitted that many seconds after its first item, full or not."""
        if size < 1:
            raise ConfigError("batch size must be >= 1")
        if max_wait is not None and not max_wait > 0:
            raise ConfigError("max_wait must be > 0 (or None)")
        return self._then(Batch(size, max_wait, name))

    def window(
        self, *, count: int | None = None, duration: float | None = None, name: str | None = None
    ) -> Stream[list[T]]:
        """Tumbling windows: every `count` items, or every `duration` seconds on a
        fixed grid from the stream's start (empty windows are skipped). Give one."""
        if count is not None and duration is None:
            if count < 1:
                raise ConfigError("count must be >= 1")
            return self._then(CountWindow(count, None, name))
        if duration is not None and count is None:
            if not duration > 0:
                raise ConfigError("duration must be > 0")
            return self._then(TimeWindow(duration, name))
        raise ConfigError("give exactly one of count and duration")

    def buffer(
        self, size: int, *, strategy: Backpressure = Backpressure.BLOCK, name: str | None = None
    ) -> Stream[T]:
        """Decouple: run everything upstream in its own task, up to `size` items ahead."""
        if size < 1:
            raise ConfigError("buffer size must be >= 1")
        return self._then(Buffer(size, strategy, name))

    def rate_limit(self, rate: float, per: float = 1.0, *, name: str | None = None) -> Stream[T]:
        """Let at most `rate` items through per `per` seconds (bursts up to `rate`)."""
        if rate <= 0 or per <= 0:
            raise ConfigError("need rate > 0 and per > 0")
        return self._then(RateLimit(rate, per, name))

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
            raise ConfigError("capacity must be >= 1")
        streams = (self, *(o if isinstance(o, Stream) else Stream(o) for o in others))
        return Stream._of(Merge(streams, capacity, strategy, name))

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
    _ctx: Context = field(init=False, repr=False)
    _started: bool = field(default=False, init=False, repr=False)

    def __post_init__(self) -> None:
        self._ctx = Context(self.stream, self.name)

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
        guard = guard_for(sink, True, self.on_error, stats)
        chain = ctx.chain(self.stream)
        held: Acks = None
        try:
            async for value, acks in chain:
                held = acks
                if guard is None:
                    try:
                        await sink(value)
                    except Exception as exc:
                        stats.errors += 1
                        raise StageFailed(stats.name, exc) from exc
                elif await guard.call(value) is SKIP:
                    held = None
                    if acks:
                        await settle(acks, False, stats)
                    continue
                held = None
                stats.processed += 1
                if acks:
                    await settle(acks, True, stats)
        finally:
            if held:
                await settle(held, False, stats)
            await chain.aclose()
        return self.metrics()
