"""The per-handler policy declaration and run_with_policy."""

from __future__ import annotations

import asyncio
import dataclasses

import pytest

from actormesh._errors import BadMessage
from actormesh.patterns import (
    BreakerConfig,
    CircuitBreaker,
    CircuitOpen,
    CircuitState,
    HandlerPolicy,
    RetryExhausted,
    RetryPolicy,
    TaskTimeout,
    policy,
    policy_of,
    run_with_policy,
)

FAST = RetryPolicy(attempts=3, base=0.0, jitter=0.0)


def test_the_decorator_attaches_a_frozen_policy_and_returns_the_function() -> None:
    async def handler(x: int) -> int:
        return x

    decorated = policy(timeout=2.0, retry=FAST)(handler)
    assert decorated is handler
    declared = policy_of(handler)
    assert declared == HandlerPolicy(timeout=2.0, retry=FAST)
    assert getattr(handler, "__actormesh_policy__") is declared  # noqa: B009 - the contract
    with pytest.raises(dataclasses.FrozenInstanceError):
        declared.timeout = 3.0


def test_a_breaker_config_gives_each_handler_its_own_breaker() -> None:
    declare = policy(breaker=BreakerConfig(failure_threshold=2))

    class Actor:
        @declare
        async def one(self) -> None: ...

        @declare
        async def two(self) -> None: ...

    first, second = policy_of(Actor().one), policy_of(Actor.two)
    assert first is not None and second is not None
    assert first.breaker is not None and second.breaker is not None
    assert first.breaker is not second.breaker
    assert first.breaker.name.endswith("Actor.one")
    assert first.breaker.config.failure_threshold == 2


def test_a_shared_breaker_is_shared() -> None:
    shared = CircuitBreaker("db")

    @policy(breaker=shared)
    async def a() -> None: ...

    @policy(breaker=shared)
    async def b() -> None: ...

    assert policy_of(a).breaker is policy_of(b).breaker is shared  # type: ignore[union-attr]


def test_undecorated_and_invalid() -> None:
    async def plain() -> None: ...

    assert policy_of(plain) is None
    with pytest.raises(ValueError, match="timeout"):
        HandlerPolicy(timeout=0)


async def test_no_policy_is_a_plain_call() -> None:
    async def add(a: int, b: int) -> int:
        return a + b

    assert await run_with_policy(None, add, 1, 2) == 3
    assert await run_with_policy(HandlerPolicy(), add, 1, 2) == 3


async def test_timeout_per_attempt_and_retry() -> None:
    attempts = 0

    async def slow_then_fast() -> str:
        nonlocal attempts
        attempts += 1
        if attempts == 1:
            await asyncio.Event().wait()
        return "done"

    assert await run_with_policy(HandlerPolicy(timeout=0.001, retry=FAST), slow_then_fast) == "done"
    assert attempts == 2


async def test_timeout_without_retry_raises_task_timeout() -> None:
    async def hang() -> None:
        await asyncio.Event().wait()

    with pytest.raises(TaskTimeout) as info:
        await run_with_policy(HandlerPolicy(timeout=0.001), hang)
    assert info.value.timeout == 0.001
    assert isinstance(info.value, TimeoutError)


async def test_retries_exhausted() -> None:
    async def down() -> None:
        raise ConnectionError("refused")

    with pytest.raises(RetryExhausted) as info:
        await run_with_policy(HandlerPolicy(retry=FAST), down)
    assert info.value.attempts == 3
    assert isinstance(info.value.__cause__, ConnectionError)


async def test_non_retryable_errors_are_not_retried() -> None:
    calls = 0

    async def reject() -> None:
        nonlocal calls
        calls += 1
        raise BadMessage("no")

    with pytest.raises(BadMessage):
        await run_with_policy(HandlerPolicy(retry=FAST), reject)
    assert calls == 1


async def test_each_attempt_goes_through_the_breaker_and_open_is_not_retried() -> None:
    breaker = CircuitBreaker("dep", BreakerConfig(failure_threshold=2))
    calls = 0

    async def down() -> None:
        nonlocal calls
        calls += 1
        raise ConnectionError

    with pytest.raises(CircuitOpen):
        await run_with_policy(
            HandlerPolicy(retry=RetryPolicy(attempts=5, base=0, jitter=0), breaker=breaker), down
        )
    assert calls == 2
    assert breaker.state is CircuitState.OPEN
    m = breaker.metrics()
    assert (m.failures, m.rejections) == (2, 1)


async def test_a_timeout_counts_as_a_breaker_failure() -> None:
    breaker = CircuitBreaker("slow", BreakerConfig(failure_threshold=1))

    async def hang() -> None:
        await asyncio.Event().wait()

    with pytest.raises(TaskTimeout):
        await run_with_policy(HandlerPolicy(timeout=0.001, breaker=breaker), hang)
    assert breaker.state is CircuitState.OPEN


async def test_cancellation_propagates_and_is_neither_retried_nor_a_failure() -> None:
    breaker = CircuitBreaker("c", BreakerConfig(failure_threshold=1))
    calls = 0
    entered = asyncio.Event()

    async def hang() -> None:
        nonlocal calls
        calls += 1
        entered.set()
        await asyncio.Event().wait()

    task = asyncio.create_task(
        run_with_policy(HandlerPolicy(timeout=60, retry=FAST, breaker=breaker), hang)
    )
    await entered.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert calls == 1
    assert breaker.state is CircuitState.CLOSED
