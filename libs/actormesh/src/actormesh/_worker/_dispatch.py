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
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any

from nats.aio.msg import Msg

from .._subjects import KEYLESS
from ._settle import Settler

__all__ = ["Dispatcher", "key_of"]

log = logging.getLogger("actormesh.worker")


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
    ) -> None:
        self._base = base
        self._cut = len(base)
        self._keyless = keyless
        self._settler = settler
        self._process = process
        self._accepting = accepting
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
        self._starting = None
        key = ""
        try:
            while ready:
                key, msg = ready.popleft()
                if ready and self._starting is None and self._runners < self._limit:
                    # More is waiting: have another runner ready in case this one blocks.
                    self._start_runner()
                while True:
                    try:
                        await process(key, msg)
                    except Exception:
                        # `process` settles every message itself; reaching here is a bug.
                        # The message stays held (a drain hands it back); carry on.
                        log.exception("handling a message to key %r failed", key)
                    if not keyed:
                        break
                    lane = lanes[key]
                    if not lane:
                        del lanes[key]  # the key is idle: nothing of it is kept
                        break
                    msg = lane.popleft()
        except BaseException:
            # Cancelled (a drain past its grace): the messages still held are handed
            # back by the drain; forget this key's lane.
            if keyed:
                lanes.pop(key, None)
            raise
        finally:
            self._runners -= 1

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
