"""Passivation: live instances idle for `idle_after` are stopped and dropped, and
at most `max_instances` live per worker (least recently used first).

Per message it costs one dict move (recency) and one store (the sweep tick);
nothing at all when the actor's `Passivation` sets neither bound. A key whose
message is running or queued (`busy`) is never passivated.

An operator may also stop one instance now (`stop_now`, the worker's
`passivate` control command); it waits for the key's running and queued
messages to finish, for a bounded time. The last `RECENT` passivated keys are
remembered, so a worker can say which of its instances are passivated.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import OrderedDict
from collections.abc import Callable
from typing import TYPE_CHECKING

from .._config import Passivation

if TYPE_CHECKING:
    from ._handling import Handling

__all__ = ["Passivator"]

log = logging.getLogger("actormesh.worker")

#: Passivated keys remembered for `instances` (bounded memory).
RECENT = 256


class Passivator:
    """Decides which live instances to stop; `Handling` stops them."""

    def __init__(
        self, handling: Handling, policy: Passivation, *, busy: Callable[[str], bool]
    ) -> None:
        self._handling = handling
        self._policy = policy
        self._busy = busy
        self.enabled = policy.idle_after is not None or policy.max_instances is not None
        #: The sweep's tick when each live key last had a message.
        self._last: dict[str, int] = {}
        self._tick = 0
        #: Keys passivated lately, oldest first.
        self.recent: OrderedDict[str, float] = OrderedDict()

    def touch(self, key: str) -> None:
        """`key` has a message: most recently used now."""
        instances = self._handling.instances
        instance = instances.pop(key, None)
        if instance is not None:
            instances[key] = instance  # dict order is recency order
        self._last[key] = self._tick

    def forget(self, key: str) -> None:
        self._last.pop(key, None)

    async def _passivate(self, key: str) -> None:
        await self._handling.passivate(key)
        self.recent.pop(key, None)
        self.recent[key] = time.time()
        while len(self.recent) > RECENT:
            self.recent.popitem(last=False)

    async def stop_now(self, key: str, *, wait: float = 5.0) -> bool | None:
        """Passivate `key`'s live instance once its messages are done.

        True: stopped; None: no live instance here; False: still busy after `wait`
        seconds (messages of the key kept running or arriving).
        """
        deadline = time.monotonic() + wait
        while key in self._handling.instances:
            if not self._busy(key):
                await self._passivate(key)
                return True
            if time.monotonic() >= deadline:
                return False
            await asyncio.sleep(0.02)
        return None

    def passivated_lately(self) -> list[str]:
        """Keys passivated lately and not live again."""
        live = self._handling.instances
        return [k for k in self.recent if k not in live]

    async def admitted(self) -> None:
        """A key became live: passivate the least recently used while over the bound."""
        bound = self._policy.max_instances
        instances = self._handling.instances
        if bound is None or len(instances) <= bound:
            return
        for key in list(instances):
            if len(instances) <= bound:
                return
            if not self._busy(key):
                await self._passivate(key)

    async def sweep_loop(self) -> None:
        idle_after = self._policy.idle_after
        if idle_after is None:
            return
        interval = max(0.05, min(idle_after / 4, 5.0))
        idle_ticks = idle_after / interval
        while True:
            await asyncio.sleep(interval)
            self._tick += 1
            now = self._tick
            # Oldest first: the sweep ends at the first key used recently enough.
            for key in list(self._handling.instances):
                last = self._last.get(key, 0)
                if now - last < idle_ticks:
                    break
                if not self._busy(key):
                    await self._passivate(key)
