"""In-process async patterns: executor, retries, breakers, limits, streams, locks, pools.

Everything here is usable on its own, without a mesh. Needs the ``patterns``
extra (aiolimiter, aiorwlock). See docs/patterns.md.
"""

from .._retry import RetryBudget, RetryPolicy, retry
from ._breaker import BreakerConfig, BreakerMetrics, BreakerPermit, CircuitBreaker, CircuitState
from ._errors import (
    BackpressureError,
    BudgetExhausted,
    BulkheadFull,
    CircuitOpen,
    ExecutorShutdown,
    LockOrderViolation,
    LockTimeout,
    PoolClosed,
    PoolExhausted,
    QueueFull,
    RateLimited,
    RetryExhausted,
    StageFailed,
    TaskCancelled,
    TaskTimeout,
)
from ._executor import (
    ExecutorConfig,
    ExecutorMetrics,
    Priority,
    TaskExecutor,
    TaskHandle,
    TaskState,
)
from ._jetstream import JetStreamMessage, JetStreamSource, MailboxSink
from ._limits import Bulkhead, BulkheadMetrics, RateLimiter, RateLimiterMetrics
from ._policy import HandlerPolicy, policy, policy_of, run_with_policy
from ._pool import Pool, PoolConfig, PoolMetrics
from ._stream import (
    Ackable,
    Backpressure,
    ErrorStrategy,
    OnError,
    Pipeline,
    StageMetrics,
    Stream,
)
from ._sync import CountdownLatch, OrderedLock, RWLock, acquire_ordered

__all__ = [
    "Ackable",
    "Backpressure",
    "BackpressureError",
    "BreakerConfig",
    "BreakerMetrics",
    "BreakerPermit",
    "BudgetExhausted",
    "Bulkhead",
    "BulkheadFull",
    "BulkheadMetrics",
    "CircuitBreaker",
    "CircuitOpen",
    "CircuitState",
    "CountdownLatch",
    "ErrorStrategy",
    "ExecutorConfig",
    "ExecutorMetrics",
    "ExecutorShutdown",
    "HandlerPolicy",
    "JetStreamMessage",
    "JetStreamSource",
    "LockOrderViolation",
    "LockTimeout",
    "MailboxSink",
    "OnError",
    "OrderedLock",
    "Pipeline",
    "Pool",
    "PoolClosed",
    "PoolConfig",
    "PoolExhausted",
    "PoolMetrics",
    "Priority",
    "QueueFull",
    "RWLock",
    "RateLimited",
    "RateLimiter",
    "RateLimiterMetrics",
    "RetryBudget",
    "RetryExhausted",
    "RetryPolicy",
    "StageFailed",
    "StageMetrics",
    "Stream",
    "TaskCancelled",
    "TaskExecutor",
    "TaskHandle",
    "TaskState",
    "TaskTimeout",
    "acquire_ordered",
    "policy",
    "policy_of",
    "retry",
    "run_with_policy",
]
