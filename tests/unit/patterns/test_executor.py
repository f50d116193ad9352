"""TaskExecutor: priorities under saturation, bounds, cancellation, shutdown, failures."""

from __future__ import annotations

import asyncio

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from actormesh.patterns import (
    Backpressure,
    BreakerConfig,
    CircuitBreaker,
    CircuitOpen,
    ExecutorConfig,
    ExecutorShutdown,
    Priority,
    QueueFull,
    RetryExhausted,
    RetryPolicy,
    TaskCancelled,
    TaskExecutor,
    TaskState,
    TaskTimeout,
)

PRIORITIES = st.sampled_from(list(Priority))
FAST_RETRY = RetryPolicy(attempts=3, base=0.0, jitter=0.0)


async def _never() -> None:
    await asyncio.Event().wait()


@settings(max_examples=60, deadline=None)
@given(priorities=st.lists(PRIORITIES, min_size=1, max_size=40), concurrency=st.integers(1, 4))
def test_under_saturation_higher_priority_starts_first_fifo_within(
    priorities: list[Priority], concurrency: int
) -> None:
    async def scenario() -> list[int]:
        started: list[int] = []
        gate = asyncio.Event()

        async def job(i: int) -> None:
            started.append(i)

        ex = TaskExecutor(ExecutorConfig(max_concurrency=concurrency))
        for _ in range(concurrency):
            await ex.submit(gate.wait, priority=Priority.LOW)
        for i, p in enumerate(priorities):
            await ex.submit(job, i, priority=p)
        assert ex.metrics().queued == len(priorities)
        gate.set()
        await ex.shutdown()
        return started

    started = asyncio.run(scenario())
    assert started == sorted(range(len(priorities)), key=lambda i: (-priorities[i], i))


@settings(max_examples=40, deadline=None)
@given(
    yields=st.lists(st.integers(0, 5), min_size=1, max_size=60),
    concurrency=st.integers(1, 8),
)
def test_concurrency_never_exceeds_the_bound(yields: list[int], concurrency: int) -> None:
    async def scenario() -> tuple[int, list[int]]:
        running = peak = 0
        done: list[int] = []

        async def job(i: int, n: int) -> int:
            nonlocal running, peak
            running += 1
            peak = max(peak, running)
            for _ in range(n):
                await asyncio.sleep(0)
            running -= 1
            done.append(i)
            return i

        async with TaskExecutor(ExecutorConfig(max_concurrency=concurrency)) as ex:
            handles = [await ex.submit(job, i, n) for i, n in enumerate(yields)]
            assert [await h for h in handles] == list(range(len(yields)))
        return peak, done

    peak, done = asyncio.run(scenario())
    assert peak <= concurrency
    assert sorted(done) == list(range(len(yields)))


@settings(max_examples=60, deadline=None)
@given(
    jobs=st.lists(st.tuples(PRIORITIES, st.booleans()), min_size=1, max_size=30),
)
def test_cancelled_queued_tasks_never_run_and_the_rest_do(
    jobs: list[tuple[Priority, bool]],
) -> None:
    async def scenario() -> None:
        ran: list[int] = []
        gate = asyncio.Event()

        async def job(i: int) -> int:
            ran.append(i)
            return i

        ex = TaskExecutor(ExecutorConfig(max_concurrency=1))
        await ex.submit(gate.wait)
        handles = [await ex.submit(job, i, priority=p) for i, (p, _) in enumerate(jobs)]
        cancelled = {i for i, (_, c) in enumerate(jobs) if c}
        for i in cancelled:
            assert handles[i].cancel()
            assert handles[i].state is TaskState.CANCELLED
        gate.set()
        await ex.shutdown()
        assert set(ran) == set(range(len(jobs))) - cancelled
        for i, handle in enumerate(handles):
            assert handle.done()
            if i in cancelled:
                with pytest.raises(TaskCancelled):
                    await handle
                assert not handle.cancel()
            else:
                assert await handle == i
        m = ex.metrics()
        assert m.cancelled == len(cancelled)
        assert m.completed == len(jobs) - len(cancelled) + 1
        assert (m.running, m.queued) == (0, 0)

    asyncio.run(scenario())


