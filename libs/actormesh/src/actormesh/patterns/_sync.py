"""Sync primitives asyncio lacks: a read-write lock, a countdown latch, ordered locks.

Use asyncio's own where they fit, unwrapped: `asyncio.Lock`, `Semaphore`
(`BoundedSemaphore`), `Event`, `Condition`, `Barrier` (cyclic, all parties
wait for each other), `Queue` (the MPMC channel), `TaskGroup`, and
`asyncio.timeout()` for a deadline on anything.

`RWLock` wraps `aiorwlock` (writer-preferring, cancellation-safe, well kept);
we add a name and a typed acquire timeout. `CountdownLatch` and `OrderedLock`
are our own: a latch is a counter over an `asyncio.Event`, and lock ordering
needs per-task bookkeeping no library offers.
"""

from __future__ import annotations

import asyncio
import enum
import itertools
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from contextvars import ContextVar
from types import TracebackType
from typing import Literal, TypeAlias

import aiorwlock

from .._errors import ConfigError
from ._deadline import DeadlineExpired, within
from ._errors import LockOrderViolation, LockTimeout

__all__ = ["CountdownLatch", "OrderedLock", "RWLock", "acquire_ordered"]


class _Unset(enum.Enum):
    UNSET = 0


_UNSET = _Unset.UNSET


_Side: TypeAlias = Literal["read", "write"]


class _Held:
    """`async with` guard for one side of an RWLock."""

    __slots__ = ("_lock", "_side", "_timeout")

    def __init__(self, lock: RWLock, side: _Side, timeout: float | None) -> None:
        self._lock = lock
        self._side = side
        self._timeout = timeout

    async def __aenter__(self) -> None:
        core = self._lock._rw.reader if self._side == "read" else self._lock._rw.writer
        try:
            await within(self._timeout, core.acquire())
        except DeadlineExpired as expired:
            raise LockTimeout(f"{self._lock.name}:{self._side}", timeout=expired.timeout) from None

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        core = self._lock._rw.reader if self._side == "read" else self._lock._rw.writer
        core.release()


class RWLock:
    """Many readers or one writer; a waiting writer holds back new readers.

    ``async with lock.read():`` / ``async with lock.write(timeout=2):``.
    Ownership is per task: release in the task that acquired (``async with``
    does). A task holding the read side cannot upgrade to write.
    """

    __slots__ = ("_rw", "name", "timeout")

    def __init__(self, name: str = "rwlock", *, timeout: float | None = None) -> None:
        self.name = name
        #: Default acquire timeout in seconds; None waits forever.
        self.timeout = timeout
        self._rw = aiorwlock.RWLock()

    def __repr__(self) -> str:
        return f"<RWLock {self.name!r} read={self.read_locked} write={self.write_locked}>"

    @property
    def read_locked(self) -> bool:
        return self._rw.reader.locked

    @property
    def write_locked(self) -> bool:
        return self._rw.writer.locked

    def read(self, *, timeout: float | _Unset | None = _UNSET) -> _Held:
        """Shared access; raises `LockTimeout` past `timeout` (default: the lock's)."""
        return _Held(self, "read", self.timeout if timeout is _UNSET else timeout)

    def write(self, *, timeout: float | _Unset | None = _UNSET) -> _Held:
        """Exclusive access; raises `LockTimeout` past `timeout` (default: the lock's)."""
        return _Held(self, "write", self.timeout if timeout is _UNSET else timeout)


class CountdownLatch:
    """Opens once `count_down()` was called `count` times; then `wait()` returns at once.

    One-shot, unlike `asyncio.Barrier`: the waiters are not the ones counting.
    For a deadline, wrap `wait()` in `asyncio.timeout()`.
    """

    __slots__ = ("_count", "_open")

    def __init__(self, count: int) -> None:
        if count < 0:
            raise ConfigError("count must be >= 0")
        self._count = count
        self._open = asyncio.Event()
        if count == 0:
            self._open.set()

    def __repr__(self) -> str:
        return f"<CountdownLatch count={self._count}>"

    @property
    def count(self) -> int:
        return self._count

    def count_down(self, n: int = 1) -> None:
        """Count `n` arrivals (never below zero)."""
        if n < 1:
            raise ValueError("n must be >= 1")
        if self._count == 0:
            return
        self._count = max(0, self._count - n)
        if self._count == 0:
            self._open.set()

    async def wait(self) -> None:
        await self._open.wait()


