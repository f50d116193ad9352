"""Circuit breaker: stop calling a dependency that keeps failing, then probe it.

Our own rather than a library's: it must take an injected clock (so tests and
simulations need no sleeps), report state changes to the mesh's metrics and
events, count `CancelledError` as neither success nor failure, and expose a
synchronous permit API that the executor and stream stages use directly.

All state changes happen synchronously between awaits, on one event loop, so
no lock is needed (and none is ever held across an await).
"""

from __future__ import annotations

import enum
import logging
import time
from collections.abc import Awaitable, Callable
from contextvars import ContextVar
from dataclasses import dataclass
from types import TracebackType
from typing import TypeVar, TypeVarTuple

from .._errors import ConfigError
from ._errors import CircuitOpen

__all__ = ["BreakerConfig", "BreakerMetrics", "BreakerPermit", "CircuitBreaker", "CircuitState"]

T = TypeVar("T")
Ts = TypeVarTuple("Ts")

_log = logging.getLogger("actormesh.patterns")


class CircuitState(enum.Enum):
    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"


def _every_exception(exc: BaseException) -> bool:
    return True


@dataclass(frozen=True, kw_only=True, slots=True)
class BreakerConfig:
    """When a breaker opens and how it recovers (by default: after 5 failures, for 30 s)."""

    #: Consecutive failures (while closed) that open the circuit.
    failure_threshold: int = 5
    #: Seconds the circuit stays open before letting probes through.
    open_duration: float = 30.0
    #: Probe calls admitted when half-open; all must succeed to close again.
    half_open_probes: int = 1
    #: Which exceptions count as failures. The others count as successes: the
    #: dependency answered, the caller's input was wrong (e.g. a validation error).
    is_failure: Callable[[BaseException], bool] = _every_exception

    def __post_init__(self) -> None:
        if self.failure_threshold < 1 or self.half_open_probes < 1 or self.open_duration < 0:
            raise ConfigError(
                "need failure_threshold, half_open_probes >= 1 and open_duration >= 0"
            )


@dataclass(frozen=True, slots=True)
class BreakerMetrics:
    """A snapshot of a breaker's counters."""

    name: str
    state: CircuitState
    successes: int
    failures: int
    #: Calls refused with `CircuitOpen`.
    rejections: int
    #: Transitions into OPEN (from closed or half-open).
    trips: int
    consecutive_failures: int


class BreakerPermit:
    """One admitted call. Record its outcome exactly once; later records are ignored."""

    __slots__ = ("_breaker", "_done", "_epoch", "_probe")

    def __init__(self, breaker: CircuitBreaker, epoch: int, probe: bool) -> None:
        self._breaker = breaker
        self._epoch = epoch
        self._probe = probe
        self._done = False

    def record(self, error: BaseException | None = None) -> bool:
        """Report the call's outcome: None for success, else what it raised.

        `CancelledError` (any `BaseException` that is not an `Exception`) is
        neutral. Returns True if this outcome opened the circuit.
        """
        if self._done:
            return False
        self._done = True
        return self._breaker._record(self, error)


# The permits taken by `async with breaker:` in the current task, innermost last.
# A tuple (never mutated) so a child task that inherits the context cannot
# disturb its parent's stack.
_HELD: ContextVar[tuple[tuple[CircuitBreaker, BreakerPermit], ...]] = ContextVar(
    "actormesh_breaker_permits", default=()
)

Listener = Callable[["CircuitBreaker", CircuitState, CircuitState], object]


