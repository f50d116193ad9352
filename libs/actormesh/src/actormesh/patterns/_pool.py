"""Object pool: reuse expensive objects (connections, clients) under a hard size bound.

Our own: the pools that exist are tied to one kind of object (database drivers)
or to threads. This one takes any async factory and guarantees that no more
than `max_size` objects are alive at once, counting those being created and
those being disposed of, so a pool of connections never opens one too many.

Idle objects are reused most-recent first (the rest age out); objects idle for
`idle_timeout` are disposed of when next passed over, by `evict_idle()`, or by
the reaper that ``async with pool:`` runs. A freed slot or object goes to the
longest waiter first.
"""

from __future__ import annotations

import asyncio
import enum
import inspect
import logging
import time
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from types import TracebackType
from typing import Generic, TypeVar

from .._errors import ConfigError
from ._deadline import DeadlineExpired, within
from ._errors import PoolClosed, PoolExhausted

__all__ = ["Pool", "PoolConfig", "PoolMetrics"]

T = TypeVar("T")

_log = logging.getLogger("actormesh.patterns")


@dataclass(frozen=True, kw_only=True, slots=True)
class PoolConfig:
    """Defaults: at most 50 objects, acquire waits 10 s, idle objects go after 300 s."""

    name: str = "pool"
    max_size: int = 50
    #: Seconds `acquire` waits for an object; None waits forever.
    acquire_timeout: float | None = 10.0
    #: Seconds an object may sit idle before it is disposed of; None keeps it.
    idle_timeout: float | None = 300.0

    def __post_init__(self) -> None:
        if self.max_size < 1:
            raise ConfigError("max_size must be >= 1")
        if self.acquire_timeout is not None and self.acquire_timeout < 0:
            raise ConfigError("acquire_timeout must be >= 0 (or None)")
        if self.idle_timeout is not None and not self.idle_timeout > 0:
            raise ConfigError("idle_timeout must be > 0 (or None)")


@dataclass(frozen=True, slots=True)
class PoolMetrics:
    name: str
    #: Objects alive now: idle + in use + being created + being disposed of.
    size: int
    idle: int
    in_use: int
    waiting: int
    created: int
    destroyed: int
    acquired: int
    #: Acquires that gave up with `PoolExhausted`.
    timeouts: int
    #: Objects discarded because `validate` rejected them on release.
    validation_failures: int
    #: Objects disposed of for sitting idle too long.
    evicted: int


class _Slot(enum.Enum):
    """Handed to a waiter instead of an object: "a slot is free, create one"."""

    FREE = 0


class _Unset(enum.Enum):
    UNSET = 0


_UNSET = _Unset.UNSET


