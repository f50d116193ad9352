"""Failure detection: missed heartbeats, process exits, stalled consumers.

Each way a worker fails ends in `Detector.fail`, which records the failure and
queues it for the slot's group; the group's restart task (`_restarts.py`) takes
it from there, one failure at a time.
"""

from __future__ import annotations

import asyncio
import logging
import time

import msgspec
from nats.aio.msg import Msg

from actormesh import Heartbeat

from ._backends import Backend
from ._mailboxes import MailboxMonitor
from ._state import Failure, FailureCause, SupervisorState
from ._timeline import Timeline
from ._views import Slot, WorkerView

__all__ = ["FORGET_AFTER", "Detector"]

log = logging.getLogger("actormesh.supervisor")

_decode_hb = msgspec.json.Decoder(Heartbeat).decode

#: Heartbeats of workers nobody supervises are forgotten after this long.
FORGET_AFTER = 600.0


class Detector:
    """Turns heartbeats, exits and mailbox progress into failures."""

    def __init__(self, state: SupervisorState, backend: Backend, timeline: Timeline) -> None:
        self.state = state
        self.backend = backend
        self.timeline = timeline

    # -- heartbeats --------------------------------------------------------------------

    async def on_heartbeat(self, msg: Msg) -> None:
        try:
            hb = _decode_hb(msg.data)
        except (msgspec.DecodeError, msgspec.ValidationError):
            self.state.bad_heartbeats += 1
            return
        self.state.heartbeats += 1
        now = time.monotonic()
        slot = self.state.slots.get(hb.worker)
        if slot is not None and self._stale(slot, hb):
            return
        view = self.state.views.get(hb.worker)
        if view is None:
            self.state.views[hb.worker] = WorkerView(hb, now)
        else:
            view.update(hb, now)
        if slot is None:
            self._adopt_observed(hb, now)
        elif hb.status in ("stopped", "escalated"):
            self._last_word(slot, hb)
        elif slot.state == "starting":
            slot.state = "running"
            slot.pid = slot.pid or hb.pid
            slot.settled.set()
        elif slot.state in ("dead", "failed", "stopped") and not self.backend.can_restart:
            slot.state = "running"  # observe-only: someone else brought it back

    def _adopt_observed(self, hb: Heartbeat, now: float) -> None:
        """A running worker of a supervised child that no discovery listed."""
        state = self.state
        if not (
            self.backend.adopts_by_heartbeat
            and hb.supervisor_child in state.children
            and hb.status == "running"
        ):
            return
        group_spec, child = state.children[hb.supervisor_child]
        slot = state.new_slot(state.groups[group_spec.name], child, hb.worker)
        slot.state = "running"
        slot.adopted = True
        slot.pid = hb.pid
        slot.launched_at = now

    def _last_word(self, slot: Slot, hb: Heartbeat) -> None:
        # Our own child processes report their exit code through the backend a
        # moment later; for the others this heartbeat is the exit.
        if self.backend.spawns_processes and slot.pid and not slot.adopted:
            return
        self.fail(
            slot, cause="exit", abnormal=hb.status != "stopped",
            reason=f"worker reported {hb.status}",
        )  # fmt: skip

    def _stale(self, slot: Slot, hb: Heartbeat) -> bool:
        """A heartbeat from an incarnation older than the slot's current one."""
        if slot.launched_wall and hb.started_at < slot.launched_wall - 0.05:
            return True
        child = self.state.child(slot.child)
        return bool(
            child.actor and slot.pid and not slot.adopted and hb.pid != slot.pid
            and hb.host == self.state.host
        )  # fmt: skip

    # -- exits -------------------------------------------------------------------------

    def on_exit(self, worker_id: str, generation: int, code: int | None) -> None:
        """The backend saw a worker's process end (`code` None: gone, code unknown)."""
        slot = self.state.slots.get(worker_id)
        if slot is None or slot.generation != generation:
            return
        if code is None:
            view = self.state.views.get(worker_id)
            abnormal = view is None or view.hb.status != "stopped"
            reason = "process gone"
        elif code < 0:
            abnormal, reason = True, f"killed by signal {-code}"
        else:
            abnormal, reason = code != 0, f"exited with code {code}"
            if code == 3:
                reason += " (escalated: restart intensity exceeded inside the worker)"
        self.fail(slot, cause="exit", abnormal=abnormal, reason=reason)

    # -- the one way in ----------------------------------------------------------------

    def fail(self, slot: Slot, *, cause: FailureCause, abnormal: bool, reason: str) -> None:
        """Record a failure (or a clean exit) and queue it for the slot's group."""
        state = self.state
        if state.status in ("stopping", "stopped") or not slot.live:
            return
        was_running = slot.state == "running"
        slot.state = "dead"
        slot.settled.set()
        event = None
        if abnormal:
            slot.failures += 1
            slot.last_failure = reason
            slot.last_failure_at = time.time()
            key = (slot.group, slot.child, cause)
            state.failures_total[key] = state.failures_total.get(key, 0) + 1
            if was_running:
                state.detections.append((cause, time.time()))
            event = self.timeline.event("failed", slot=slot, reason=reason,
                                        detail={"cause": cause})  # fmt: skip
            log.warning("%s failed (%s): %s", slot.worker_id, cause, reason)
        else:
            log.info("%s exited normally: %s", slot.worker_id, reason)
        failure = Failure(slot, slot.generation, cause, abnormal, reason, event)
        state.groups[slot.group].queue.put_nowait(failure)

    # -- the clock ---------------------------------------------------------------------

    async def monitor_loop(self) -> None:
        # Death is noticed at most one tick after the last missed heartbeat was due;
        # a tick over 1,000 workers costs about a millisecond.
        tick = min(0.1, self.state.interval / 10)
        while True:
            await asyncio.sleep(tick)
            self.check(time.monotonic())

    def check(self, now: float) -> None:
        """Declare dead what has missed its heartbeats, timed out starting, or exited."""
        for slot in list(self.state.slots.values()):
            if slot.state == "starting":
                self._check_start(slot, now)
            elif slot.state == "running":
                self._check_running(slot, now)
        views = self.state.views
        for worker_id, view in list(views.items()):
            if worker_id not in self.state.slots and view.age(now) > FORGET_AFTER:
                del views[worker_id]

    def _check_start(self, slot: Slot, now: float) -> None:
        timeout = self.state.sup.start_timeout
        if now - slot.launched_at > timeout:
            self.fail(
                slot, cause="start_timeout", abnormal=True,
                reason=f"no heartbeat within {timeout:g}s of starting",
            )  # fmt: skip

    def _check_running(self, slot: Slot, now: float) -> None:
        state = self.state
        view = state.views.get(slot.worker_id)
        last = max(slot.launched_at, view.last_seen if view is not None else 0.0)
        if now - last > state.dead_after:
            self.fail(
                slot, cause="heartbeat", abnormal=True,
                reason=f"no heartbeat for {now - last:.1f}s "
                f"({state.sup.heartbeat_misses} x {state.interval:g}s missed)",
            )  # fmt: skip
        elif self.backend.alive(slot) is False:
            self.on_exit(slot.worker_id, slot.generation, None)

    # -- stalls ------------------------------------------------------------------------

    async def mailbox_loop(self, mailboxes: MailboxMonitor) -> None:
        poll = min(2.0, max(0.25, self.state.sup.stall_after / 4))
        while True:
            now = time.monotonic()
            types, live, progress = self._mailbox_inputs(now)
            try:
                await mailboxes.poll(types, progress, live, now)
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("mailbox poll failed")
            if self.state.status == "running":
                for actor_type in sorted(live):
                    if mailboxes.views[actor_type].stalled:
                        self._on_stall(mailboxes, actor_type, time.monotonic())
            await asyncio.sleep(poll)

    def _mailbox_inputs(self, now: float) -> tuple[set[str], set[str], dict[str, int]]:
        """Actor types seen, those with a live running worker, and their progress."""
        types: set[str] = set()
        live: set[str] = set()
        progress: dict[str, int] = {}
        for view in self.state.views.values():
            actor_type = view.hb.actor_type
            types.add(actor_type)
            if view.age(now) <= self.state.dead_after and view.hb.status == "running":
                live.add(actor_type)
                progress[actor_type] = progress.get(actor_type, 0) + view.progress
        return types, live, progress

    def _on_stall(self, mailboxes: MailboxMonitor, actor_type: str, now: float) -> None:
        views = self.state.views
        mailbox = mailboxes.views[actor_type]
        ours = [
            s
            for s in self.state.slots.values()
            if s.state == "running"
            and (v := views.get(s.worker_id)) is not None
            and v.hb.actor_type == actor_type
        ]
        # The workers holding messages are the ones stuck; if none says so, all are.
        busy = [s for s in ours if views[s.worker_id].hb.in_flight > 0]
        reason = (
            f"consumer of {actor_type} made no progress for {mailbox.stalled_for:.1f}s "
            f"with {mailbox.backlog} messages waiting"
        )
        log.warning("%s", reason)
        for slot in busy or ours:
            self.fail(slot, cause="stall", abnormal=True, reason=reason)
        mailboxes.reset(actor_type, now)
