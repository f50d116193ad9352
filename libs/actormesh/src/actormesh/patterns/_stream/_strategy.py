"""Per-stage error strategies: what a map, filter or sink does when its function raises.

STOP is the fast path (no guard: the error becomes `StageFailed`); the other
strategies run the function through a `Guard`. Either way an item whose
function failed, or that was cancelled mid-call, is nacked here: it is the
stage's until it is yielded.
"""

from __future__ import annotations

import asyncio
import enum
import inspect
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ..._errors import ConfigError
from ..._retry import RetryPolicy
from ..._retry import retry as _retry_loop
from .._breaker import CircuitBreaker
from .._errors import CircuitOpen, StageFailed
from ._acks import Acks, settle
from ._metrics import Stats

__all__ = [
    "SKIP",
    "ErrorStrategy",
    "Guard",
    "OnError",
    "Skip",
    "StageCall",
    "apply",
    "guard_for",
    "is_async",
]

_log = logging.getLogger("actormesh.patterns")


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
    #: For RETRY; None means `RetryPolicy()` (3 attempts, 100 ms base, x2, 30 s cap).
    retry: RetryPolicy | None = None
    #: For CIRCUIT_BREAKER; None gives the stage a breaker of its own with default settings.
    breaker: CircuitBreaker | None = None
    #: For RETRY: STOP or LOG_AND_CONTINUE once the retries ran out.
    exhausted: ErrorStrategy = ErrorStrategy.STOP

    def __post_init__(self) -> None:
        if self.exhausted not in (ErrorStrategy.STOP, ErrorStrategy.LOG_AND_CONTINUE):
            raise ConfigError("exhausted must be STOP or LOG_AND_CONTINUE")


class Skip(enum.Enum):
    """A guarded call's result when the strategy dropped the item."""

    SKIP = 0


SKIP = Skip.SKIP


def is_async(fn: object) -> bool:
    """Whether calling `fn` gives an awaitable: `async def`, or an object with one as `__call__`."""
    return inspect.iscoroutinefunction(fn) or inspect.iscoroutinefunction(
        getattr(fn, "__call__", None)  # noqa: B004 - async callable objects
    )


class Guard:
    """Runs a stage function under a non-STOP error strategy."""

    __slots__ = ("_breaker", "_fn", "_is_async", "_on_error", "_retry", "_stats")

    def __init__(
        self, fn: Callable[[Any], Any], is_async: bool, on_error: OnError, stats: Stats
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

    def _give_up(self, exc: Exception, strategy: ErrorStrategy) -> Skip:
        self._stats.errors += 1
        if strategy is ErrorStrategy.STOP:
            raise StageFailed(self._stats.name, exc) from exc
        _log.warning("stream stage %r: item failed, skipped", self._stats.name, exc_info=exc)
        return SKIP

    def _count_retry(self, attempt: int, exc: Exception, delay: float) -> None:
        self._stats.retries += 1

    async def call(self, value: Any) -> Any:
        """`fn(value)` under the strategy; `SKIP` when the item is given up."""
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
        return await self._through_breaker(value)

    async def _through_breaker(self, value: Any) -> Any:
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


def guard_for(
    fn: Callable[[Any], Any], is_async: bool, on_error: ErrorStrategy | OnError, stats: Stats
) -> Guard | None:
    """The guard `fn` runs under, or None for STOP (called bare, the fast path)."""
    spec = on_error if isinstance(on_error, OnError) else OnError(strategy=on_error)
    if spec.strategy is ErrorStrategy.STOP:
        return None
    return Guard(fn, is_async, spec, stats)


class StageCall:
    """A map or filter stage's function, ready to call on items: how, and under what guard."""

    __slots__ = ("fn", "guard", "is_async")

    def __init__(
        self, fn: Callable[[Any], Any], on_error: ErrorStrategy | OnError, stats: Stats
    ) -> None:
        self.fn = fn
        self.is_async = is_async(fn)
        self.guard = guard_for(fn, self.is_async, on_error, stats)


async def apply(call: StageCall, value: Any, acks: Acks, stats: Stats) -> Any:
    """`fn(value)` for a map or filter stage; `SKIP` when the error strategy drops it.

    The item is ours until yielded: it is nak'ed whether we failed or were cancelled.
    """
    guard = call.guard
    if guard is None:
        try:
            return (await call.fn(value)) if call.is_async else call.fn(value)
        except BaseException as exc:
            if acks:
                await settle(acks, False, stats)
            if not isinstance(exc, Exception):
                raise
            stats.errors += 1
            raise StageFailed(stats.name, exc) from exc
    try:
        out = await guard.call(value)
    except BaseException:
        if acks:
            await settle(acks, False, stats)
        raise
    if out is SKIP and acks:
        await settle(acks, False, stats)
    return out
