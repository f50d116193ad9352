"""RetryPolicy, RetryBudget and the retry() loop: no real sleeping, fake clocks."""

from __future__ import annotations

import asyncio
import random

import pytest
from hypothesis import given
from hypothesis import strategies as st

from actormesh._errors import BadMessage, HandlerError
from actormesh.patterns import (
    BudgetExhausted,
    RetryBudget,
    RetryExhausted,
    RetryPolicy,
    TaskTimeout,
    retry,
)


class FakeSleep:
    def __init__(self) -> None:
        self.delays: list[float] = []

    async def __call__(self, delay: float) -> None:
        self.delays.append(delay)


class Flaky:
    """Fails `failures` times with `error`, then returns "ok"."""

    def __init__(self, failures: int, error: Exception | None = None) -> None:
        self.failures = failures
        self.error = error or ConnectionError("down")
        self.calls = 0

    async def __call__(self) -> str:
        self.calls += 1
        if self.calls <= self.failures:
            raise self.error
        return "ok"


def test_defaults_match_the_design() -> None:
    p = RetryPolicy()
    assert (p.attempts, p.base, p.multiplier, p.cap, p.jitter) == (3, 0.1, 2.0, 30.0, 0.1)
    assert p.retry_on_timeout is True


@given(
    attempts=st.integers(1, 12),
    base=st.floats(0.001, 5),
    multiplier=st.floats(1, 4),
    cap=st.floats(0.001, 60),
    jitter=st.floats(0, 1),
    seed=st.integers(0, 2**32),
)
def test_delays_are_capped_exponentials_within_jitter(
    attempts: int, base: float, multiplier: float, cap: float, jitter: float, seed: int
) -> None:
    p = RetryPolicy(attempts=attempts, base=base, multiplier=multiplier, cap=cap, jitter=jitter)
    delays = list(p.delays(rng=random.Random(seed)))
    assert len(delays) == attempts - 1
    for n, d in enumerate(delays, start=1):
        raw = min(base * multiplier ** (n - 1), cap)
        assert raw * (1 - jitter) - 1e-9 <= d <= raw * (1 + jitter) + 1e-9


def test_delay_of_a_huge_retry_number_is_the_cap_not_an_overflow() -> None:
    p = RetryPolicy(jitter=0, cap=5.0)
    assert p.delay(5000) == 5.0
    assert RetryPolicy(jitter=0, base=0).delay(5000) == 0.0


def test_invalid_policies_are_refused() -> None:
    with pytest.raises(ValueError, match="attempts"):
        RetryPolicy(attempts=0)
    with pytest.raises(ValueError, match="multiplier"):
        RetryPolicy(multiplier=0.5)


def test_should_retry_follows_retryable_and_timeouts() -> None:
    on = RetryPolicy()
    off = RetryPolicy(retry_on_timeout=False)
    assert on.should_retry(ConnectionError())
    assert on.should_retry(HandlerError("busy", retryable=True))
    assert not on.should_retry(BadMessage("garbage"))
    assert on.should_retry(TimeoutError()) and not off.should_retry(TimeoutError())
    assert on.should_retry(TaskTimeout(1.0)) and not off.should_retry(TaskTimeout(1.0))
    assert not on.should_retry(asyncio.CancelledError())
    assert not on.should_retry(KeyboardInterrupt())


async def test_retry_succeeds_after_transient_failures() -> None:
    sleep = FakeSleep()
    fn = Flaky(2)
    seen: list[tuple[int, float]] = []
    result = await retry(
        fn,
        RetryPolicy(attempts=3, jitter=0),
        sleep=sleep,
        on_retry=lambda n, exc, d: seen.append((n, d)),
    )
    assert result == "ok"
    assert fn.calls == 3
    assert sleep.delays == [0.1, 0.2]
    assert seen == [(2, 0.1), (3, 0.2)]


