"""Task executor: prioritised, bounded, with per-task timeouts, retries and breakers.

Our own: asyncio has the parts (tasks, a semaphore, queues) but not priorities
under saturation, handles that outlive a queued task, or graceful versus
immediate shutdown. For plain concurrency limits, use `asyncio.Semaphore`; for
structured fan-out whose failures should cancel the siblings, `asyncio.TaskGroup`.

Design. Each accepted task gets a `TaskHandle`. While fewer than
`max_concurrency` tasks run and nothing is queued, a task starts at once (one
`asyncio.Task` each, so it can be cancelled alone); otherwise it waits in one
FIFO queue per priority, and every finishing task starts the next from the
highest non-empty queue. A task's failure is caught, recorded on its handle
and in the metrics, and reported to `on_error`; it never reaches the executor.
A retrying task keeps its concurrency slot while it backs off.
"""

from __future__ import annotations

import asyncio
import enum
import functools
import itertools
import logging
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from types import TracebackType
from typing import Any, TypeVar, TypeVarTuple

from .._errors import ConfigError
from .._retry import RetryPolicy
from ._backpressure import Backpressure
from ._breaker import CircuitBreaker
from ._deadline import DeadlineExpired, within
from ._errors import ExecutorShutdown, QueueFull, TaskCancelled
from ._policy import _execute
from ._task import Priority, TaskHandle, TaskState

__all__ = ["ExecutorConfig", "ExecutorMetrics", "TaskExecutor"]

T = TypeVar("T")
Ts = TypeVarTuple("Ts")

_log = logging.getLogger("actormesh.patterns")


class _Unset(enum.Enum):
    UNSET = 0


_UNSET = _Unset.UNSET


@dataclass(frozen=True, kw_only=True, slots=True)
class ExecutorConfig:
    name: str = "executor"
    #: Tasks running at once.
    max_concurrency: int = 100
    #: Tasks waiting to run; None for no bound.
    max_queued: int | None = None
    #: With a bounded queue: BLOCK makes `submit` wait for room, RAISE raises `QueueFull`.
    when_full: Backpressure = Backpressure.BLOCK
    #: Default per-attempt timeout in seconds; None for none.
    timeout: float | None = None
    #: Default retry policy; None runs each task once. Not on by default: tasks
    #: need not be idempotent. Pass `RetryPolicy()` for 3 attempts with backoff.
    retry: RetryPolicy | None = None

    def __post_init__(self) -> None:
        if self.max_concurrency < 1:
            raise ConfigError("max_concurrency must be >= 1")
        if self.max_queued is not None and self.max_queued < 0:
            raise ConfigError("max_queued must be >= 0 (or None)")
        if self.when_full not in (Backpressure.BLOCK, Backpressure.RAISE):
            raise ConfigError("when_full must be BLOCK or RAISE: an executor never drops tasks")
        if self.timeout is not None and not self.timeout > 0:
            raise ConfigError("timeout must be > 0 (or None)")


@dataclass(frozen=True, slots=True)
class ExecutorMetrics:
    """A snapshot of an executor's counters (cumulative) and gauges (`running`, `queued`)."""

    submitted: int
    completed: int
    failed: int
    cancelled: int
    #: Submissions refused with `QueueFull`.
    rejected: int
    running: int
    queued: int
    retries: int
    #: Attempts that ran past their timeout.
    timeouts: int
    #: Exceptions raised by task code and caught by the executor (every failed attempt).
    exceptions_recovered: int
    #: Times a task's failure opened its circuit breaker.
    breaker_trips: int


class _Stats:
    __slots__ = (
        "breaker_trips",
        "cancelled",
        "completed",
        "exceptions_recovered",
        "failed",
        "rejected",
        "retries",
        "submitted",
        "timeouts",
    )

    def __init__(self) -> None:
        self.submitted = 0
        self.completed = 0
        self.failed = 0
        self.cancelled = 0
        self.rejected = 0
        self.retries = 0
        self.timeouts = 0
        self.exceptions_recovered = 0
        self.breaker_trips = 0

    # The observer protocol of `_policy._execute`.
    def attempt_failed(self, exc: Exception) -> None:
        self.exceptions_recovered += 1

    def timed_out(self) -> None:
        self.timeouts += 1

    def retried(self) -> None:
        self.retries += 1

    def tripped(self) -> None:
        self.breaker_trips += 1