class Pool(Generic[T]):
    """A bounded pool of objects made by `factory`.

    ``async with pool.borrow() as conn:`` or `acquire()` / `release()`.
    `validate(obj)` (sync or async) runs on release; a False (or an exception)
    disposes of the object instead of keeping it. `dispose(obj)` is awaited for
    every object the pool lets go of. `clock` returns monotonic seconds.
    """

    def __init__(
        self,
        factory: Callable[[], Awaitable[T]],
        config: PoolConfig | None = None,
        *,
        validate: Callable[[T], bool | Awaitable[bool]] | None = None,
        dispose: Callable[[T], Awaitable[object]] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.config = config or PoolConfig()
        self._factory = factory
        self._validate = validate
        self._dispose = dispose
        self._clock = clock
        # (object, idle since); most recently released on the right.
        self._idle: deque[tuple[T, float]] = deque()
        self._in_use: dict[int, T] = {}
        self._creating = 0
        self._disposing = 0
        self._waiters: deque[asyncio.Future[T | _Slot]] = deque()
        self._closed = False
        self._reaper: asyncio.Task[None] | None = None
        self._created = 0
        self._destroyed = 0
        self._acquired = 0
        self._timeouts = 0
        self._validation_failures = 0
        self._evicted = 0

    def __repr__(self) -> str:
        return (
            f"<Pool {self.config.name!r} size={self.size}/{self.config.max_size} "
            f"idle={len(self._idle)}{' closed' if self._closed else ''}>"
        )

    @property
    def size(self) -> int:
        return len(self._idle) + len(self._in_use) + self._creating + self._disposing

    @property
    def closed(self) -> bool:
        return self._closed

    def metrics(self) -> PoolMetrics:
        return PoolMetrics(
            name=self.config.name,
            size=self.size,
            idle=len(self._idle),
            in_use=len(self._in_use),
            waiting=sum(1 for w in self._waiters if not w.done()),
            created=self._created,
            destroyed=self._destroyed,
            acquired=self._acquired,
            timeouts=self._timeouts,
            validation_failures=self._validation_failures,
            evicted=self._evicted,
        )

    async def acquire(self, *, timeout: float | _Unset | None = _UNSET) -> T:
        """An object from the pool (idle, else new); waits at most `timeout`
        (default: the config's), then raises `PoolExhausted`."""
        if self._closed:
            raise PoolClosed(self.config.name)
        idle_timeout = self.config.idle_timeout
        while self._idle:
            obj, since = self._idle.pop()
            if idle_timeout is not None and self._clock() - since >= idle_timeout:
                self._evicted += 1
                self._disposing += 1
                await self._destroy(obj)
                continue
            return self._checkout(obj)
        if self.size < self.config.max_size:
            self._creating += 1
            return await self._create()
        limit = self.config.acquire_timeout if timeout is _UNSET else timeout
        got = await self._wait(limit)
        if got is _Slot.FREE:
            return await self._create()
        return self._checkout(got)

    async def release(self, obj: T, *, discard: bool = False) -> None:
        """Give `obj` back; with `discard` (it is broken) dispose of it instead."""
        key = id(obj)
        if key not in self._in_use:
            raise ValueError(f"{obj!r} is not in use from {self!r}")
        keep = not discard and not self._closed
        if keep and self._validate is not None:
            # Still counted as in use while validating: the bound holds throughout.
            try:
                verdict = self._validate(obj)
                if inspect.isawaitable(verdict):
                    verdict = await verdict
                keep = bool(verdict)
            except Exception:
                _log.warning(
                    "pool %r: validate raised; discarding", self.config.name, exc_info=True
                )
                keep = False
            if not keep:
                self._validation_failures += 1
        del self._in_use[key]
        if keep and not self._closed:
            waiter = self._next_waiter()
            if waiter is not None:
                self._in_use[key] = obj
                waiter.set_result(obj)
            else:
                self._idle.append((obj, self._clock()))
            return
        self._disposing += 1
        await self._destroy(obj)

    @asynccontextmanager
    async def borrow(self, *, timeout: float | _Unset | None = _UNSET) -> AsyncIterator[T]:
        """``async with pool.borrow() as obj:`` acquires and releases (validating) `obj`."""
        obj = await self.acquire(timeout=timeout)
        try:
            yield obj
        finally:
            await self.release(obj)

    async def evict_idle(self) -> int:
        """Dispose of the objects idle for `idle_timeout` or longer; return how many."""
        idle_timeout = self.config.idle_timeout
        if idle_timeout is None:
            return 0
        now = self._clock()
        stale: list[T] = []
        # Oldest on the left: stop at the first one still fresh.
        while self._idle and now - self._idle[0][1] >= idle_timeout:
            stale.append(self._idle.popleft()[0])
        self._evicted += len(stale)
        self._disposing += len(stale)
        for obj in stale:
            await self._destroy(obj)
        return len(stale)

    async def close(self) -> None:
        """Refuse new acquires, fail the waiters with `PoolClosed`, dispose of idle
        objects; objects in use are disposed of as they are released."""
        self._closed = True
        if self._reaper is not None:
            self._reaper.cancel()
            await asyncio.wait([self._reaper])
            self._reaper = None
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_exception(PoolClosed(self.config.name))
        idle = [obj for obj, _ in self._idle]
        self._idle.clear()
        self._disposing += len(idle)
        for obj in idle:
            await self._destroy(obj)

    async def __aenter__(self) -> Pool[T]:
        idle_timeout = self.config.idle_timeout
        if idle_timeout is not None and self._reaper is None:
            self._reaper = asyncio.create_task(self._reap(max(idle_timeout / 2, 0.05)))
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    # -- internals -----------------------------------------------------------

    def _checkout(self, obj: T) -> T:
        self._in_use[id(obj)] = obj
        self._acquired += 1
        return obj

    async def _create(self) -> T:
        """Make an object in a slot already counted in `_creating`."""
        try:
            obj = await self._factory()
        except BaseException:
            self._creating -= 1
            self._pass_slot()
            raise
        self._creating -= 1
        self._created += 1
        if self._closed:
            self._disposing += 1
            await self._destroy(obj)
            raise PoolClosed(self.config.name)
        return self._checkout(obj)

    async def _destroy(self, obj: T) -> None:
        """Dispose of an object already counted in `_disposing`, then free its slot."""
        try:
            if self._dispose is not None:
                await self._dispose(obj)
        except Exception:
            _log.warning("pool %r: dispose raised", self.config.name, exc_info=True)
        finally:
            self._disposing -= 1
            self._destroyed += 1
            self._pass_slot()

    def _next_waiter(self) -> asyncio.Future[T | _Slot] | None:
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                return waiter
        return None

    def _pass_slot(self) -> None:
        """A slot freed up: let the longest waiter create an object in it."""
        if self._closed:
            return
        waiter = self._next_waiter()
        if waiter is not None:
            self._creating += 1
            waiter.set_result(_Slot.FREE)

    async def _wait(self, limit: float | None) -> T | _Slot:
        waiter: asyncio.Future[T | _Slot] = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)
        try:
            return await within(limit, self._await(waiter))
        except DeadlineExpired as expired:
            self._timeouts += 1
            raise PoolExhausted(
                self.config.name, max_size=self.config.max_size, timeout=expired.timeout
            ) from None

    async def _await(self, waiter: asyncio.Future[T | _Slot]) -> T | _Slot:
        try:
            return await waiter
        except asyncio.CancelledError:
            if waiter.done() and not waiter.cancelled():
                # Handed something and cancelled at once: pass it on.
                self._hand_back(waiter.result())
            raise

    def _hand_back(self, got: T | _Slot) -> None:
        if got is _Slot.FREE:
            self._creating -= 1
            self._pass_slot()
            return
        obj = got
        waiter = self._next_waiter()
        if waiter is not None:
            waiter.set_result(obj)
        else:
            del self._in_use[id(obj)]
            self._idle.append((obj, self._clock()))

    async def _reap(self, interval: float) -> None:
        while True:
            await asyncio.sleep(interval)
            await self.evict_idle()
