"""The event timeline: the supervisor's events, published to the mesh's events
stream and kept (with every other supervisor's and worker's) for the dashboard."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from dataclasses import dataclass
from typing import Literal

import msgspec
from nats.aio.msg import Msg

from actormesh import ActorMeshError, Event

from ._state import SupervisorState
from ._tasks import TaskSet
from ._views import Slot

__all__ = ["EVENT_TIMEOUT", "TIMELINE", "EventKind", "Timeline", "TimelineEntry"]

log = logging.getLogger("actormesh.supervisor")

_encode = msgspec.json.Encoder().encode
_decode_evt = msgspec.json.Decoder(Event).decode

#: Events kept for the timeline (and read back from the stream at start).
TIMELINE = 1000
#: Seconds an event's publish may take.
EVENT_TIMEOUT = 2.0

#: The events a supervisor records (workers record their own kinds too).
EventKind = Literal["started", "restarted", "adopted", "failed", "escalated", "stopped"]


@dataclass(frozen=True, slots=True)
class TimelineEntry:
    id: int
    event: Event


class Timeline:
    """Make, publish and keep events; hand new ones to listeners (server-sent events)."""

    def __init__(self, state: SupervisorState, tasks: TaskSet) -> None:
        self.state = state
        self.tasks = tasks
        self.entries: deque[TimelineEntry] = deque(maxlen=TIMELINE)
        self._ids = 0
        self._listeners: set[asyncio.Queue[TimelineEntry]] = set()

    def event(
        self, kind: EventKind, *, slot: Slot | None = None, reason: str = "",
        detail: dict[str, str] | None = None,
    ) -> Event:  # fmt: skip
        actor_type = ""
        if slot is not None and (view := self.state.views.get(slot.worker_id)) is not None:
            actor_type = view.hb.actor_type
        return Event(
            kind=kind,
            at=time.time(),
            source=self.state.source,
            actor_type=actor_type,
            worker=slot.worker_id if slot else "",
            group=slot.group if slot else "",
            child=slot.child if slot else "",
            reason=reason,
            detail=detail or {},
        )

    async def publish(self, evt: Event) -> None:
        mesh = self.state.mesh
        if mesh is None:
            return
        try:
            # The whole publish is bounded, not only the wait for its PubAck: with the
            # broker backed up, sending alone can block.
            async with asyncio.timeout(EVENT_TIMEOUT):
                await mesh.publish(self.state.subjects.event(evt.kind), _encode(evt))
        except asyncio.CancelledError:
            raise
        except (ActorMeshError, TimeoutError) as exc:
            # Restarts must not wait on the broker: the event is lost, the log keeps it.
            log.warning(
                "event %s for %s not recorded within %gs: %r",
                evt.kind, evt.worker, EVENT_TIMEOUT, exc,
            )  # fmt: skip

    def publish_soon(self, evt: Event) -> None:
        self.tasks.spawn(self.publish(evt), f"event-{evt.kind}")

    async def on_event(self, msg: Msg) -> None:
        """Every event of the mesh (ours included) as it is stored."""
        try:
            evt = _decode_evt(msg.data)
        except (msgspec.DecodeError, msgspec.ValidationError):
            return
        self.append(evt)

    def append(self, evt: Event) -> None:
        self._ids += 1
        entry = TimelineEntry(self._ids, evt)
        self.entries.append(entry)
        for queue in list(self._listeners):
            with contextlib.suppress(asyncio.QueueFull):
                queue.put_nowait(entry)

    def listen(self) -> asyncio.Queue[TimelineEntry]:
        """A queue that receives every new timeline entry (for server-sent events)."""
        queue: asyncio.Queue[TimelineEntry] = asyncio.Queue(maxsize=1000)
        self._listeners.add(queue)
        return queue

    def unlisten(self, queue: asyncio.Queue[TimelineEntry]) -> None:
        self._listeners.discard(queue)
