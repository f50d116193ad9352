"""From the pull to a handler: per-key lanes (one message at a time per key),
keyless messages run side by side, all under the worker's concurrency bound."""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any

from nats.aio.msg import Msg

from .._subjects import KEYLESS
from ._settle import Settler

__all__ = ["Dispatcher", "key_of"]


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
        self._keyless = keyless
        self._settler = settler
        self._process = process
        self._accepting = accepting
        self._sem = asyncio.Semaphore(concurrency)
        self._lanes: dict[str, deque[Msg]] = {}
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
        key = key_of(self._base, msg)
        if self._keyless:
            self.spawn(self._run_one(key, msg), "msg")
            return
        lane = self._lanes.get(key)
        if lane is None:
            self._lanes[key] = deque((msg,))
            self.spawn(self._run_lane(key), "msg-lane")
        else:
            lane.append(msg)

    def key_of(self, msg: Msg) -> str:
        return key_of(self._base, msg)

    async def _run_one(self, key: str, msg: Msg) -> None:
        async with self._sem:
            await self._process(key, msg)

    async def _run_lane(self, key: str) -> None:
        lane = self._lanes[key]
        try:
            while lane:
                async with self._sem:
                    await self._process(key, lane[0])
                lane.popleft()
        finally:
            if self._lanes.get(key) is lane:
                del self._lanes[key]

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