async def test_retry_exhausted_carries_attempts_and_the_last_error() -> None:
    fn = Flaky(10)
    with pytest.raises(RetryExhausted) as info:
        await retry(fn, RetryPolicy(attempts=4), sleep=FakeSleep())
    assert info.value.attempts == 4
    assert info.value.__cause__ is fn.error
    assert info.value.last_error is fn.error
    assert info.value.retryable is False
    assert fn.calls == 4


async def test_a_single_attempt_policy_raises_the_error_itself() -> None:
    fn = Flaky(1)
    with pytest.raises(ConnectionError):
        await retry(fn, RetryPolicy(attempts=1), sleep=FakeSleep())


async def test_non_retryable_errors_are_raised_at_once() -> None:
    fn = Flaky(5, BadMessage("bad"))
    with pytest.raises(BadMessage):
        await retry(fn, RetryPolicy(attempts=5), sleep=FakeSleep())
    assert fn.calls == 1


async def test_timeouts_are_retried_only_if_the_policy_says_so() -> None:
    fn = Flaky(5, TaskTimeout(0.5))
    with pytest.raises(TaskTimeout):
        await retry(fn, RetryPolicy(attempts=5, retry_on_timeout=False), sleep=FakeSleep())
    assert fn.calls == 1
    fn = Flaky(2, TaskTimeout(0.5))
    assert await retry(fn, RetryPolicy(attempts=5), sleep=FakeSleep()) == "ok"


async def test_custom_predicate() -> None:
    fn = Flaky(3, KeyError("k"))
    with pytest.raises(KeyError):
        await retry(fn, RetryPolicy(attempts=5), retry_if=lambda e: False, sleep=FakeSleep())
    assert fn.calls == 1


async def test_cancellation_during_an_attempt_is_never_retried() -> None:
    calls = 0
    started = asyncio.Event()

    async def hang() -> None:
        nonlocal calls
        calls += 1
        started.set()
        await asyncio.Event().wait()

    task = asyncio.create_task(retry(hang, RetryPolicy(attempts=5), sleep=FakeSleep()))
    await started.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert calls == 1


async def test_cancellation_during_backoff_stops_the_loop() -> None:
    fn = Flaky(10)
    sleeping = asyncio.Event()

    async def sleep_forever(delay: float) -> None:
        sleeping.set()
        await asyncio.Event().wait()

    task = asyncio.create_task(retry(fn, RetryPolicy(attempts=5), sleep=sleep_forever))
    await sleeping.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert fn.calls == 1


async def test_cancelled_error_raised_by_the_function_propagates() -> None:
    async def cancelled() -> None:
        raise asyncio.CancelledError

    with pytest.raises(asyncio.CancelledError):
        await retry(cancelled, RetryPolicy(attempts=5), sleep=FakeSleep())


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_budget_spends_and_refills_over_time() -> None:
    clock = FakeClock()
    budget = RetryBudget(capacity=2, refill_rate=0.5, clock=clock)
    assert budget.try_spend() and budget.try_spend()
    assert not budget.try_spend()
    with pytest.raises(BudgetExhausted) as info:
        budget.spend()
    assert info.value.retry_after == pytest.approx(2.0)
    clock.now += 2.0
    assert budget.try_spend()
    clock.now += 100
    assert budget.available == 2.0


async def test_an_empty_budget_stops_retries_with_budget_exhausted() -> None:
    clock = FakeClock()
    budget = RetryBudget(capacity=1, refill_rate=0, clock=clock, name="db")
    first, second = Flaky(10), Flaky(10)
    with pytest.raises(RetryExhausted):
        await retry(first, RetryPolicy(attempts=2), budget=budget, sleep=FakeSleep())
    with pytest.raises(BudgetExhausted) as info:
        await retry(second, RetryPolicy(attempts=5), budget=budget, sleep=FakeSleep())
    assert second.calls == 1
    assert info.value.name == "db"
    assert info.value.__cause__ is second.error
