"""Background tasks of the supervisor, and the bounded steps of its shutdown."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable
from typing import Any

__all__ = ["STOP_STEP", "TaskSet", "bounded", "cancel_all"]

log = logging.getLogger("actormesh.supervisor")

#: Seconds one step of `stop` may take.
STOP_STEP = 5.0


class TaskSet:
    """Tasks started on the side (event publishes, webhooks, loops), kept until done
    so they are not garbage-collected mid-flight and can be cancelled at stop."""

    def __init__(self) -> None:
        self._tasks: set[asyncio.Task[Any]] = set()

    def spawn(self, coro: Awaitable[Any], name: str) -> asyncio.Task[Any]:
        task: asyncio.Task[Any] = asyncio.ensure_future(coro)
        task.set_name(name)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    async def cancel(self, what: str) -> None:
        await cancel_all(list(self._tasks), what)


async def bounded(step: Awaitable[object], what: str) -> None:
    """Await one step of a shutdown for at most STOP_STEP seconds, whatever it raises."""
    try:
        async with asyncio.timeout(STOP_STEP):
            await step
    except asyncio.CancelledError:
        raise
    except TimeoutError:
        log.warning("stopping: %s took more than %gs; going on without it", what, STOP_STEP)
    except Exception as exc:
        log.warning("stopping: %s failed (%r); going on", what, exc)


async def cancel_all(tasks: list[asyncio.Task[Any]], what: str) -> None:
    """Cancel `tasks` and wait (bounded) until they are done."""
    for task in tasks:
        task.cancel()
    if tasks:
        done, pending = await asyncio.wait(tasks, timeout=STOP_STEP)
        for task in done:
            if not task.cancelled() and task.exception() is not None:
                log.warning("stopping: %s: %s failed: %r", what, task.get_name(), task.exception())
        if pending:
            names = ", ".join(sorted(t.get_name() for t in pending))
            log.warning("stopping: %s still running after %gs: %s", what, STOP_STEP, names)
