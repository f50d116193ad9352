"""Passivation: live instances idle for `idle_after` are stopped and dropped, and
at most `max_instances` live per worker (least recently used first).

Per message it costs one dict move (recency) and one store (the sweep tick);
nothing at all when the actor's `Passivation` sets neither bound. A key whose
message is running or queued (`busy`) is never passivated.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import TYPE_CHECKING

from .._config import Passivation

if TYPE_CHECKING:
    from ._handling import Handling

__all__ = ["Passivator"]

log = logging.getLogger("actormesh.worker")


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

    def touch(self, key: str) -> None:
        """`key` has a message: most recently used now."""
        instances = self._handling.instances
        instance = instances.pop(key, None)
        if instance is not None:
            instances[key] = instance  # dict order is recency order
        self._last[key] = self._tick

    def forget(self, key: str) -> None:
        self._last.pop(key, None)

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
                await self._handling.passivate(key)

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
                    await self._handling.passivate(key)
