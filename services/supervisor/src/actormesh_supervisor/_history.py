"""Read back the events stream: the timeline, and what a restarted supervisor
needs to carry on counting restarts where its predecessor stopped."""

from __future__ import annotations

import logging
import time

import msgspec
import nats.errors
import nats.js.errors
from nats.js import JetStreamContext
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy

from actormesh import Event
from actormesh.lowlevel import Subjects

from ._state import SupervisorState

__all__ = ["load_events", "rebuild"]

log = logging.getLogger("actormesh.supervisor.history")

_decode = msgspec.json.Decoder(Event).decode


async def load_events(js: JetStreamContext, subjects: Subjects, *, limit: int) -> list[Event]:
    """The last `limit` events of the mesh, oldest first ([] when there are none)."""
    stream = subjects.events_stream
    try:
        info = await js.stream_info(stream)
    except nats.js.errors.NotFoundError:
        return []
    state = info.state
    if state.messages == 0:
        return []
    start = max(state.first_seq, state.last_seq - limit + 1)
    # An ephemeral consumer with no acks: reading history must not disturb anything
    # and must leave nothing behind (the server drops it after inactive_threshold).
    sub = await js.pull_subscribe(
        f"{subjects.prefix}.sys.evt.>",
        stream=stream,
        config=ConsumerConfig(
            deliver_policy=DeliverPolicy.BY_START_SEQUENCE,
            opt_start_seq=start,
            ack_policy=AckPolicy.NONE,
            inactive_threshold=30.0,
            mem_storage=True,
        ),
    )
    events: list[Event] = []
    try:
        while True:
            try:
                batch = await sub.fetch(batch=256, timeout=1.0)
            except (nats.errors.TimeoutError, TimeoutError):
                break
            for msg in batch:
                try:
                    events.append(_decode(msg.data))
                except (msgspec.DecodeError, msgspec.ValidationError):
                    log.debug("skipping an undecodable event on %s", msg.subject)
            last = batch[-1]
            if last.metadata.num_pending == 0 or last.metadata.sequence.stream >= state.last_seq:
                break
    finally:
        try:
            await sub.unsubscribe()
        except nats.errors.Error as exc:
            log.debug("unsubscribing the history reader: %r", exc)
    return events[-limit:]


def rebuild(state: SupervisorState, history: list[Event]) -> None:
    """Carry on from a predecessor that did not stop cleanly: restart windows,
    failed groups and per-worker counters come back from the events stream."""
    mine = _since_clean_stop([e for e in history if e.source == state.source])
    if not mine:
        return
    replay = _Replay(state)
    for e in mine:
        replay.apply(e)
    restarts = replay.finish()
    failed = [g.spec.name for g in state.groups.values() if g.failed]
    log.info(
        "rebuilt from %d events: %d recent restarts%s", len(mine), restarts,
        f"; failed groups: {', '.join(failed)}" if failed else "",
    )  # fmt: skip


def _since_clean_stop(events: list[Event]) -> list[Event]:
    """The events after this supervisor's last clean stop (all when it never stopped)."""
    for i in range(len(events) - 1, -1, -1):
        e = events[i]
        if e.kind == "stopped" and e.detail.get("scope") == "supervisor":
            return events[i + 1 :]
    return events


class _Replay:
    """Apply a predecessor's events, oldest first, to a fresh state."""

    def __init__(self, state: SupervisorState) -> None:
        self.state = state
        self.now_wall, self.now = time.time(), time.monotonic()
        #: group -> restart operation id -> when it happened (monotonic clock):
        #: a one_for_all restart is one operation over several events.
        self.ops: dict[str, dict[str, float]] = {}
        self.counters: dict[str, list[int]] = {}

    def apply(self, e: Event) -> None:
        counters = self.counters.setdefault(e.worker, [0, 0]) if e.worker else [0, 0]
        if e.kind == "restarted":
            counters[0] += 1
            self._restarted(e)
        elif e.kind == "failed":
            counters[1] += 1
        elif e.kind == "escalated":
            self._escalated(e)

    def _restarted(self, e: Event) -> None:
        state = self.state
        if e.detail.get("operator") == "1":
            # An operator's group restart clears the failure and is not counted.
            if e.detail.get("scope") == "group" and e.group in state.groups:
                g = state.groups[e.group]
                g.failed, g.failed_reason = False, ""
                self.ops.pop(e.group, None)
                state.failed, state.failed_reason = False, ""
            return
        op = e.detail.get("op", "")
        if op and e.group:
            self.ops.setdefault(e.group, {})[op] = self.now - (self.now_wall - e.at)

    def _escalated(self, e: Event) -> None:
        state = self.state
        if e.detail.get("scope") == "supervisor":
            state.failed, state.failed_reason = True, e.reason
        elif e.group in state.groups:
            g = state.groups[e.group]
            g.failed, g.failed_reason, g.failed_at = True, e.reason, e.at

    def finish(self) -> int:
        """Seed the restart windows and counters; returns the restarts counted."""
        state = self.state
        all_ops: list[float] = []
        for name, by_op in self.ops.items():
            if name in state.groups:
                state.groups[name].window.restore(by_op.values())
                all_ops.extend(by_op.values())
        state.window.restore(all_ops)
        state.restored = {k: (v[0], v[1]) for k, v in self.counters.items()}
        return len(all_ops)