# The ordered locks held by a task, in acquisition order, tagged with the task
# so that a child task (which inherits a copy of the context) starts with none.
_HELD: ContextVar[tuple[asyncio.Task[object] | None, tuple[OrderedLock, ...]]] = ContextVar(
    "actormesh_ordered_locks", default=(None, ())
)


def _held_here() -> tuple[OrderedLock, ...]:
    task, locks = _HELD.get()
    return locks if task is not None and task is asyncio.current_task() else ()


class OrderedLock:
    """An `asyncio.Lock` with a place in a global order, to rule out deadlocks.

    A task may only take ordered locks in strictly increasing `order`; taking
    one out of order raises `LockOrderViolation` at once (before waiting), so
    the bug shows on every run of the wrong path, not on the rare deadlock.
    Give every lock a distinct order. Not reentrant. Waits at most `timeout`
    (default 5 s), then raises `LockTimeout`.

    Acquire with ``async with lock:``, `await lock.acquire()`, or several at
    once with `acquire_ordered`. Not `asyncio.wait_for(lock.acquire())`: it
    runs the acquire in another task, which then holds the bookkeeping.
    """

    __slots__ = ("_lock", "name", "order", "timeout")

    def __init__(self, name: str, order: int, *, timeout: float | None = 5.0) -> None:
        self.name = name
        self.order = order
        self.timeout = timeout
        self._lock = asyncio.Lock()

    def __repr__(self) -> str:
        state = "locked" if self._lock.locked() else "unlocked"
        return f"<OrderedLock {self.name!r} order={self.order} {state}>"

    def locked(self) -> bool:
        return self._lock.locked()

    async def acquire(self, *, timeout: float | _Unset | None = _UNSET) -> None:
        held = _held_here()
        if held:
            top = max(held, key=_order)
            if self.order <= top.order:
                raise LockOrderViolation(
                    self.name, order=self.order, held=top.name, held_order=top.order
                )
        limit = self.timeout if timeout is _UNSET else timeout
        try:
            await within(limit, self._lock.acquire())
        except DeadlineExpired as expired:
            raise LockTimeout(self.name, timeout=expired.timeout) from None
        _HELD.set((asyncio.current_task(), (*held, self)))

    def release(self) -> None:
        held = _held_here()
        if self in held:
            index = len(held) - 1 - held[::-1].index(self)
            _HELD.set((asyncio.current_task(), held[:index] + held[index + 1 :]))
        self._lock.release()

    async def __aenter__(self) -> None:
        await self.acquire()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.release()


def _order(lock: OrderedLock) -> int:
    return lock.order


@asynccontextmanager
async def acquire_ordered(
    *locks: OrderedLock, timeout: float | _Unset | None = _UNSET
) -> AsyncIterator[None]:
    """Hold several ordered locks: taken in increasing order, released in reverse.

    The locks may be passed in any order. `timeout` bounds the whole
    acquisition (default: the smallest of the locks' own timeouts).
    """
    ordered = sorted(locks, key=_order)
    for a, b in itertools.pairwise(ordered):
        if a is b:
            raise ValueError(f"lock {a.name!r} given twice")
        if a.order == b.order:
            raise ValueError(f"locks {a.name!r} and {b.name!r} share order {a.order}")
    if timeout is _UNSET:
        limits = [lock.timeout for lock in ordered if lock.timeout is not None]
        timeout = min(limits) if limits else None
    loop = asyncio.get_running_loop()
    deadline = None if timeout is None else loop.time() + timeout
    taken: list[OrderedLock] = []
    try:
        for lock in ordered:
            if deadline is None:
                await lock.acquire(timeout=None)
            else:
                remaining = deadline - loop.time()
                if remaining <= 0 and lock.locked():
                    raise LockTimeout(lock.name, timeout=timeout or 0.0)
                await lock.acquire(timeout=max(remaining, 0.0))
            taken.append(lock)
        yield
    finally:
        for lock in reversed(taken):
            lock.release()
