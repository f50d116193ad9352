"""Rate limiting (a thin layer over aiolimiter) and bulkheads (our own, on asyncio.Semaphore).

`RateLimiter` wraps `aiolimiter.AsyncLimiter`, a small, well-kept leaky bucket
that wakes waiters in order and handles their cancellation; we add only a
typed timeout (`RateLimited`), a name and counters.

`Bulkhead` is an `asyncio.Semaphore` with what a semaphore lacks for isolating
a dependency: a bounded wait (`BulkheadFull` instead of queueing forever), a
bounded waiting room, and counters. No library does this without dragging in
a framework, and it is a dozen lines over the stdlib.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from types import TracebackType
from typing import TypeVar, TypeVarTuple

from aiolimiter import AsyncLimiter

from .._errors import ConfigError
from ._deadline import DeadlineExpired, within
from ._errors import BulkheadFull, RateLimited

__all__ = ["Bulkhead", "BulkheadMetrics", "RateLimiter", "RateLimiterMetrics"]

T = TypeVar("T")
Ts = TypeVarTuple("Ts")


@dataclass(frozen=True, slots=True)
class RateLimiterMetrics:
    name: str
    #: Acquisitions granted.
    acquired: int
    #: Acquisitions that had to wait for capacity.
    delayed: int
    #: Acquisitions abandoned at their timeout (`RateLimited`).
    rejected: int


class RateLimiter:
    """At most `rate` acquisitions per `per` seconds, allowing bursts of up to `rate`.

    ``async with limiter:`` or ``await limiter.acquire(timeout=...)``. Create one
    per event loop (aiolimiter binds to the loop that first uses it).
    """

    __slots__ = ("_acquired", "_delayed", "_limiter", "_rejected", "name", "per", "rate")

    def __init__(self, rate: float, per: float = 1.0, *, name: str = "rate_limiter") -> None:
        if rate <= 0 or per <= 0:
            raise ConfigError("need rate > 0 and per > 0")
        self.name = name
        self.rate = rate
        self.per = per
        self._limiter = AsyncLimiter(rate, per)
        self._acquired = 0
        self._delayed = 0
        self._rejected = 0

    def __repr__(self) -> str:
        return f"<RateLimiter {self.name!r} {self.rate:g}/{self.per:g}s>"

    def has_capacity(self, amount: float = 1.0) -> bool:
        """Whether `acquire(amount)` would return without waiting now."""
        return self._limiter.has_capacity(amount)

    async def acquire(self, amount: float = 1.0, *, timeout: float | None = None) -> None:
        """Wait for `amount` of capacity; past `timeout` seconds raise `RateLimited`.

        ``timeout=0`` takes capacity only if it is there now.
        """
        if not self._limiter.has_capacity(amount):
            self._delayed += 1
            if timeout is not None and timeout <= 0:
                self._rejected += 1
                raise RateLimited(self.name, rate=self.rate, per=self.per, timeout=0.0)
        try:
            await within(timeout, self._limiter.acquire(amount))
        except DeadlineExpired as expired:
            self._rejected += 1
            raise RateLimited(
                self.name, rate=self.rate, per=self.per, timeout=expired.timeout
            ) from None
        self._acquired += 1

    async def __aenter__(self) -> None:
        await self.acquire()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        return None

    def metrics(self) -> RateLimiterMetrics:
        return RateLimiterMetrics(
            name=self.name, acquired=self._acquired, delayed=self._delayed, rejected=self._rejected
        )


@dataclass(frozen=True, slots=True)
class BulkheadMetrics:
    name: str
    #: Calls inside the bulkhead now.
    active: int
    #: Calls waiting for a slot now.
    waiting: int
    admitted: int
    #: Calls refused with `BulkheadFull`.
    rejected: int


class Bulkhead:
    """At most `max_concurrent` calls at once; wait at most `max_wait` for a slot.

    `max_wait=None` waits as long as it takes, `0` never waits. `max_waiting`
    bounds how many callers may wait at once (the rest are refused at once),
    so a stalled dependency cannot pile up unbounded waiters.
    """

    __slots__ = (
        "_active",
        "_admitted",
        "_rejected",
        "_sem",
        "_waiting",
        "max_concurrent",
        "max_wait",
        "max_waiting",
        "name",
    )

    def __init__(
        self,
        max_concurrent: int,
        *,
        max_wait: float | None = None,
        max_waiting: int | None = None,
        name: str = "bulkhead",
    ) -> None:
        if max_concurrent < 1:
            raise ConfigError("max_concurrent must be >= 1")
        if max_wait is not None and max_wait < 0:
            raise ConfigError("max_wait must be >= 0 (or None to wait forever)")
        if max_waiting is not None and max_waiting < 0:
            raise ConfigError("max_waiting must be >= 0")
        self.name = name
        self.max_concurrent = max_concurrent
        self.max_wait = max_wait
        self.max_waiting = max_waiting
        self._sem = asyncio.Semaphore(max_concurrent)
        self._active = 0
        self._waiting = 0
        self._admitted = 0
        self._rejected = 0

    def __repr__(self) -> str:
        return f"<Bulkhead {self.name!r} {self._active}/{self.max_concurrent}>"

    def _refuse(self, waited: float) -> BulkheadFull:
        self._rejected += 1
        return BulkheadFull(self.name, max_concurrent=self.max_concurrent, waited=waited)

    async def acquire(self) -> None:
        """Take a slot or raise `BulkheadFull`. Pair with `release()`."""
        if self._sem.locked():
            if self.max_wait == 0:
                raise self._refuse(0.0)
            if self.max_waiting is not None and self._waiting >= self.max_waiting:
                raise self._refuse(0.0)
        self._waiting += 1
        try:
            await within(self.max_wait, self._sem.acquire())
        except DeadlineExpired as expired:
            raise self._refuse(expired.timeout) from None
        finally:
            self._waiting -= 1
        self._active += 1
        self._admitted += 1

    def release(self) -> None:
        self._active -= 1
        self._sem.release()

    async def call(self, fn: Callable[[*Ts], Awaitable[T]], *args: *Ts) -> T:
        """Await `fn(*args)` inside the bulkhead."""
        await self.acquire()
        try:
            return await fn(*args)
        finally:
            self.release()

    async def __aenter__(self) -> None:
        await self.acquire()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.release()

    def metrics(self) -> BulkheadMetrics:
        return BulkheadMetrics(
            name=self.name,
            active=self._active,
            waiting=self._waiting,
            admitted=self._admitted,
            rejected=self._rejected,
        )
