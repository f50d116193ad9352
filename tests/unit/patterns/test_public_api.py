"""Pins the public surface of actormesh.patterns and the shape of its errors."""

from __future__ import annotations

import inspect

import actormesh.patterns as patterns
from actormesh._errors import ActorMeshError

PUBLIC = {
    # retry
    "RetryPolicy", "RetryBudget", "retry",
    # executor
    "TaskExecutor", "ExecutorConfig", "ExecutorMetrics", "Priority", "TaskHandle", "TaskState",
    # breaker
    "CircuitBreaker", "BreakerConfig", "BreakerMetrics", "BreakerPermit", "CircuitState",
    # limits
    "RateLimiter", "RateLimiterMetrics", "Bulkhead", "BulkheadMetrics",
    # policy
    "policy", "policy_of", "HandlerPolicy", "run_with_policy",
    # streams
    "Stream", "Pipeline", "Backpressure", "ErrorStrategy", "OnError", "StageMetrics", "Ackable",
    "JetStreamSource", "JetStreamMessage", "MailboxSink",
    # sync and pools
    "RWLock", "CountdownLatch", "OrderedLock", "acquire_ordered",
    "Pool", "PoolConfig", "PoolMetrics",
    # errors
    "TaskTimeout", "TaskCancelled", "RetryExhausted", "BudgetExhausted", "ExecutorShutdown",
    "QueueFull", "CircuitOpen", "BulkheadFull", "RateLimited", "BackpressureError",
    "StageFailed", "LockTimeout", "LockOrderViolation", "PoolExhausted", "PoolClosed",
}  # fmt: skip


def test_public_names_are_pinned() -> None:
    assert set(patterns.__all__) == PUBLIC
    assert sorted(patterns.__all__) == patterns.__all__
    for name in PUBLIC:
        assert getattr(patterns, name).__module__.startswith("actormesh.")


def test_every_error_is_an_actormesh_error_with_its_own_code() -> None:
    errors = [
        obj
        for name in PUBLIC
        if inspect.isclass(obj := getattr(patterns, name)) and issubclass(obj, BaseException)
    ]
    assert len(errors) == 15
    codes = set()
    for error in errors:
        assert issubclass(error, ActorMeshError), error
        assert error.code != ActorMeshError.code, error
        codes.add(error.code)
    assert len(codes) == len(errors)


def test_errors_carry_structured_fields() -> None:
    open_ = patterns.CircuitOpen("payments", retry_after=2.5)
    assert open_.fields() == {
        "code": "circuit_open",
        "message": str(open_),
        "retryable": True,
        "name": "payments",
        "retry_after": 2.5,
    }
    timeout = patterns.TaskTimeout(3.0, task="t-1")
    assert isinstance(timeout, TimeoutError)
    assert timeout.fields()["timeout"] == 3.0
    cause = ConnectionError("refused")
    exhausted = patterns.RetryExhausted(3, cause)
    assert (exhausted.attempts, exhausted.last_error, exhausted.retryable) == (3, cause, False)
    violation = patterns.LockOrderViolation("a", order=1, held="b", held_order=2)
    assert violation.fields()["held"] == "b"
    assert isinstance(patterns.LockTimeout("x", timeout=1), TimeoutError)