class CircuitBreaker:
    """Closed → (threshold consecutive failures) → open → (open_duration) →
    half-open → (all probes succeed) → closed, or (a probe fails) → open.

    Use as ``async with breaker:``, ``await breaker.call(fn, *args)``, or with
    `admit()` and `BreakerPermit.record()` where a context manager does not fit.
    `clock` returns monotonic seconds; inject a fake one to test without sleeping.
    The OPEN → HALF_OPEN change is observed lazily, on the next call or read
    of `state`. Outcomes of calls admitted before the last state change are
    counted in the metrics but do not move the state machine.
    """

    def __init__(
        self,
        name: str = "breaker",
        config: BreakerConfig | None = None,
        *,
        clock: Callable[[], float] = time.monotonic,
        on_state_change: Listener | None = None,
    ) -> None:
        self.name = name
        self.config = config or BreakerConfig()
        self._clock = clock
        self._listeners: list[Listener] = [on_state_change] if on_state_change else []
        self._state = CircuitState.CLOSED
        # Bumped on every transition; a permit from an older epoch is stale.
        self._epoch = 0
        self._consecutive = 0
        self._opened_at = 0.0
        self._probes_admitted = 0
        self._probe_successes = 0
        self._successes = 0
        self._failures = 0
        self._rejections = 0
        self._trips = 0

    def __repr__(self) -> str:
        return f"<CircuitBreaker {self.name!r} {self.state.value}>"

    @property
    def state(self) -> CircuitState:
        self._refresh()
        return self._state

    @property
    def retry_after(self) -> float:
        """Seconds until an open circuit admits a probe (0 unless open)."""
        self._refresh()
        if self._state is not CircuitState.OPEN:
            return 0.0
        return max(0.0, self._opened_at + self.config.open_duration - self._clock())

    def add_listener(self, listener: Listener) -> None:
        """Call `listener(breaker, old, new)` on every state change."""
        self._listeners.append(listener)

    def remove_listener(self, listener: Listener) -> None:
        self._listeners.remove(listener)

    def metrics(self) -> BreakerMetrics:
        return BreakerMetrics(
            name=self.name,
            state=self.state,
            successes=self._successes,
            failures=self._failures,
            rejections=self._rejections,
            trips=self._trips,
            consecutive_failures=self._consecutive,
        )

    def reset(self) -> None:
        """Force the circuit closed (an operator override)."""
        if self._state is CircuitState.CLOSED:
            self._consecutive = 0
        else:
            self._transition(CircuitState.CLOSED)

    def admit(self) -> BreakerPermit:
        """Admit one call, or raise `CircuitOpen`."""
        self._refresh()
        state = self._state
        if state is CircuitState.CLOSED:
            return BreakerPermit(self, self._epoch, False)
        if state is CircuitState.HALF_OPEN and self._probes_admitted < self.config.half_open_probes:
            self._probes_admitted += 1
            return BreakerPermit(self, self._epoch, True)
        self._rejections += 1
        raise CircuitOpen(self.name, retry_after=self.retry_after)

    async def call(self, fn: Callable[[*Ts], Awaitable[T]], *args: *Ts) -> T:
        """Await `fn(*args)` through the breaker."""
        permit = self.admit()
        try:
            result = await fn(*args)
        except BaseException as exc:
            permit.record(exc)
            raise
        permit.record(None)
        return result

    async def __aenter__(self) -> CircuitBreaker:
        permit = self.admit()
        _HELD.set((*_HELD.get(), (self, permit)))
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        held = _HELD.get()
        for i in range(len(held) - 1, -1, -1):
            if held[i][0] is self:
                permit = held[i][1]
                _HELD.set(held[:i] + held[i + 1 :])
                break
        else:
            raise RuntimeError(f"{self!r}: __aexit__ without a matching __aenter__ in this task")
        permit.record(exc)

    # -- the state machine -------------------------------------------------

    def _refresh(self) -> None:
        if (
            self._state is CircuitState.OPEN
            and self._clock() >= self._opened_at + self.config.open_duration
        ):
            self._transition(CircuitState.HALF_OPEN)

    def _record(self, permit: BreakerPermit, error: BaseException | None) -> bool:
        if error is not None and not isinstance(error, Exception):
            # Cancelled (or interpreter exit): says nothing about the callee,
            # but a probe slot it held must be given back.
            if permit._probe and permit._epoch == self._epoch:
                self._probes_admitted -= 1
            return False
        failed = error is not None and self.config.is_failure(error)
        if failed:
            self._failures += 1
        else:
            self._successes += 1
        self._refresh()
        if permit._epoch != self._epoch:
            return False
        if self._state is CircuitState.CLOSED:
            if not failed:
                self._consecutive = 0
                return False
            self._consecutive += 1
            if self._consecutive >= self.config.failure_threshold:
                self._transition(CircuitState.OPEN)
                return True
            return False
        # Only probes carry the current epoch while half-open.
        if failed:
            self._transition(CircuitState.OPEN)
            return True
        self._probe_successes += 1
        if self._probe_successes >= self.config.half_open_probes:
            self._transition(CircuitState.CLOSED)
        return False

    def _transition(self, new: CircuitState) -> None:
        old = self._state
        self._epoch += 1
        self._state = new
        self._probes_admitted = 0
        self._probe_successes = 0
        if new is CircuitState.OPEN:
            self._opened_at = self._clock()
            self._trips += 1
        elif new is CircuitState.CLOSED:
            self._consecutive = 0
        if old is new:
            return
        for listener in tuple(self._listeners):
            try:
                listener(self, old, new)
            except Exception:
                # A broken metrics hook must not break the calls it observes.
                _log.exception("circuit %r: state-change listener failed", self.name)