class TaskExecutor:
    """Runs coroutine functions with priorities and bounded concurrency.

    ``async with TaskExecutor(ExecutorConfig(max_concurrency=64)) as ex:``
    leaves with a graceful shutdown (or an immediate one if the block raised).
    Use from one event loop.
    """

    def __init__(
        self,
        config: ExecutorConfig | None = None,
        *,
        breaker: CircuitBreaker | None = None,
        on_error: Callable[[TaskHandle[Any], BaseException], object] | None = None,
    ) -> None:
        self.config = config or ExecutorConfig()
        self._breaker = breaker
        self._on_error = on_error
        # One FIFO per priority, indexed by the priority's value.
        self._queues: tuple[deque[TaskHandle[Any]], ...] = tuple(deque() for _ in Priority)
        self._queued = 0
        self._running = 0
        self._active: set[TaskHandle[Any]] = set()
        self._closing = False
        self._space_waiters: deque[asyncio.Future[None]] = deque()
        # Queue slots handed to woken `submit` callers and not yet used.
        self._reserved = 0
        self._idle_waiters: list[asyncio.Future[None]] = []
        self._ids = itertools.count(1)
        self._stats = _Stats()

    def __repr__(self) -> str:
        return (
            f"<TaskExecutor {self.config.name!r} running={self._running} queued={self._queued}"
            f"{' closing' if self._closing else ''}>"
        )

    @property
    def closing(self) -> bool:
        """True once shutdown began: `submit` raises `ExecutorShutdown`."""
        return self._closing

    def metrics(self) -> ExecutorMetrics:
        s = self._stats
        return ExecutorMetrics(
            submitted=s.submitted,
            completed=s.completed,
            failed=s.failed,
            cancelled=s.cancelled,
            rejected=s.rejected,
            running=self._running,
            queued=self._queued,
            retries=s.retries,
            timeouts=s.timeouts,
            exceptions_recovered=s.exceptions_recovered,
            breaker_trips=s.breaker_trips,
        )

    async def submit(
        self,
        fn: Callable[[*Ts], Awaitable[T]],
        *args: *Ts,
        priority: Priority = Priority.NORMAL,
        timeout: float | _Unset | None = _UNSET,
        retry: RetryPolicy | _Unset | None = _UNSET,
        breaker: CircuitBreaker | _Unset | None = _UNSET,
        name: str | None = None,
        when_full: Backpressure | None = None,
    ) -> TaskHandle[T]:
        """Accept `fn(*args)` for running and return its handle.

        `timeout`, `retry` and `breaker` default to the executor's; pass None
        to turn one off for this task. With a bounded queue that is full, waits
        for room or raises `QueueFull` per `when_full` (default: the config's).
        Raises `ExecutorShutdown` once shutdown began (also to waiting callers).
        """
        if self._closing:
            raise ExecutorShutdown(self.config.name)
        config = self.config
        # Woken submitters (`_reserved`) go first: a newcomer must not overtake them.
        if not self._queued and not self._reserved and self._running < config.max_concurrency:
            handle = self._handle(fn, args, priority, timeout, retry, breaker, name)
            self._stats.submitted += 1
            self._start(handle)
            return handle
        cap = config.max_queued
        if cap is not None and self._queued + self._reserved >= cap:
            if (when_full or config.when_full) is Backpressure.RAISE:
                self._stats.rejected += 1
                raise QueueFull(config.name, capacity=cap)
            await self._wait_for_room()
            if not self._queued and self._running < config.max_concurrency:
                handle = self._handle(fn, args, priority, timeout, retry, breaker, name)
                self._stats.submitted += 1
                self._start(handle)
                return handle
        handle = self._handle(fn, args, priority, timeout, retry, breaker, name)
        self._stats.submitted += 1
        self._queues[handle.priority].append(handle)
        self._queued += 1
        return handle

    async def join(self) -> None:
        """Wait until nothing is queued or running (new tasks may still be submitted)."""
        if not self._running and not self._queued:
            return
        waiter = asyncio.get_running_loop().create_future()
        self._idle_waiters.append(waiter)
        try:
            await waiter
        finally:
            if waiter in self._idle_waiters:
                self._idle_waiters.remove(waiter)

    async def shutdown(self, *, cancel: bool = False, timeout: float | None = None) -> None:
        """Stop accepting tasks and wait until none is queued or running.

        Graceful (default): queued and running tasks finish. With `cancel`:
        queued tasks are cancelled without starting and running ones are
        cancelled. With `timeout`: graceful for that long, then as with `cancel`.
        Safe to call again (e.g. to escalate from graceful to cancel).
        """
        self._closing = True
        while self._space_waiters:
            waiter = self._space_waiters.popleft()
            if not waiter.done():
                self._reserved += 1
                waiter.set_result(None)
        if cancel:
            self._cancel_all()
        elif timeout is not None:
            try:
                await within(timeout, self.join())
            except DeadlineExpired:
                self._cancel_all()
        await self.join()

    async def __aenter__(self) -> TaskExecutor:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.shutdown(cancel=exc_type is not None)

    # -- internals -----------------------------------------------------------

    def _handle(
        self,
        fn: Callable[..., Awaitable[T]],
        args: tuple[Any, ...],
        priority: Priority,
        timeout: float | _Unset | None,
        retry: RetryPolicy | _Unset | None,
        breaker: CircuitBreaker | _Unset | None,
        name: str | None,
    ) -> TaskHandle[T]:
        config = self.config
        return TaskHandle(
            self,
            next(self._ids),
            name,
            Priority(priority),
            fn,
            args,
            config.timeout if timeout is _UNSET else timeout,
            config.retry if retry is _UNSET else retry,
            self._breaker if breaker is _UNSET else breaker,
        )

    async def _wait_for_room(self) -> None:
        waiter = asyncio.get_running_loop().create_future()
        self._space_waiters.append(waiter)
        try:
            await waiter
        except asyncio.CancelledError:
            if waiter.done() and not waiter.cancelled():
                # Woken and cancelled at once: pass the reserved slot on.
                self._reserved -= 1
                self._free_slot()
            raise
        self._reserved -= 1
        if self._closing:
            raise ExecutorShutdown(self.config.name)

    def _free_slot(self) -> None:
        """A queued task left the queue: give its slot to the longest waiter."""
        while self._space_waiters:
            waiter = self._space_waiters.popleft()
            if not waiter.done():
                self._reserved += 1
                waiter.set_result(None)
                return

    def _start(self, handle: TaskHandle[Any]) -> None:
        handle._state = TaskState.RUNNING
        self._running += 1
        self._active.add(handle)
        handle._task = asyncio.get_running_loop().create_task(self._run(handle))

    async def _run(self, handle: TaskHandle[Any]) -> None:
        fn = handle._fn
        stats = self._stats
        try:
            if handle._plain:
                try:
                    result = await fn(*handle._args)
                except Exception:
                    stats.exceptions_recovered += 1
                    raise
            else:
                result = await _execute(
                    fn,
                    handle._args,
                    timeout=handle._timeout,
                    retry=handle._retry,
                    breaker=handle._breaker,
                    observer=stats,
                    task=handle.name,
                )
        except asyncio.CancelledError:
            handle._settle(TaskState.CANCELLED, None, TaskCancelled(handle.name))
            raise
        except Exception as exc:
            stats.failed += 1
            handle._settle(TaskState.FAILED, None, exc)
            self._report(handle, exc)
        except BaseException as exc:
            # KeyboardInterrupt / SystemExit: record it, then let it stop the loop.
            stats.failed += 1
            handle._settle(TaskState.FAILED, None, exc)
            raise
        else:
            stats.completed += 1
            handle._settle(TaskState.SUCCEEDED, result, None)
        finally:
            # Here rather than in a done-callback: one loop iteration less per
            # task. A task cancelled before its first step never runs this;
            # `_cancel_running` covers that case.
            self._finished(handle)

    def _report(self, handle: TaskHandle[Any], exc: BaseException) -> None:
        if self._on_error is None:
            _log.warning("task %r failed: %s: %s", handle.name, type(exc).__name__, exc)
            return
        try:
            self._on_error(handle, exc)
        except Exception:
            _log.exception("executor %r: on_error callback failed", self.config.name)

    def _cancel_running(self, handle: TaskHandle[Any], task: asyncio.Task[None]) -> None:
        task.cancel()
        task.add_done_callback(functools.partial(self._finished_unless_done, handle))

    def _finished_unless_done(self, handle: TaskHandle[Any], task: asyncio.Task[None]) -> None:
        if handle._task is task:
            self._finished(handle)

    def _finished(self, handle: TaskHandle[Any]) -> None:
        if handle._state is TaskState.RUNNING:
            # Cancelled before its coroutine ever ran.
            handle._settle(TaskState.CANCELLED, None, TaskCancelled(handle.name))
        if handle._state is TaskState.CANCELLED:
            self._stats.cancelled += 1
        handle._task = None
        self._running -= 1
        self._active.discard(handle)
        if self._queued:
            self._start_queued()
        elif self.config.max_queued == 0 and self._space_waiters:
            # A queue bounded at 0 has no slot to free: hand over the run slot.
            self._free_slot()
        if not self._running and not self._queued:
            self._notify_idle()

    def _start_queued(self) -> None:
        limit = self.config.max_concurrency
        while self._queued and self._running < limit:
            handle = self._pop()
            self._queued -= 1
            self._free_slot()
            self._start(handle)

    def _pop(self) -> TaskHandle[Any]:
        for queue in reversed(self._queues):
            while queue:
                handle: TaskHandle[Any] = queue.popleft()
                # Cancelled entries stay in their deque until reached here.
                if handle._state is TaskState.QUEUED:
                    return handle
        raise AssertionError("queued count out of sync with the queues")

    def _cancel_queued(self, handle: TaskHandle[Any]) -> None:
        # Left in its deque and skipped when reached: O(1) here.
        handle._settle(TaskState.CANCELLED, None, TaskCancelled(handle.name))
        self._stats.cancelled += 1
        self._queued -= 1
        self._free_slot()
        if not self._running and not self._queued:
            self._notify_idle()

    def _cancel_all(self) -> None:
        for queue in self._queues:
            while queue:
                handle = queue.popleft()
                if handle._state is TaskState.QUEUED:
                    handle._settle(TaskState.CANCELLED, None, TaskCancelled(handle.name))
                    self._stats.cancelled += 1
        self._queued = 0
        for handle in tuple(self._active):
            if handle._task is not None:
                self._cancel_running(handle, handle._task)
        if not self._running:
            self._notify_idle()

    def _notify_idle(self) -> None:
        waiters, self._idle_waiters = self._idle_waiters, []
        for waiter in waiters:
            if not waiter.done():
                waiter.set_result(None)
