"""RetryPolicy: one backoff schedule for the executor, `ask`, and redelivery.

Also what every retry loop needs around it: `retry()`, the one loop that applies
a policy (it never retries or swallows `asyncio.CancelledError`), and
`RetryBudget`, a token bucket shared by the loops that call one dependency so a
failing dependency is not met with a retry storm.

`RetryExhausted` and `BudgetExhausted` are defined here rather than in
`actormesh.patterns` because the core imports this module without the
`patterns` extra (aiolimiter, aiorwlock) installed; `actormesh.patterns`
re-exports them with its other errors.
"""

from __future__ import annotations

import asyncio
import math
import random
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from typing import Any, TypeVar

from ._errors import ActorMeshError, ConfigError

__all__ = ["BudgetExhausted", "RetryBudget", "RetryExhausted", "RetryPolicy", "retry"]

T = TypeVar("T")


@dataclass(frozen=True, kw_only=True, slots=True)
class RetryPolicy:
    """Exponential backoff with a cap and proportional jitter.

    `attempts` counts the first try: 3 means one try and two retries.
    The delay before retry n (1-based) is ``min(base * multiplier**(n-1), cap)``,
    then multiplied by ``1 + U(-jitter, +jitter)``.
    """

    attempts: int = 3
    base: float = 0.1
    multiplier: float = 2.0
    cap: float = 30.0
    jitter: float = 0.1
    #: Whether a timeout counts as a retryable failure.
    retry_on_timeout: bool = True

    def __post_init__(self) -> None:
        if self.attempts < 1:
            raise ConfigError("attempts must be >= 1 (it counts the first try)")
        if self.base < 0 or self.cap < 0 or self.multiplier < 1 or not 0 <= self.jitter <= 1:
            raise ConfigError("need base >= 0, cap >= 0, multiplier >= 1, 0 <= jitter <= 1")

    def delay(self, retry: int, *, rng: random.Random | None = None) -> float:
        """The delay before retry number `retry` (1 = the first retry)."""
        if retry < 1:
            raise ValueError("retry numbers start at 1")
        if self.base == 0 or self.cap == 0:
            raw = 0.0
        else:
            exponent = retry - 1
            if self.multiplier > 1:
                # Clamp the exponent: multiplier**n overflows a float long before
                # the cap stops mattering (a long-blocking caller asks for retry 2000).
                past_cap = math.ceil(math.log(max(self.cap / self.base, 1.0), self.multiplier))
                exponent = min(exponent, past_cap + 1)
            raw = min(self.base * self.multiplier**exponent, self.cap)
        if not self.jitter:
            return raw
        r = (rng or random).uniform(-self.jitter, self.jitter)
        return max(0.0, raw * (1.0 + r))

    def delays(self, *, rng: random.Random | None = None) -> Iterator[float]:
        """The delays between attempts: `attempts - 1` of them."""
        for n in range(1, self.attempts):
            yield self.delay(n, rng=rng)

    def should_retry(self, exc: BaseException) -> bool:
        """The default retry predicate.

        Only `Exception`s are retried (never `CancelledError`, `KeyboardInterrupt`
        or `SystemExit`); timeouts by `retry_on_timeout`; actormesh errors by
        their own `retryable`; anything else is assumed transient.
        """
        if not isinstance(exc, Exception):
            return False
        if isinstance(exc, TimeoutError):
            return self.retry_on_timeout
        if isinstance(exc, ActorMeshError):
            return exc.retryable
        return True


class RetryExhausted(ActorMeshError):
    """Every attempt failed; the last failure is `__cause__` (and `last_error`).

    Not retryable: this layer has spent its retries, and retrying it again from
    an outer layer multiplies the load on whatever is failing.
    """

    code = "retry_exhausted"

    def __init__(self, attempts: int, last_error: BaseException) -> None:
        super().__init__(
            f"gave up after {attempts} attempts; last error: "
            f"{type(last_error).__name__}: {last_error}"
        )
        self.attempts = attempts
        self.last_error = last_error

    def fields(self) -> dict[str, Any]:
        return {**super().fields(), "attempts": self.attempts}