@settings(max_examples=40, deadline=None)
@given(queued=st.integers(0, 20), concurrency=st.integers(1, 4), immediate=st.booleans())
def test_shutdown_graceful_finishes_everything_immediate_cancels_everything(
    queued: int, concurrency: int, immediate: bool
) -> None:
    async def scenario() -> None:
        release = asyncio.Event()
        started = 0
        finished = 0

        async def job() -> None:
            nonlocal started, finished
            started += 1
            await release.wait()
            finished += 1

        ex = TaskExecutor(ExecutorConfig(max_concurrency=concurrency))
        handles = [await ex.submit(job) for _ in range(concurrency + queued)]
        await asyncio.sleep(0)  # let the first `concurrency` tasks start
        assert started == concurrency
        closing = asyncio.create_task(ex.shutdown(cancel=immediate))
        await asyncio.sleep(0)
        with pytest.raises(ExecutorShutdown):
            await ex.submit(job)
        release.set()
        await closing
        if immediate:
            assert (started, finished) == (concurrency, 0)
            assert all(h.state is TaskState.CANCELLED for h in handles)
            assert ex.metrics().cancelled == len(handles)
        else:
            assert finished == len(handles)
            assert all(h.state is TaskState.SUCCEEDED for h in handles)

    asyncio.run(scenario())


async def test_an_exception_is_captured_reported_and_the_executor_goes_on() -> None:
    reported: list[str] = []
    ex = TaskExecutor(
        ExecutorConfig(max_concurrency=2),
        on_error=lambda handle, exc: reported.append(f"{handle.name}:{exc}"),
    )

    async def fail() -> None:
        raise ValueError("bad")

    async def ok() -> str:
        return "fine"

    bad = await ex.submit(fail, name="the-bad-one")
    good = await ex.submit(ok)
    with pytest.raises(ValueError, match="bad"):
        await bad
    assert isinstance(bad.exception(), ValueError)
    assert await good == "fine"
    assert good.exception() is None
    await ex.shutdown()
    assert reported == ["the-bad-one:bad"]
    m = ex.metrics()
    assert (m.failed, m.completed, m.exceptions_recovered) == (1, 1, 1)


async def test_failures_are_logged_without_a_callback(caplog: pytest.LogCaptureFixture) -> None:
    async def fail() -> None:
        raise RuntimeError("kaput")

    async with TaskExecutor() as ex:
        handle = await ex.submit(fail, name="logged")
    assert handle.state is TaskState.FAILED
    assert "'logged' failed: RuntimeError: kaput" in caplog.text


async def test_a_broken_on_error_callback_is_contained(caplog: pytest.LogCaptureFixture) -> None:
    def broken(handle: object, exc: BaseException) -> None:
        raise RuntimeError("callback bug")

    async def fail() -> None:
        raise ValueError

    async with TaskExecutor(on_error=broken) as ex:
        await ex.submit(fail)
        handle = await ex.submit(asyncio.sleep, 0, "still works")
    assert await handle == "still works"
    assert "on_error callback failed" in caplog.text


async def test_cancelling_a_running_task() -> None:
    async with TaskExecutor(ExecutorConfig(max_concurrency=1)) as ex:
        entered = asyncio.Event()

        async def hang() -> None:
            entered.set()
            await asyncio.Event().wait()

        running = await ex.submit(hang)
        after = await ex.submit(asyncio.sleep, 0, "next")
        await entered.wait()
        assert running.state is TaskState.RUNNING
        assert running.cancel()
        with pytest.raises(TaskCancelled):
            await running
        assert await after == "next"
    assert ex.metrics().cancelled == 1


async def test_cancelling_the_awaiter_does_not_cancel_the_task() -> None:
    release = asyncio.Event()
    async with TaskExecutor() as ex:
        handle = await ex.submit(release.wait)
        waiter = asyncio.create_task(handle.result())
        await asyncio.sleep(0)
        waiter.cancel()
        with pytest.raises(asyncio.CancelledError):
            await waiter
        assert handle.state is TaskState.RUNNING
        release.set()
        assert await handle is True


