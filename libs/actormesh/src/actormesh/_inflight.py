"""Publishes awaiting their PubAck: futures by inbox token, the window of them in
flight, and their deadlines.

Per message this is a dict entry and, with a deadline, one tuple in a queue: no
timer per message (`asyncio.timeout` costs more than the rest of a tell) and no
done-callback per future. Deadlines with the same timeout expire in the order
they were set, so one queue per timeout value and one timer, armed for the
earliest head, find every expired wait; entries whose PubAck came are skipped
as they reach the head. A deadline set out of that order (an ask's PubAck,
sent after waiting for room, under the deadline the ask began with) goes to a
heap instead, so it expires on time too.
"""

from __future__ import annotations

import asyncio
import heapq
from collections import deque
from typing import Generic, TypeVar

__all__ = ["InFlight"]

T = TypeVar("T")

#: Timeout values with a queue of their own; deadlines of any other go to the heap.
_QUEUES_MAX = 8


class InFlight(Generic[T]):
    """Futures by token, at most `limit` of them, each resolved by its reply or
    by its deadline passing (to None: "no reply in time")."""

    __slots__ = ("_late", "_loop", "_queues", "_room", "_timer", "_timer_at", "limit", "pending")

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.pending: dict[str, asyncio.Future[T | None]] = {}
        #: Senders waiting for the window to have room, oldest first.
        self._room: deque[asyncio.Future[None]] = deque()
        #: Per timeout value: (deadline, token), deadlines ascending.
        self._queues: dict[float, deque[tuple[float, str]]] = {}
        #: (deadline, token) set out of their queue's order.
        self._late: list[tuple[float, str]] = []
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at = 0.0
        self._loop: asyncio.AbstractEventLoop | None = None

    def full(self) -> bool:
        """Whether a new entry must wait for room (also when others already wait)."""
        return len(self.pending) >= self.limit or bool(self._room)

    async def wait_room(self) -> None:
        """Wait until an entry can be added without passing the limit; in turn."""
        loop = asyncio.get_running_loop()
        while self.full():
            waiter: asyncio.Future[None] = loop.create_future()
            self._room.append(waiter)
            try:
                await waiter
            except asyncio.CancelledError:
                if waiter.done() and not waiter.cancelled():
                    self._wake()  # our turn came with the cancellation: pass it on
                raise
            finally:
                self._room.remove(waiter)
            if len(self.pending) < self.limit:
                return

    def add(
        self, token: str, timeout: float | None, at: float | None = None
    ) -> asyncio.Future[T | None]:
        """A new future for `token`, resolved to None if `timeout` seconds pass first
        (or, given `at`, when the loop's clock reaches `at`, set with that timeout)."""
        loop = self._loop
        if loop is None:
            loop = self._loop = asyncio.get_running_loop()
        fut: asyncio.Future[T | None] = loop.create_future()
        self.pending[token] = fut
        if timeout is not None:
            self._deadline(loop, token, timeout, loop.time() + timeout if at is None else at)
        return fut

    def renew(self, token: str) -> asyncio.Future[T | None]:
        """A new future for `token`, which is waited on, under the deadline its
        first one was given (that one was settled by its owner, not by `resolve`)."""
        loop = self._loop
        if loop is None:
            loop = self._loop = asyncio.get_running_loop()
        fut: asyncio.Future[T | None] = loop.create_future()
        self.pending[token] = fut
        return fut

    def _deadline(
        self, loop: asyncio.AbstractEventLoop, token: str, timeout: float, at: float
    ) -> None:
        queue = self._queues.get(timeout)
        if queue is None:
            if len(self._queues) >= _QUEUES_MAX:
                # Timeouts of many values (a budget passed down, say): a heap each.
                self._late_deadline(loop, token, at)
                return
            queue = self._queues[timeout] = deque()
        else:
            # Answered entries leave from the head here, so a queue holds about
            # as many entries as are waiting, not as many as were sent.
            pending = self.pending
            while queue and queue[0][1] not in pending:
                queue.popleft()
        if queue and at < queue[-1][0]:
            self._late_deadline(loop, token, at)
            return
        queue.append((at, token))
        if self._timer is None or at < self._timer_at:
            self._arm(loop, at)

    def _late_deadline(self, loop: asyncio.AbstractEventLoop, token: str, at: float) -> None:
        late, pending = self._late, self.pending
        while late and late[0][1] not in pending:
            heapq.heappop(late)  # answered: kept small as the queues are
        heapq.heappush(late, (at, token))
        if self._timer is None or at < self._timer_at:
            self._arm(loop, at)

    def _arm(self, loop: asyncio.AbstractEventLoop, at: float) -> None:
        if self._timer is not None:
            self._timer.cancel()
        self._timer = loop.call_at(at, self._expire)
        self._timer_at = at

    def _expire(self) -> None:
        self._timer = None
        loop = self._loop
        if loop is None:
            return
        now = loop.time()
        pending = self.pending
        late = self._late
        while late and (late[0][0] <= now or late[0][1] not in pending):
            _, token = heapq.heappop(late)
            self.resolve(token, None)
        earliest = late[0][0] if late else None
        for timeout, queue in list(self._queues.items()):
            while queue:
                at, token = queue[0]
                if token in pending and at > now:
                    break
                queue.popleft()
                if token in pending:
                    self.resolve(token, None)
            if queue:
                head = queue[0][0]
                earliest = head if earliest is None or head < earliest else earliest
            else:
                del self._queues[timeout]
        if earliest is not None:
            self._arm(loop, earliest)

    def resolve(self, token: str, value: T | None) -> bool:
        """Settle `token`'s future with `value`; False if it is not waited on."""
        fut = self.pending.pop(token, None)
        if fut is None:
            return False
        if not fut.done():
            fut.set_result(value)
        if self._room:
            self._wake()
        return True

    def discard(self, token: str) -> None:
        """Stop waiting for `token` (its future, if still open, is cancelled)."""
        fut = self.pending.pop(token, None)
        if fut is None:
            return
        if not fut.done():
            fut.cancel()
        if self._room:
            self._wake()

    def _wake(self) -> None:
        if len(self.pending) >= self.limit:
            return
        for waiter in self._room:
            if not waiter.done():
                waiter.set_result(None)
                return

    def close(self) -> None:
        """Cancel every wait (the connection is going away)."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._queues.clear()
        self._late.clear()
        pending, self.pending = self.pending, {}
        for fut in pending.values():
            if not fut.done():
                fut.cancel()
        for waiter in self._room:
            if not waiter.done():
                waiter.cancel()