class BudgetExhausted(ActorMeshError):
    """A retry was due but the shared retry budget had no token left.

    Not retryable for the same reason as `RetryExhausted`; `retry_after` says
    when the bucket will hold a token again.
    """

    code = "retry_budget_exhausted"

    def __init__(self, name: str, *, retry_after: float) -> None:
        super().__init__(
            f"retry budget {name!r} is empty (a token refills in {retry_after:.3f}s); "
            "the dependency is failing often enough that retries were shed"
        )
        self.name = name
        self.retry_after = retry_after

    def fields(self) -> dict[str, Any]:
        return {**super().fields(), "name": self.name, "retry_after": self.retry_after}


class RetryBudget:
    """A token bucket that caps retries (not first tries) across callers.

    Each retry spends one token; tokens refill continuously at `refill_rate`
    per second up to `capacity`. Share one budget between every loop that calls
    the same dependency. Not thread-safe: use it from one event loop.
    """

    __slots__ = ("_clock", "_stamp", "_tokens", "capacity", "name", "refill_rate")

    def __init__(
        self,
        capacity: float = 10.0,
        refill_rate: float = 1.0,
        *,
        name: str = "retry",
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if capacity < 1 or refill_rate < 0:
            raise ConfigError("need capacity >= 1 and refill_rate >= 0")
        self.name = name
        self.capacity = float(capacity)
        self.refill_rate = float(refill_rate)
        self._clock = clock
        self._tokens = self.capacity
        self._stamp = clock()

    def _refill(self) -> None:
        now = self._clock()
        elapsed = max(0.0, now - self._stamp)
        self._stamp = now
        self._tokens = min(self.capacity, self._tokens + elapsed * self.refill_rate)

    @property
    def available(self) -> float:
        """Tokens in the bucket now."""
        self._refill()
        return self._tokens

    def retry_after(self, tokens: float = 1.0) -> float:
        """Seconds until `tokens` are available (0 if they are now; inf if never)."""
        missing = tokens - self.available
        if missing <= 0:
            return 0.0
        return missing / self.refill_rate if self.refill_rate else math.inf

    def try_spend(self, tokens: float = 1.0) -> bool:
        """Take `tokens` if the bucket holds them; say whether it did."""
        self._refill()
        if self._tokens + 1e-12 < tokens:
            return False
        self._tokens = max(0.0, self._tokens - tokens)
        return True

    def spend(self, tokens: float = 1.0) -> None:
        """Take `tokens`, or raise `BudgetExhausted`."""
        if not self.try_spend(tokens):
            raise BudgetExhausted(self.name, retry_after=self.retry_after(tokens))


async def retry(
    fn: Callable[[], Awaitable[T]],
    policy: RetryPolicy | None = None,
    *,
    retry_if: Callable[[Exception], bool] | None = None,
    budget: RetryBudget | None = None,
    on_retry: Callable[[int, Exception, float], object] | None = None,
    sleep: Callable[[float], Awaitable[object]] = asyncio.sleep,
    rng: random.Random | None = None,
) -> T:
    """Await `fn()` until it succeeds, backing off between tries per `policy`.

    `fn` is called afresh for every attempt (a coroutine can be awaited once).
    A failure that `retry_if` (default: `policy.should_retry`) rejects is raised
    as is. When the attempts run out, `RetryExhausted` is raised from the last
    failure, unless the policy allows a single attempt, in which case nothing
    was retried and that failure is raised as is. With a `budget`, each retry
    spends a token; an empty budget raises `BudgetExhausted` from the failure.
    `on_retry(next_attempt, error, delay)` is called before each backoff sleep.

    `asyncio.CancelledError` (like every `BaseException` that is not an
    `Exception`) is never caught: a cancelled loop stops at once, mid-sleep
    or mid-attempt.
    """
    policy = policy or _DEFAULT
    should = retry_if or policy.should_retry
    attempt = 1
    while True:
        try:
            return await fn()
        except Exception as exc:
            if not should(exc):
                raise
            if attempt >= policy.attempts:
                if policy.attempts == 1:
                    raise
                raise RetryExhausted(attempt, exc) from exc
            if budget is not None and not budget.try_spend():
                raise BudgetExhausted(budget.name, retry_after=budget.retry_after()) from exc
            delay = policy.delay(attempt, rng=rng)
            if on_retry is not None:
                on_retry(attempt + 1, exc, delay)
        # Sleep outside the except block: the failure's traceback (and the
        # frames it pins) is released before we wait.
        await sleep(delay)
        attempt += 1


_DEFAULT = RetryPolicy()
