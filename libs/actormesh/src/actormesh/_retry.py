"""RetryPolicy: one backoff schedule for the executor, `ask`, and redelivery."""

from __future__ import annotations

import random
from collections.abc import Iterator
from dataclasses import dataclass

__all__ = ["RetryPolicy"]


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
            raise ValueError("attempts must be >= 1 (it counts the first try)")
        if self.base < 0 or self.cap < 0 or self.multiplier < 1 or not 0 <= self.jitter <= 1:
            raise ValueError("need base >= 0, cap >= 0, multiplier >= 1, 0 <= jitter <= 1")

    def delay(self, retry: int, *, rng: random.Random | None = None) -> float:
        """The delay before retry number `retry` (1 = the first retry)."""
        if retry < 1:
            raise ValueError("retry numbers start at 1")
        raw = min(self.base * self.multiplier ** (retry - 1), self.cap)
        if not self.jitter:
            return raw
        r = (rng or random).uniform(-self.jitter, self.jitter)
        return max(0.0, raw * (1.0 + r))

    def delays(self, *, rng: random.Random | None = None) -> Iterator[float]:
        """The delays between attempts: `attempts - 1` of them."""
        for n in range(1, self.attempts):
            yield self.delay(n, rng=rng)
