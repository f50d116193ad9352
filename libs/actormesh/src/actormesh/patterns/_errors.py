"""The errors of the in-process patterns, all under `ActorMeshError`.

Each carries the fields a caller needs to act (which breaker, when to retry,
which lock) and says whether retrying later can help (`retryable`). Timeouts
also subclass the builtin `TimeoutError`, so ``except TimeoutError`` (what
`asyncio.timeout` raises) catches them too.

`RetryExhausted` and `BudgetExhausted` live in `actormesh._retry` (the core
imports that module without this package's dependencies) and are re-exported.
"""

from __future__ import annotations

from typing import Any

from .._errors import ActorMeshError
from .._retry import BudgetExhausted, RetryExhausted

__all__ = [
    "BackpressureError",
    "BudgetExhausted",
    "BulkheadFull",
    "CircuitOpen",
    "ExecutorShutdown",
    "LockOrderViolation",
    "LockTimeout",
    "PoolClosed",
    "PoolExhausted",
    "QueueFull",
    "RateLimited",
    "RetryExhausted",
    "StageFailed",
    "TaskCancelled",
    "TaskTimeout",
]


class TaskTimeout(ActorMeshError, TimeoutError):
    """One attempt of a task (or a policy-wrapped call) ran past its timeout."""

    code = "task_timeout"
    retryable = True

    def __init__(self, timeout: float, *, task: str | None = None) -> None:
        what = f"task {task!r}" if task else "call"
        super().__init__(f"{what} did not finish within {timeout:g}s and was cancelled")
        self.timeout = timeout
        self.task = task

    def fields(self) -> dict[str, Any]:
        return {**super().fields(), "timeout": self.timeout, "task": self.task}


class TaskCancelled(ActorMeshError):
    """The task was cancelled (by its handle or an immediate shutdown) before it finished.

    Raised to whoever awaits the handle; distinct from `asyncio.CancelledError`,
    which would mean the *awaiting* task was cancelled.
    """

    code = "task_cancelled"

    def __init__(self, task: str) -> None:
        super().__init__(f"task {task!r} was cancelled")
        self.task = task


class ExecutorShutdown(ActorMeshError):
    """The executor is shutting down (or shut down) and accepts no new tasks."""

    code = "executor_shutdown"

    def __init__(self, name: str) -> None:
        super().__init__(f"executor {name!r} is shutting down; no new tasks are accepted")
        self.name = name


class QueueFull(ActorMeshError):
    """The executor's bounded queue is full and its policy is to raise."""

    code = "queue_full"
    retryable = True

    def __init__(self, name: str, *, capacity: int) -> None:
        super().__init__(
            f"executor {name!r} has {capacity} tasks queued (its bound); the task was not "
            "accepted. Retry later, raise max_queued, or submit with waiting enabled."
        )
        self.name = name
        self.capacity = capacity

    def fields(self) -> dict[str, Any]:
        return {**super().fields(), "name": self.name, "capacity": self.capacity}


class CircuitOpen(ActorMeshError):
    """The circuit breaker is open (or half-open with its probes taken): the call was not made."""

    code = "circuit_open"
    retryable = True

    def __init__(self, name: str, *, retry_after: float) -> None:
        super().__init__(
            f"circuit {name!r} is open; the call was not made. Retry in {retry_after:.3f}s."
        )
        self.name = name
        #: Seconds until the breaker lets a probe through (0 when a probe is in flight).
        self.retry_after = retry_after

    def fields(self) -> dict[str, Any]:
        return {**super().fields(), "name": self.name, "retry_after": self.retry_after}


class BulkheadFull(ActorMeshError):
    """The bulkhead had no free slot within its max wait (or its waiting room was full)."""

    code = "bulkhead_full"
    retryable = True

    def __init__(self, name: str, *, max_concurrent: int, waited: float) -> None:
        super().__init__(
            f"bulkhead {name!r} is full ({max_concurrent} concurrent calls); "
            f"gave up after {waited:g}s"
        )
        self.name = name
        self.max_concurrent = max_concurrent
        self.waited = waited

    def fields(self) -> dict[str, Any]:
        return {**super().fields(), "name": self.name, "max_concurrent": self.max_concurrent}


class RateLimited(ActorMeshError):
    """The rate limiter had no capacity within the caller's timeout."""

    code = "rate_limited"
    retryable = True

    def __init__(self, name: str, *, rate: float, per: float, timeout: float) -> None:
        super().__init__(
            f"rate limiter {name!r} ({rate:g} per {per:g}s) had no capacity within {timeout:g}s"
        )
        self.name = name
        self.rate = rate
        self.per = per
        self.timeout = timeout


class BackpressureError(ActorMeshError):
    """A stream buffer was full and its strategy is RAISE."""

    code = "backpressure"
    retryable = True

    def __init__(self, stage: str, *, capacity: int) -> None:
        super().__init__(f"stream stage {stage!r} is full ({capacity} items) and set to raise")
        self.stage = stage
        self.capacity = capacity

    def fields(self) -> dict[str, Any]:
        return {**super().fields(), "stage": self.stage, "capacity": self.capacity}


class StageFailed(ActorMeshError):
    """A stream stage (source, map, filter or sink) failed and stopped the stream.

    The stage's own error is `__cause__`.
    """

    code = "stage_failed"

    def __init__(self, stage: str, error: BaseException) -> None:
        super().__init__(f"stream stage {stage!r} failed: {type(error).__name__}: {error}")
        self.stage = stage

    def fields(self) -> dict[str, Any]:
        return {**super().fields(), "stage": self.stage}


class LockTimeout(ActorMeshError, TimeoutError):
    """A lock was not acquired within its timeout."""

    code = "lock_timeout"
    retryable = True

    def __init__(self, name: str, *, timeout: float) -> None:
        super().__init__(f"lock {name!r} was not acquired within {timeout:g}s")
        self.name = name
        self.timeout = timeout

    def fields(self) -> dict[str, Any]:
        return {**super().fields(), "name": self.name, "timeout": self.timeout}


class LockOrderViolation(ActorMeshError):
    """An ordered lock was requested out of its declared order: a potential deadlock.

    Raised before waiting, so the bug shows up on the first run that takes
    the wrong path, not on the rare run that actually deadlocks.
    """

    code = "lock_order_violation"

    def __init__(self, name: str, *, order: int, held: str, held_order: int) -> None:
        super().__init__(
            f"lock {name!r} (order {order}) requested while holding {held!r} "
            f"(order {held_order}); ordered locks must be taken in increasing order"
        )
        self.name = name
        self.order = order
        self.held = held
        self.held_order = held_order

    def fields(self) -> dict[str, Any]:
        return {
            **super().fields(),
            "name": self.name,
            "order": self.order,
            "held": self.held,
            "held_order": self.held_order,
        }


class PoolExhausted(ActorMeshError):
    """Every pooled object stayed in use for the whole acquire timeout."""

    code = "pool_exhausted"
    retryable = True

    def __init__(self, name: str, *, max_size: int, timeout: float) -> None:
        super().__init__(f"pool {name!r}: all {max_size} objects stayed in use for {timeout:g}s")
        self.name = name
        self.max_size = max_size
        self.timeout = timeout

    def fields(self) -> dict[str, Any]:
        return {**super().fields(), "name": self.name, "max_size": self.max_size}


class PoolClosed(ActorMeshError):
    """The pool was closed; it hands out nothing more."""

    code = "pool_closed"

    def __init__(self, name: str) -> None:
        super().__init__(f"pool {name!r} is closed")
        self.name = name
