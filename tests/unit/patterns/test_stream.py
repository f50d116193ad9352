"""Stream processor: backpressure strategies, ack-after-sink, error strategies, stages."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterable
from typing import TypeVar

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from actormesh.patterns import (
    Ackable,
    Backpressure,
    BackpressureError,
    BreakerConfig,
    CircuitBreaker,
    CircuitState,
    ErrorStrategy,
    OnError,
    RetryExhausted,
    RetryPolicy,
    StageFailed,
    Stream,
)

T = TypeVar("T")
FAST = RetryPolicy(attempts=3, base=0.0, jitter=0.0)


class Msg:
    """An Ackable source item that records its fate and refuses to be settled twice."""

    def __init__(self, n: int) -> None:
        self.n = n
        self.fate: str | None = None

    async def ack(self) -> None:
        assert self.fate is None, f"{self.n} settled twice"
        self.fate = "ack"

    async def nak(self) -> None:
        assert self.fate is None, f"{self.n} settled twice"
        self.fate = "nak"

    def __repr__(self) -> str:
        return f"Msg({self.n}, {self.fate})"


async def source(items: Iterable[T], pauses: Iterable[int] = ()) -> AsyncIterator[T]:
    """Yields items; after item i, yields control to the loop pauses[i] times."""
    pause_list = list(pauses)
    for i, item in enumerate(items):
        yield item
        for _ in range(pause_list[i] if i < len(pause_list) else 0):
            await asyncio.sleep(0)


class Sink:
    def __init__(self, pauses: Iterable[int] = ()) -> None:
        self.got: list[object] = []
        self.pauses = list(pauses)

    async def __call__(self, item: object) -> None:
        # Ack-after-sink: nothing that reaches the sink has been settled yet.
        for m in item if isinstance(item, list) else [item]:
            if isinstance(m, Msg):
                assert m.fate is None
        self.got.append(item)
        i = len(self.got) - 1
        for _ in range(self.pauses[i] if i < len(self.pauses) else 0):
            await asyncio.sleep(0)


def test_msg_is_ackable() -> None:
    assert isinstance(Msg(1), Ackable)


# -- backpressure -------------------------------------------------------------


@settings(max_examples=80, deadline=None)
@given(
    n=st.integers(0, 60),
    size=st.integers(1, 8),
    source_pauses=st.lists(st.integers(0, 3), max_size=60),
    sink_pauses=st.lists(st.integers(0, 3), max_size=60),
    merge_with=st.integers(0, 2),
)
def test_block_loses_nothing_and_keeps_order(
    n: int, size: int, source_pauses: list[int], sink_pauses: list[int], merge_with: int
) -> None:
    async def scenario() -> None:
        stream = Stream(source(range(n), source_pauses)).buffer(size).map(lambda x: x)
        extra = [list(range(1000 * (k + 1), 1000 * (k + 1) + n // 2)) for k in range(merge_with)]
        if extra:
            stream = stream.merge(*(source(e, sink_pauses) for e in extra), capacity=size)
        sink = Sink(sink_pauses)
        metrics = await stream.run(sink)
        got = [x for x in sink.got if isinstance(x, int)]
        assert [x for x in got if x < 1000] == list(range(n))
        for e in extra:
            assert [x for x in got if e and e[0] <= x <= e[-1]] == e
        assert len(got) == n + sum(map(len, extra))
        assert all(m.dropped == 0 for m in metrics.values())

    asyncio.run(scenario())


@settings(max_examples=80, deadline=None)
@given(
    n=st.integers(0, 50),
    size=st.integers(1, 10),
    strategy=st.sampled_from([Backpressure.DROP_NEWEST, Backpressure.DROP_OLDEST]),
)
def test_drop_strategies_drop_exactly_the_overflow_and_the_right_items(
    n: int, size: int, strategy: Backpressure
) -> None:
    """A producer that outruns the consumer by n items into a buffer of `size`."""

    async def scenario() -> None:
        msgs = [Msg(i) for i in range(n)]
        sink = Sink()
        metrics = await Stream(source(msgs)).buffer(size, strategy=strategy).run(sink)
        dropped = max(0, n - size)
        kept = msgs[:size] if strategy is Backpressure.DROP_NEWEST else msgs[dropped:]
        assert sink.got == kept
        assert metrics["buffer"].dropped == dropped
        assert metrics["buffer"].backpressure_events == dropped
        assert [m.fate for m in msgs] == ["ack" if m in kept else "nak" for m in msgs]

    asyncio.run(scenario())


async def test_raise_strategy_fails_with_backpressure_error_and_naks_in_flight() -> None:
    msgs = [Msg(i) for i in range(5)]
    with pytest.raises(BackpressureError) as info:
        await Stream(source(msgs)).buffer(2, strategy=Backpressure.RAISE, name="intake").run(Sink())
    assert (info.value.stage, info.value.capacity) == ("intake", 2)
    assert all(m.fate == "nak" for m in msgs[:3])
    assert all(m.fate is None for m in msgs[3:])  # never pulled from the source


# -- acknowledgement ------------------------------------------------------------


@settings(max_examples=80, deadline=None)
@given(
    n=st.integers(0, 40),
    batch=st.integers(1, 7),
    failing=st.sets(st.integers(0, 39)),
    rejected=st.sets(st.integers(0, 39)),
    sink_fails=st.booleans(),
)
def test_every_message_is_settled_once_acked_only_after_the_sink(
    n: int, batch: int, failing: set[int], rejected: set[int], sink_fails: bool
) -> None:
    async def scenario() -> None:
        msgs = [Msg(i) for i in range(n)]

        def check(m: Msg) -> Msg:
            if m.n in failing:
                raise ValueError(m.n)
            return m

        sink_calls = 0

        async def sink(items: list[Msg]) -> None:
            nonlocal sink_calls
            assert all(m.fate is None for m in items)
            sink_calls += 1
            if sink_fails and sink_calls % 2 == 0:
                raise OSError("sink down")
            delivered.extend(items)

        delivered: list[Msg] = []
        await (
            Stream(source(msgs))
            .map(check, on_error=ErrorStrategy.LOG_AND_CONTINUE)
            .filter(lambda m: m.n not in rejected)
            .batch(batch)
            .run(sink, on_error=ErrorStrategy.LOG_AND_CONTINUE)
        )
        for m in msgs:
            if m in delivered or (m.n in rejected and m.n not in failing):
                assert m.fate == "ack", m
            else:
                assert m.fate == "nak", m

    asyncio.run(scenario())


async def test_stop_naks_what_is_in_flight_and_raises_stage_failed() -> None:
    msgs = [Msg(i) for i in range(10)]

    async def sink(batch: list[Msg]) -> None:
        if batch[0].n == 3:
            raise OSError("disk full")

    with pytest.raises(StageFailed) as info:
        await Stream(source(msgs)).batch(3, name="group").run(sink)
    assert info.value.stage == "sink"
    assert isinstance(info.value.__cause__, OSError)
    assert [m.fate for m in msgs[:3]] == ["ack"] * 3
    assert [m.fate for m in msgs[3:6]] == ["nak"] * 3
    assert all(m.fate is None for m in msgs[6:])


async def test_cancellation_naks_held_items_and_propagates() -> None:
    msgs = [Msg(i) for i in range(20)]
    in_sink = asyncio.Event()

    async def stuck(batch: list[Msg]) -> None:
        in_sink.set()
        await asyncio.Event().wait()

    task = asyncio.create_task(Stream(source(msgs)).buffer(4).batch(2, max_wait=60).run(stuck))
    await in_sink.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    settled = [m for m in msgs if m.fate is not None]
    assert settled and all(m.fate == "nak" for m in settled)
    assert msgs[0].fate == msgs[1].fate == "nak"  # the batch inside the sink


async def test_a_failing_ack_is_counted_not_fatal(caplog: pytest.LogCaptureFixture) -> None:
    class Flaky(Msg):
        async def ack(self) -> None:
            raise ConnectionError("broker gone")

    metrics = await Stream(source([Flaky(1), Flaky(2)])).run(Sink())
    assert metrics["sink"].ack_failures == 2
    assert metrics["sink"].processed == 2
    assert "ack failed" in caplog.text


# -- error strategies -----------------------------------------------------------


async def test_stop_in_a_map_names_the_stage() -> None:
    def explode(x: int) -> int:
        if x == 2:
            raise KeyError(x)
        return x

    sink = Sink()
    with pytest.raises(StageFailed) as info:
        await Stream(source(range(5))).map(explode, name="parse").run(sink)
    assert info.value.stage == "parse"
    assert sink.got == [0, 1]


async def test_retry_then_succeed_and_retry_exhausted_with_either_fallback() -> None:
    attempts: dict[int, int] = {}

    async def flaky(x: int) -> int:
        attempts[x] = attempts.get(x, 0) + 1
        if x == 1 and attempts[x] < 3:
            raise ConnectionError
        if x == 2:
            raise ConnectionError
        return x

    skip = OnError(
        strategy=ErrorStrategy.RETRY, retry=FAST, exhausted=ErrorStrategy.LOG_AND_CONTINUE
    )
    sink = Sink()
    metrics = await Stream(source(range(4))).map(flaky, on_error=skip).run(sink)
    assert sink.got == [0, 1, 3]
    assert metrics["map"].retries == 2 + 2
    assert metrics["map"].errors == 1

    stop = OnError(strategy=ErrorStrategy.RETRY, retry=FAST)
    attempts.clear()
    with pytest.raises(StageFailed) as info:
        await Stream(source(range(4))).map(flaky, on_error=stop).run(Sink())
    assert isinstance(info.value.__cause__, RetryExhausted)


async def test_circuit_breaker_strategy_skips_failures_and_waits_while_open() -> None:
    # A frozen clock keeps the circuit open until the trip's listener moves it on,
    # which can only happen once the stage has yielded (i.e. while it waits).
    now = [0.0]
    loop = asyncio.get_running_loop()

    def advance() -> None:
        now[0] += 1.0

    def on_change(b: CircuitBreaker, old: CircuitState, new: CircuitState) -> None:
        if new is CircuitState.OPEN:
            loop.call_soon(advance)

    breaker = CircuitBreaker(
        "dep",
        BreakerConfig(failure_threshold=2, open_duration=0.01),
        clock=lambda: now[0],
        on_state_change=on_change,
    )
    calls: list[int] = []

    async def call_dep(x: int) -> int:
        calls.append(x)
        if x in (1, 2):
            raise ConnectionError
        return x

    sink = Sink()
    metrics = await (
        Stream(source(range(5)))
        .map(call_dep, on_error=OnError(strategy=ErrorStrategy.CIRCUIT_BREAKER, breaker=breaker))
        .run(sink)
    )
    assert sink.got == [0, 3, 4]
    assert calls == [0, 1, 2, 3, 4]  # item 3 waited for the half-open probe, not skipped
    assert metrics["map"].errors == 2
    assert metrics["map"].backpressure_events == 1
    assert breaker.metrics().trips == 1
    assert breaker.metrics().state is CircuitState.CLOSED


async def test_bare_circuit_breaker_strategy_gets_a_breaker_of_its_own() -> None:
    sink = Sink()
    await (
        Stream(source(range(3))).map(lambda x: x, on_error=ErrorStrategy.CIRCUIT_BREAKER).run(sink)
    )
    assert sink.got == [0, 1, 2]


async def test_a_failing_source_stops_the_stream() -> None:
    async def broken() -> AsyncIterator[int]:
        yield 1
        raise OSError("socket closed")

    sink = Sink()
    with pytest.raises(StageFailed) as info:
        await Stream(broken(), name="feed").run(sink)
    assert info.value.stage == "feed"
    assert sink.got == [1]


async def test_an_upstream_failure_behind_a_buffer_surfaces() -> None:
    def explode(x: int) -> int:
        raise ValueError(x)

    with pytest.raises(StageFailed) as info:
        await Stream(source(range(3))).map(explode).buffer(2).run(Sink())
    assert info.value.stage == "map"


# -- stages -----------------------------------------------------------------------


async def test_sync_and_async_functions_and_async_callables() -> None:
    class Doubler:
        async def __call__(self, x: int) -> int:
            return 2 * x

    async def is_even(x: int) -> bool:
        return x % 2 == 0

    sink = Sink()
    await Stream(source(range(6))).map(Doubler()).filter(is_even).map(str).run(sink)
    assert sink.got == ["0", "2", "4", "6", "8", "10"]


@settings(max_examples=50, deadline=None)
@given(n=st.integers(0, 50), size=st.integers(1, 9))
def test_batch_and_count_windows_partition_the_stream(n: int, size: int) -> None:
    async def scenario() -> None:
        for stream in (
            Stream(source(range(n))).batch(size),
            Stream(source(range(n))).window(count=size),
        ):
            sink = Sink()
            await stream.run(sink)
            assert [x for b in sink.got for x in b] == list(range(n))  # type: ignore[attr-defined]
            assert all(len(b) == size for b in sink.got[:-1])  # type: ignore[arg-type]

    asyncio.run(scenario())


async def test_batch_max_wait_flushes_a_partial_batch_while_the_source_is_idle() -> None:
    first_batch = asyncio.Event()

    async def slow_source() -> AsyncIterator[int]:
        yield 1
        yield 2
        await first_batch.wait()  # idle until the partial batch came out
        yield 3

    batches: list[list[int]] = []

    async def sink(batch: list[int]) -> None:
        batches.append(batch)
        first_batch.set()

    await Stream(slow_source()).batch(100, max_wait=0.001).run(sink)
    assert batches == [[1, 2], [3]]


async def test_time_windows_group_by_arrival_and_skip_empty_windows() -> None:
    release = asyncio.Event()

    async def bursty() -> AsyncIterator[str]:
        yield "a"
        yield "b"
        await release.wait()
        yield "c"

    windows: list[list[str]] = []

    async def sink(window: list[str]) -> None:
        windows.append(window)
        release.set()

    await Stream(bursty()).window(duration=0.001).run(sink)
    # "c" only exists once a window was emitted, so it closes a later window.
    assert [x for w in windows for x in w] == ["a", "b", "c"]
    assert windows[-1] == ["c"]
    assert all(windows)


async def test_rate_limit_passes_everything() -> None:
    sink = Sink()
    metrics = await Stream(source(range(5))).rate_limit(2, per=0.001).run(sink)
    assert sink.got == list(range(5))
    assert metrics["rate_limit"].processed == 5


async def test_metrics_per_stage_with_unique_default_names() -> None:
    pipeline = (
        Stream(source(range(10)))
        .map(lambda x: x)
        .map(lambda x: x)
        .filter(lambda x: x % 2 == 0)
        .batch(2)
        .to(Sink())
    )
    assert list(pipeline.metrics()) == ["source", "map", "map-2", "filter", "batch", "sink"]
    metrics = await pipeline.run()
    assert metrics["filter"].processed == 10
    assert metrics["batch"].processed == 5
    assert metrics["sink"].processed == 3
    with pytest.raises(RuntimeError, match="runs once"):
        await pipeline.run()


def test_invalid_pipelines_are_refused_early() -> None:
    s: Stream[int] = Stream(source([]))
    with pytest.raises(ValueError, match="named"):
        s.map(str, name="x").map(str, name="x").to(Sink())
    with pytest.raises(ValueError, match="appears twice"):
        s.merge(s).to(Sink())
    with pytest.raises(ValueError, match="exactly one"):
        s.window()
    with pytest.raises(ValueError, match="batch size"):
        s.batch(0)
    with pytest.raises(ValueError, match="exhausted"):
        OnError(strategy=ErrorStrategy.RETRY, exhausted=ErrorStrategy.RETRY)
