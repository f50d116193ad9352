"""The OTP rules, as pure functions: which children a strategy restarts, whether a
restart type restarts, restart intensity, and restart backoff.

Kept free of I/O so the rules are unit-tested exactly, without clocks or processes.
"""

from __future__ import annotations

import random
from collections import deque
from collections.abc import Iterable, Sequence
from typing import TypeVar

__all__ = ["RestartWindow", "affected", "backoff_delay", "should_restart"]

T = TypeVar("T")

STRATEGIES = ("one_for_one", "one_for_all", "rest_for_one")
RESTART_TYPES = ("permanent", "transient", "temporary")


def affected(strategy: str, order: Sequence[T], failed: T) -> list[T]:
    """The children to restart when `failed` fails, in start order.

    `order` is the group's start order. rest_for_one restarts the failed child and
    everything started after it: later children may depend on earlier ones, never
    the reverse, so the earlier ones keep running.
    """
    if strategy == "one_for_one":
        return [failed]
    if strategy == "one_for_all":
        return list(order)
    if strategy == "rest_for_one":
        return list(order[list(order).index(failed) :])
    raise ValueError(f"unknown strategy {strategy!r}")


def should_restart(restart: str, *, abnormal: bool) -> bool:
    """permanent: always; transient: only after an abnormal exit; temporary: never."""
    if restart == "permanent":
        return True
    if restart == "transient":
        return abnormal
    return False


def backoff_delay(
    level: int, *, minimum: float, maximum: float, jitter: float, rng: random.Random | None = None
) -> float:
    """The delay before the `level`-th consecutive restart (1-based): exponential from
    `minimum`, capped at `maximum`, stretched by up to `jitter` (a fraction) so a
    fleet of restarts does not hit the broker in lockstep."""
    if level <= 0:
        return 0.0
    base = min(maximum, minimum * (2.0 ** (level - 1)))
    spread = (rng or random).uniform(0.0, jitter) if jitter > 0 else 0.0
    return base * (1.0 + spread)


class RestartWindow:
    """OTP restart intensity: at most `intensity` restarts within `period` seconds.

    `allow(now)` records a restart and says whether it is within the intensity;
    the first restart over it is refused (and not recorded), which is when OTP
    gives up and escalates.
    """

    __slots__ = ("_times", "intensity", "period")

    def __init__(self, intensity: int, period: float) -> None:
        self.intensity = intensity
        self.period = period
        self._times: deque[float] = deque()

    def _prune(self, now: float) -> None:
        while self._times and now - self._times[0] > self.period:
            self._times.popleft()

    def count(self, now: float) -> int:
        self._prune(now)
        return len(self._times)

    def allow(self, now: float) -> bool:
        self._prune(now)
        if len(self._times) >= self.intensity:
            return False
        self._times.append(now)
        return True

    def restore(self, times: Iterable[float]) -> None:
        """Seed with earlier restarts (a restarted supervisor keeps counting)."""
        self._times = deque(sorted(times))

    def reset(self) -> None:
        self._times.clear()

    def times(self) -> list[float]:
        return list(self._times)
