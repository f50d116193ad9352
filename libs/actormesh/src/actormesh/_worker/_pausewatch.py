"""Whether this worker's mailbox consumer is paused on the server.

The pause is the server's (JetStream consumer pause, see `actormesh._lifecycle`):
a paused consumer answers our pulls with idle heartbeats only, so the pull loop
needs no change. We only need to know, to say so in heartbeats and stats. The
consumer's info tells us at start and after a reconnect; the server's pause
advisory tells us as it happens; a pause with an end time ends by the clock.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from typing import TYPE_CHECKING, Any

from .._lifecycle import parse_until

if TYPE_CHECKING:
    from nats.aio.msg import Msg

    from ._facade import Worker

__all__ = ["PauseWatch"]

log = logging.getLogger("actormesh.worker")


class PauseWatch:
    def __init__(self, worker: Worker) -> None:
        self._w = worker
        self._paused = False
        #: Unix time a timed pause ends; None when paused until resumed (or not paused).
        self._until: float | None = None
        self._sub: Any = None

    @property
    def paused(self) -> bool:
        if self._paused and self._until is not None and time.time() >= self._until:
            self._paused = False  # the server resumed it by its clock
            self._until = None
        return self._paused

    def _names(self) -> tuple[str, str]:
        w = self._w
        subjects = w.mesh.subjects
        return subjects.mailbox_stream(w.actor_type), subjects.consumer(w.actor_type, w.partition)

    async def start(self) -> None:
        stream, durable = self._names()
        try:
            self._sub = await self._w.mesh.nc.subscribe(
                f"$JS.EVENT.ADVISORY.CONSUMER.PAUSE.{stream}.{durable}", cb=self._on_advisory
            )
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # a broker user without advisory rights: info only
            log.debug("not watching pause advisories: %r", exc)
        await self.refresh()

    async def refresh(self) -> None:
        """Read the pause from the consumer's info (at start, after a reconnect)."""
        stream, durable = self._names()
        try:
            info = await self._w.mesh.js.consumer_info(stream, durable)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            log.debug("pause state not read: %r", exc)
            return
        self._set(bool(getattr(info, "paused", False)), info.config.pause_until)

    def _set(self, paused: bool, until: str | None) -> None:
        if paused != self._paused:
            log.info("mailbox consumer of %s %s", self._w.actor_type,
                     "paused: messages wait in the mailbox" if paused else "resumed")  # fmt: skip
        self._paused = paused
        self._until = parse_until(until) if paused else None

    async def _on_advisory(self, msg: Msg) -> None:
        try:
            data = json.loads(msg.data)
            self._set(bool(data.get("paused")), data.get("pause_until"))
        except (ValueError, AttributeError) as exc:
            log.debug("bad pause advisory: %r", exc)

    async def stop(self) -> None:
        if self._sub is not None:
            sub, self._sub = self._sub, None
            with contextlib.suppress(Exception):
                await sub.unsubscribe()
