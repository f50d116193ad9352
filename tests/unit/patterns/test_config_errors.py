"""A bad configuration value in patterns raises `ConfigError` (still a `ValueError`)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest

from actormesh import ConfigError
from actormesh.patterns import (
    Backpressure,
    BreakerConfig,
    Bulkhead,
    CountdownLatch,
    ErrorStrategy,
    ExecutorConfig,
    OnError,
    PoolConfig,
    RateLimiter,
    Stream,
)


async def _nothing() -> AsyncIterator[int]:
    return
    yield


def _stream() -> Stream[int]:
    return Stream(_nothing())


async def _sink(item: object) -> None:
    pass


BAD: dict[str, Callable[[], Any]] = {
    "breaker threshold": lambda: BreakerConfig(failure_threshold=0),
    "executor concurrency": lambda: ExecutorConfig(max_concurrency=0),
    "executor drops": lambda: ExecutorConfig(when_full=Backpressure.DROP_NEWEST),
    "pool size": lambda: PoolConfig(max_size=0),
    "rate": lambda: RateLimiter(0),
    "bulkhead size": lambda: Bulkhead(0),
    "latch count": lambda: CountdownLatch(-1),
    "on_error exhausted": lambda: OnError(
        strategy=ErrorStrategy.RETRY, exhausted=ErrorStrategy.RETRY
    ),
    "batch size": lambda: _stream().batch(0),
    "window both": lambda: _stream().window(count=1, duration=1.0),
    "window neither": lambda: _stream().window(),
    "buffer size": lambda: _stream().buffer(0),
    "stream rate": lambda: _stream().rate_limit(0),
    "merge capacity": lambda: _stream().merge(capacity=0),
    "two stages one name": lambda: _stream().map(str, name="x").map(str, name="x").to(_sink),
}


@pytest.mark.parametrize("make", BAD.values(), ids=BAD.keys())
def test_a_bad_value_is_a_config_error(make: Callable[[], Any]) -> None:
    with pytest.raises(ConfigError) as caught:
        make()
    assert isinstance(caught.value, ValueError)
    assert caught.value.code == "config_error"
