"""In-process async patterns: executor, retries, breakers, limits, streams, locks, pools.

Everything here is usable on its own, without a mesh. Uses aiolimiter and
aiorwlock (dependencies of actormesh); the core does not import this package.
See docs/patterns.md. One concept per module:

- `_errors`: the errors raised here; `_deadline`: our own deadline around an await;
- `_backpressure`: what a full buffer does (streams, executor, mailbox sink);
- `_task`, `_executor`: task handles, and the executor that runs them;
- `_breaker`: circuit breakers; `_limits`: rate limiters and bulkheads;
- `_policy`: per-handler policies (`@policy`) and the call they wrap;
- `_stream/`: stream pipelines (see its docstring); `_jetstream`: JetStream ends of a stream;
- `_sync`: read-write lock, latch, ordered locks; `_pool`: object pools.
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
from ._executor import ExecutorConfig, ExecutorMetrics, TaskExecutor
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
from ._task import Priority, TaskHandle, TaskState

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