async def test_a_task_cancelled_before_its_first_step_is_accounted() -> None:
    async with TaskExecutor(ExecutorConfig(max_concurrency=1)) as ex:
        first = await ex.submit(asyncio.sleep, 0)
        first.cancel()  # its coroutine never got to run
        second = await ex.submit(asyncio.sleep, 0, 2)
        assert await second == 2
    with pytest.raises(TaskCancelled):
        await first
    assert ex.metrics().running == 0


async def test_timeouts_raise_task_timeout_and_retry_by_policy() -> None:
    attempts = 0

    async def slow() -> None:
        nonlocal attempts
        attempts += 1
        await _never()

    async with TaskExecutor() as ex:
        once = await ex.submit(slow, timeout=0.001, retry=RetryPolicy(retry_on_timeout=False))
        with pytest.raises(TaskTimeout) as info:
            await once
        assert info.value.task == once.name
        assert attempts == 1
        again = await ex.submit(slow, timeout=0.001, retry=FAST_RETRY)
        with pytest.raises(RetryExhausted) as exhausted:
            await again
        assert isinstance(exhausted.value.__cause__, TaskTimeout)
        assert attempts == 4
    m = ex.metrics()
    assert (m.timeouts, m.retries, m.failed) == (4, 2, 2)


async def test_a_timeout_error_raised_by_the_task_is_not_a_task_timeout() -> None:
    async def own_timeout() -> None:
        raise TimeoutError("upstream said so")

    async with TaskExecutor() as ex:
        handle = await ex.submit(own_timeout, timeout=60)
        with pytest.raises(TimeoutError, match="upstream") as info:
            await handle
        assert not isinstance(info.value, TaskTimeout)
    assert ex.metrics().timeouts == 0


async def test_retries_until_success_and_counts_recovered_exceptions() -> None:
    calls = 0

    async def flaky() -> str:
        nonlocal calls
        calls += 1
        if calls < 3:
            raise ConnectionError
        return "up"

    async with TaskExecutor(ExecutorConfig(retry=FAST_RETRY)) as ex:
        handle = await ex.submit(flaky)
        assert await handle == "up"
    m = ex.metrics()
    assert (m.retries, m.exceptions_recovered, m.completed, m.failed) == (2, 2, 1, 0)


async def test_breaker_trips_are_counted_and_open_circuits_fail_fast() -> None:
    breaker = CircuitBreaker("dep", BreakerConfig(failure_threshold=2))

    async def down() -> None:
        raise ConnectionError

    async with TaskExecutor(ExecutorConfig(max_concurrency=1), breaker=breaker) as ex:
        handles = [await ex.submit(down) for _ in range(3)]
        for h in handles[:2]:
            with pytest.raises(ConnectionError):
                await h
        with pytest.raises(CircuitOpen):
            await handles[2]
        # None turns the executor's breaker off for one task.
        assert await (await ex.submit(asyncio.sleep, 0, "ok", breaker=None)) == "ok"
    assert ex.metrics().breaker_trips == 1


async def test_bounded_queue_raises_queue_full() -> None:
    gate = asyncio.Event()
    config = ExecutorConfig(max_concurrency=1, max_queued=2, when_full=Backpressure.RAISE)
    async with TaskExecutor(config) as ex:
        await ex.submit(gate.wait)
        await ex.submit(gate.wait)
        await ex.submit(gate.wait)
        with pytest.raises(QueueFull) as info:
            await ex.submit(gate.wait)
        assert info.value.capacity == 2
        assert ex.metrics().rejected == 1
        gate.set()


