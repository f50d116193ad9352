"""From the pull to a handler: per-key lanes (one message at a time per key),
keyless messages run side by side, all under the worker's concurrency bound.

Messages are run by a small pool of runner tasks, not by a task per message
(creating, scheduling and finishing a task cost about as much as handling a
message). A runner takes the next ready message and, for a keyed actor, stays
on that key until its lane is empty, so a key's messages run in order. Runners
are started one per loop turn while ready work is waiting, up to
`concurrency`: a burst of messages whose handlers never block is handled by one
runner, while handlers that block get the full concurrency within a few loop
turns. A runner whose queue is empty ends, and so does an idle key's lane: no
per-key state outlives its messages.

A runner never ends holding a message. `process` settles each message itself;
if it raises anyway (a bug, an interceptor, `SystemExit` from a handler), the
message is settled here through `Failed.unsettled` (nak with backoff, or dead
letter at the last delivery). The worker, not the consumer, decides which
delivery is the last: a message delivered more than `max_deliver` times (its
dead-lettering failed before) goes to `Failed.exhausted`, without running again.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, Protocol

from nats.aio.msg import Msg

from .._subjects import KEYLESS, deliveries_of
from ._settle import Settler

__all__ = ["Dispatcher", "Failed", "key_of"]

log = logging.getLogger("actormesh.worker")

#: The nak delay when even `Failed.unsettled` could not settle a message.
_LAST_RESORT_DELAY = 1.0


class Failed(Protocol):
    """Settles what `process` left unsettled (the worker's `Failures`)."""

    async def unsettled(self, key: str, msg: Msg, exc: BaseException) -> None:
        """`process` raised `exc` holding `msg`: nak with backoff or dead-letter it."""

    async def exhausted(self, key: str, msg: Msg) -> None:
        """`msg` is past its last delivery: dead-letter it without running it."""


def key_of(base: str, msg: Msg) -> str:
    """The actor key a mailbox message is for (`base` is the mailbox's subject prefix)."""
    subject = msg.subject
    return subject[len(base) :] if subject.startswith(base) else KEYLESS


class Dispatcher:
    """Hands each pulled message to `process(key, msg)` in its lane."""

    def __init__(
        self,
        *,
        base: str,
        keyless: bool,
        concurrency: int,
        settler: Settler,
        process: Callable[[str, Msg], Awaitable[None]],
        accepting: Callable[[], bool],
        failed: Failed | None = None,
        max_deliver: int = 0,
    ) -> None:
        self._base = base
        self._cut = len(base)
        self._keyless = keyless
        self._settler = settler
        self._process = process
        self._accepting = accepting
        self._failed = failed
        #: Deliveries after which a message is dead-lettered unrun (0: no limit here).
        self._max_deliver = max_deliver if failed is not None else 0
        self._limit = concurrency
        #: Messages ready to run: a keyless message, or the first of a key's lane.
        self._ready: deque[tuple[str, Msg]] = deque()
        #: Keys with a message ready or running, to the messages queued behind it.
        self._lanes: dict[str, deque[Msg]] = {}
        self._runners = 0
        #: The runner started last, until it runs: one at a time is enough.
        self._starting: asyncio.Task[None] | None = None
        self.tasks: set[asyncio.Task[Any]] = set()

    def spawn(self, coro: Coroutine[Any, Any, Any], name: str) -> asyncio.Task[Any]:
        task = asyncio.get_running_loop().create_task(coro, name=name)
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)
        return task

    def dispatch(self, msg: Msg) -> None:
        """The consumer's callback: one message pulled."""
        self._settler.hold(msg)
        if not self._accepting():
            # Draining: this arrived on a pull asked for earlier; give it straight back.
            self.spawn(self._settler.nak(msg, 0.0), "handback")
            return
        subject = msg.subject
        key = subject[self._cut :] if subject.startswith(self._base) else KEYLESS
        if not self._keyless:
            lane = self._lanes.get(key)
            if lane is not None:
                lane.append(msg)  # behind the key's running message
                return
            self._lanes[key] = deque()
        self._ready.append((key, msg))
        if self._starting is None and self._runners < self._limit:
            self._start_runner()

    def key_of(self, msg: Msg) -> str:
        return key_of(self._base, msg)

    def take_queued(self, key: str, limit: int) -> list[Msg]:
        """Up to `limit` messages queued behind `key`'s running one, taken out of its
        lane in order (the caller, running that key, now owns them)."""
        lane = self._lanes.get(key)
        if not lane:
            return []
        return [lane.popleft() for _ in range(min(limit, len(lane)))]

    def busy(self, key: str) -> bool:
        """Whether `key` has a message running or queued (a keyless actor always has)."""
        return self._keyless or key in self._lanes

    def _start_runner(self) -> None:
        self._runners += 1
        task = self._starting = self.spawn(self._run(), "msg-runner")
        task.add_done_callback(self._runner_done)

    def _runner_done(self, task: asyncio.Task[None]) -> None:
        if self._starting is task:
            # Cancelled before its first step: `_run` never ran to count it out.
            self._starting = None
            self._runners -= 1

    async def _run(self) -> None:
        ready, lanes, process = self._ready, self._lanes, self._process
        keyed = not self._keyless
        max_deliver, failed = self._max_deliver, self._failed
        self._starting = None
        key = ""
        msg: Msg | None = None
        try:
            while ready:
                key, msg = ready.popleft()
                if ready and self._starting is None and self._runners < self._limit:
                    # More is waiting: have another runner ready in case this one blocks.
                    self._start_runner()
                while True:
                    try:
                        if max_deliver and failed is not None and deliveries_of(msg) > max_deliver:
                            await failed.exhausted(key, msg)
                        else:
                            await process(key, msg)
                    except BaseException as exc:
                        if _cancelled(exc):
                            raise
                        await self._unsettled(key, msg, exc)
                    if not keyed:
                        break
                    lane = lanes[key]
                    if not lane:
                        del lanes[key]  # the key is idle: nothing of it is kept
                        break
                    msg = lane.popleft()
        except BaseException:
            # Cancelled (a drain past its grace): give back this message and those
            # queued behind it on its key (the drain hands back whatever is left).
            back = [msg] if msg is not None else []
            if keyed:
                back.extend(lanes.pop(key, ()))
            if any(self._settler.holds(m) for m in back):
                self.spawn(self._settler.hand_back(back), "handback")
            raise
        finally:
            self._runners -= 1

    async def _unsettled(self, key: str, msg: Msg, exc: BaseException) -> None:
        """`process` raised: whatever it was, the message must not stay held."""
        log.error(
            "handling a message to key %r raised %s: settling it here",
            key,
            type(exc).__name__,
            exc_info=exc,
        )
        settler = self._settler
        if not settler.holds(msg):
            return
        if self._failed is not None:
            try:
                await self._failed.unsettled(key, msg, exc)
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("settling a failed message to key %r failed", key)
        if settler.holds(msg):
            await settler.nak(msg, _LAST_RESORT_DELAY)

    def cancel_work(self) -> None:
        """Cancel the running handlers (their messages are handed back by the drain)."""
        for task in list(self.tasks):
            if task.get_name().startswith("msg"):
                task.cancel()

    async def cancel_all(self) -> None:
        for task in list(self.tasks):
            task.cancel()
        for task in list(self.tasks):
            try:
                await task
            except asyncio.CancelledError:
                # Our own cancellation must go on; the task's ends here.
                current = asyncio.current_task()
                if current is not None and current.cancelling():
                    raise
            except Exception:  # noqa: S110 - a background task's end is not ours to report
                pass


def _cancelled(exc: BaseException) -> bool:
    """Whether `exc` is this task being cancelled (a handler may raise a
    CancelledError of its own, e.g. from a future it awaited: that is a failure)."""
    if not isinstance(exc, asyncio.CancelledError):
        return False
    task = asyncio.current_task()
    return task is None or task.cancelling() > 0
