"""Mailbox views from JetStream stream and consumer info, and stall detection.

A consumer stalls silently when its pulls are lost, or its handlers hang while
the worker's heartbeat task keeps ticking: heartbeats look healthy, messages
pile up. We call it stalled when the mailbox has messages for the consumer but
neither its ack floor nor the handled counters of the type's workers have moved
for `stall_after` seconds while at least one of those workers heartbeats. A
paused consumer (`actormesh pause`) holds its messages on purpose: never a stall.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

import nats.errors
import nats.js.errors
from nats.js import JetStreamContext

from actormesh.lowlevel import Subjects

__all__ = ["MailboxMonitor", "MailboxView"]

log = logging.getLogger("actormesh.supervisor.mailboxes")


@dataclass
class MailboxView:
    actor_type: str
    stream: str
    depth: int = 0
    #: Messages the consumer has not delivered yet.
    pending: int = 0
    #: Delivered and not yet acknowledged.
    ack_pending: int = 0
    redelivered: int = 0
    dead_letters: int = 0
    consumers: int = 0
    ack_floor: int = 0
    exists: bool = False
    error: str = ""
    stalled: bool = False
    #: Its consumer (any partition's) is paused on the server: messages wait.
    paused: bool = False
    #: Seconds without progress while messages waited (0 when progressing).
    stalled_for: float = 0.0
    _progress: tuple[int, int] = (-1, -1)
    _progress_at: float = 0.0

    @property
    def backlog(self) -> int:
        return self.pending + self.ack_pending


class MailboxMonitor:
    def __init__(self, js: JetStreamContext, subjects: Subjects, *, stall_after: float) -> None:
        self.js = js
        self.subjects = subjects
        self.stall_after = stall_after
        self.views: dict[str, MailboxView] = {}

    async def poll(
        self,
        actor_types: Iterable[str],
        progress: Mapping[str, int],
        live: Iterable[str],
        now: float,
    ) -> None:
        live_types = set(live)
        dead_letters = await self._dead_letter_counts()
        for actor_type in sorted(set(actor_types)):
            view = self.views.get(actor_type)
            if view is None:
                view = self.views[actor_type] = MailboxView(
                    actor_type=actor_type, stream=self.subjects.mailbox_stream(actor_type)
                )
            view.dead_letters = dead_letters.get(actor_type, 0)
            await self._refresh(view)
            self._track(view, progress.get(actor_type, 0), actor_type in live_types, now)

    async def _dead_letter_counts(self) -> dict[str, int]:
        try:
            info = await self.js.stream_info(
                self.subjects.dlq_stream, subjects_filter=f"{self.subjects.prefix}.dlq.>"
            )
        except (nats.js.errors.NotFoundError, nats.errors.Error, TimeoutError):
            return {}
        return {
            subject.rsplit(".", 1)[-1]: count
            for subject, count in (info.state.subjects or {}).items()
        }

    async def _refresh(self, view: MailboxView) -> None:
        try:
            info = await self.js.stream_info(view.stream)
            # One consumer per type, or one per partition of a partitioned mailbox.
            consumers = await self.js.consumers_info(view.stream)
        except nats.js.errors.NotFoundError:
            consumers = []
        except (nats.errors.Error, TimeoutError) as exc:
            view.error = f"broker: {exc!r}"
            return
        if not consumers:
            view.exists = False
            view.error = "no mailbox stream or consumer yet"
            return
        view.exists = True
        view.error = ""
        view.depth = info.state.messages
        view.consumers = info.state.consumer_count
        view.pending = sum(c.num_pending or 0 for c in consumers)
        view.ack_pending = sum(c.num_ack_pending or 0 for c in consumers)
        view.redelivered = sum(c.num_redelivered or 0 for c in consumers)
        # A progress signal for stall detection: it moves when any partition acks.
        view.ack_floor = sum(c.ack_floor.stream_seq for c in consumers if c.ack_floor)
        view.paused = any(getattr(c, "paused", False) for c in consumers)

    def _track(self, view: MailboxView, progress: int, live: bool, now: float) -> None:
        key = (view.ack_floor, progress)
        if key != view._progress or view.backlog == 0 or not live or not view.exists or view.paused:
            view._progress = key
            view._progress_at = now
            view.stalled = False
            view.stalled_for = 0.0
            return
        view.stalled_for = now - view._progress_at
        view.stalled = view.stalled_for >= self.stall_after

    def reset(self, actor_type: str, now: float) -> None:
        """After a stall was acted on: give the replacements a full `stall_after`."""
        view = self.views.get(actor_type)
        if view is not None:
            view._progress_at = now
            view.stalled = False
            view.stalled_for = 0.0