async def test_bounded_queue_blocks_until_room_in_order() -> None:
    gate = asyncio.Event()
    ran: list[int] = []

    async def job(i: int) -> None:
        ran.append(i)

    config = ExecutorConfig(max_concurrency=1, max_queued=1, when_full=Backpressure.BLOCK)
    async with TaskExecutor(config) as ex:
        await ex.submit(gate.wait)
        await ex.submit(job, 0)
        blocked = [asyncio.create_task(ex.submit(job, i)) for i in (1, 2, 3)]
        await asyncio.sleep(0)
        assert not any(t.done() for t in blocked)
        with pytest.raises(QueueFull):
            await ex.submit(job, 99, when_full=Backpressure.RAISE)
        gate.set()
        await asyncio.gather(*blocked)
    assert ran == [0, 1, 2, 3]


async def test_zero_queue_hands_the_run_slot_to_a_waiting_submitter() -> None:
    gate = asyncio.Event()
    async with TaskExecutor(ExecutorConfig(max_concurrency=1, max_queued=0)) as ex:
        await ex.submit(gate.wait)
        waiting = asyncio.create_task(ex.submit(asyncio.sleep, 0, "ran"))
        await asyncio.sleep(0)
        assert not waiting.done()
        gate.set()
        assert await (await waiting) == "ran"


async def test_waiting_submitters_are_refused_at_shutdown() -> None:
    gate = asyncio.Event()
    ex = TaskExecutor(ExecutorConfig(max_concurrency=1, max_queued=0))
    await ex.submit(gate.wait)
    waiting = asyncio.create_task(ex.submit(gate.wait))
    await asyncio.sleep(0)
    closing = asyncio.create_task(ex.shutdown())
    with pytest.raises(ExecutorShutdown):
        await waiting
    gate.set()
    await closing


async def test_a_cancelled_waiting_submitter_passes_its_turn_on() -> None:
    gate = asyncio.Event()
    async with TaskExecutor(ExecutorConfig(max_concurrency=1, max_queued=1)) as ex:
        await ex.submit(gate.wait)
        await ex.submit(gate.wait)
        first = asyncio.create_task(ex.submit(asyncio.sleep, 0, 1))
        second = asyncio.create_task(ex.submit(asyncio.sleep, 0, 2))
        await asyncio.sleep(0)
        first.cancel()
        gate.set()
        assert await (await second) == 2
        with pytest.raises(asyncio.CancelledError):
            await first


async def test_shutdown_timeout_escalates_to_cancel() -> None:
    ex = TaskExecutor()
    handle = await ex.submit(_never)
    await ex.shutdown(timeout=0.001)
    assert handle.state is TaskState.CANCELLED
    assert ex.closing


async def test_leaving_the_block_with_an_error_cancels_everything() -> None:
    handles = []

    async def body() -> None:
        async with TaskExecutor() as ex:
            handles.append(await ex.submit(_never))
            raise KeyError("boom")

    with pytest.raises(KeyError):
        await body()
    assert handles[0].state is TaskState.CANCELLED


async def test_join_waits_for_idle_without_closing() -> None:
    async with TaskExecutor(ExecutorConfig(max_concurrency=2)) as ex:
        handles = [await ex.submit(asyncio.sleep, 0, i) for i in range(5)]
        await ex.join()
        assert all(h.done() for h in handles)
        assert not ex.closing
        await ex.join()  # idle already: returns at once


async def test_exception_before_done_is_an_invalid_state() -> None:
    async with TaskExecutor() as ex:
        handle = await ex.submit(asyncio.sleep, 0)
        with pytest.raises(asyncio.InvalidStateError):
            handle.exception()


def test_config_refuses_dropping_tasks() -> None:
    with pytest.raises(ValueError, match="never drops"):
        ExecutorConfig(when_full=Backpressure.DROP_OLDEST)
    with pytest.raises(ValueError, match="max_concurrency"):
        ExecutorConfig(max_concurrency=0)


async def test_immediate_shutdown_before_any_task_ran() -> None:
    ex = TaskExecutor(ExecutorConfig(max_concurrency=3))
    handles = [await ex.submit(_never) for _ in range(5)]  # 3 started, none stepped yet
    await ex.shutdown(cancel=True)
    assert all(h.state is TaskState.CANCELLED for h in handles)
    m = ex.metrics()
    assert (m.cancelled, m.running, m.queued) == (5, 0, 0)
