"""A submitted task: its priority, its state, and the handle its submitter awaits.

A `TaskHandle` outlives the work it stands for: it is made when a task is
accepted (before it may run), settles once (succeeded, failed or cancelled),
and then drops its function and arguments so a kept handle holds nothing big.
The executor drives the state; the handle only reports it.
"""

from __future__ import annotations

import asyncio
import enum
from collections.abc import Awaitable, Callable, Generator
from types import TracebackType
from typing import TYPE_CHECKING, Any, Generic, NoReturn, TypeVar, cast

from .._retry import RetryPolicy
from ._breaker import CircuitBreaker

if TYPE_CHECKING:
    from ._executor import TaskExecutor

__all__ = ["Priority", "TaskHandle", "TaskState"]

T = TypeVar("T")


class Priority(enum.IntEnum):
    """Higher runs first when the executor is saturated."""

    LOW = 0
    NORMAL = 1
    HIGH = 2
    CRITICAL = 3


class TaskState(enum.Enum):
    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"


class TaskHandle(Generic[T]):
    """A submitted task: await it (``await handle``) for its result, or cancel it.

    Awaiting raises what the task raised (`TaskTimeout`, `RetryExhausted`,
    `CircuitOpen`, or the task's own error), or `TaskCancelled` if it was
    cancelled. Cancelling the *awaiting* task does not cancel this one.
    """

    __slots__ = (
        "_args",
        "_breaker",
        "_done",
        "_error",
        "_error_tb",
        "_executor",
        "_fn",
        "_name",
        "_plain",
        "_result",
        "_retry",
        "_state",
        "_task",
        "_timeout",
        "id",
        "priority",
    )

    def __init__(
        self,
        executor: TaskExecutor,
        task_id: int,
        name: str | None,
        priority: Priority,
        fn: Callable[..., Awaitable[T]],
        args: tuple[Any, ...],
        timeout: float | None,
        retry: RetryPolicy | None,
        breaker: CircuitBreaker | None,
    ) -> None:
        self.id = task_id
        self.priority = priority
        self._name = name
        self._executor = executor
        self._fn: Callable[..., Awaitable[T]] = fn
        self._args: tuple[Any, ...] = args
        self._timeout = timeout
        self._retry = retry
        self._breaker = breaker
        self._plain = timeout is None and breaker is None and (retry is None or retry.attempts == 1)
        self._state = TaskState.QUEUED
        self._result: T | None = None
        self._error: BaseException | None = None
        self._error_tb: TracebackType | None = None
        self._task: asyncio.Task[None] | None = None
        # Made on first await only: most handles are never awaited one by one.
        self._done: asyncio.Event | None = None

    @property
    def name(self) -> str:
        return self._name or f"{self._executor.config.name}-{self.id}"

    @property
    def state(self) -> TaskState:
        return self._state

    def __repr__(self) -> str:
        return f"<TaskHandle {self.name!r} {self.priority.name} {self._state.value}>"

    def done(self) -> bool:
        return self._state in _FINAL

    def cancel(self) -> bool:
        """Cancel the task: a queued task never starts; a running one is cancelled.

        Returns False if it had already finished. A running task that catches
        the cancellation and returns normally ends SUCCEEDED.
        """
        if self._state is TaskState.QUEUED:
            self._executor._cancel_queued(self)
            return True
        if self._state is TaskState.RUNNING and self._task is not None:
            self._executor._cancel_running(self, self._task)
            return True
        return False

    def exception(self) -> BaseException | None:
        """What the task raised (None if it succeeded). Raises InvalidStateError if not done."""
        if not self.done():
            raise asyncio.InvalidStateError(f"{self!r} is not done")
        return self._error

    async def result(self) -> T:
        """Wait for the task to finish; return its result or raise its error."""
        if self._state not in _FINAL:
            if self._done is None:
                self._done = asyncio.Event()
            await self._done.wait()
        if self._error is not None:
            # Reset the traceback as asyncio.Future does: each raise would extend it.
            raise self._error.with_traceback(self._error_tb)
        return cast(T, self._result)

    def __await__(self) -> Generator[Any, None, T]:
        return self.result().__await__()

    def _settle(self, state: TaskState, result: T | None, error: BaseException | None) -> None:
        if self._state in _FINAL:
            return
        self._state = state
        self._result = result
        self._error = error
        self._error_tb = error.__traceback__ if error is not None else None
        # Drop references early: a finished handle may be kept a long time.
        self._fn = _finished_task
        self._args = ()
        if self._done is not None:
            self._done.set()


_FINAL = frozenset({TaskState.SUCCEEDED, TaskState.FAILED, TaskState.CANCELLED})


async def _finished_task(*args: object) -> NoReturn:
    """What a settled handle holds instead of its function (a task never runs twice)."""
    raise RuntimeError("this task already finished")
