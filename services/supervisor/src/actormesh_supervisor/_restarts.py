"""Restart strategies: one task per group applies, one failure at a time, the
group's strategy (one_for_one, one_for_all, rest_for_one), its children's restart
types, the restart intensity of the group and of the supervisor, and backoff.

The rules themselves are pure functions in `_policy.py`; this module applies
them to slots through the backend. Operator restarts go through the same queue,
so they never race a restart under way.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import logging
import time
import uuid
from typing import Literal

from actormesh.lowlevel import ChildSpec

from ._backends import Backend
from ._detection import Detector
from ._errors import BackendError
from ._escalation import Escalator
from ._policy import affected, backoff_delay, should_restart
from ._state import Failure, GroupRuntime, SupervisorState
from ._timeline import Timeline
from ._views import Slot

__all__ = ["Restarter", "Verdict"]

log = logging.getLogger("actormesh.supervisor")


class Verdict(enum.Enum):
    """What a failure leads to, decided before anything is done about it."""

    #: The operator asked it to drain, and it stopped cleanly.
    DRAINED = "drained"
    #: Its restart type says no (temporary; transient after a clean exit).
    NOT_RESTARTED = "not_restarted"
    #: Observe-only backend, within intensity: counted, nothing more.
    OBSERVED = "observed"
    #: Its group (or the supervisor) already failed: left alone.
    LEFT_FAILED = "left_failed"
    #: One restart too many for the group: the group fails and escalates.
    GROUP_OVER_INTENSITY = "group_over_intensity"
    #: One restart too many across all groups: the supervisor fails and escalates.
    SUPERVISOR_OVER_INTENSITY = "supervisor_over_intensity"
    RESTART = "restart"


class Restarter:
    def __init__(
        self,
        state: SupervisorState,
        backend: Backend,
        timeline: Timeline,
        detector: Detector,
        escalator: Escalator,
    ) -> None:
        self.state = state
        self.backend = backend
        self.timeline = timeline
        self.detector = detector
        self.escalator = escalator

    # -- one slot ----------------------------------------------------------------------

    async def launch(
        self,
        slot: Slot,
        child: ChildSpec,
        *,
        kind: Literal["started", "restarted"],
        detail: dict[str, str] | None = None,
        restart_grace: float | None = None,
    ) -> None:
        """(Re)start a slot: a new generation, so notices about the old one are ignored."""
        slot.generation += 1
        slot.state = "starting"
        slot.settled = asyncio.Event()
        slot.adopted = False
        slot.drain_requested = False
        slot.pid = None
        slot.launched_at = time.monotonic()
        slot.launched_wall = time.time()
        try:
            if restart_grace is None:
                pid = await self.backend.launch(slot, child)
            else:
                pid = await self.backend.restart(slot, child, restart_grace)
        except BackendError as exc:
            log.error("cannot start %s: %s", slot.worker_id, exc)
            self.detector.fail(slot, cause="launch", abnormal=True, reason=str(exc))
            return
        # The restart may have taken a while (grace): start the clocks now.
        slot.launched_at = time.monotonic()
        slot.pid = pid
        if kind == "restarted":
            slot.restarts += 1
            key = (slot.group, slot.child)
            self.state.restarts_total[key] = self.state.restarts_total.get(key, 0) + 1
        await self.timeline.publish(
            self.timeline.event(kind, slot=slot, detail={"pid": str(pid or ""), **(detail or {})})
        )

    async def wait_settled(self, slot: Slot) -> None:
        """Until the slot's first heartbeat, its failure, or the start timeout."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(self.state.sup.start_timeout + 1.0):
                await slot.settled.wait()

    async def terminate(self, slot: Slot, grace: float) -> None:
        try:
            await self.backend.terminate(slot, grace)
        except BackendError as exc:
            log.error("cannot stop %s: %s", slot.worker_id, exc)

    # -- the group's queue -------------------------------------------------------------

    async def group_loop(self, group: GroupRuntime) -> None:
        while True:
            item = await group.queue.get()
            group.busy = True
            try:
                if isinstance(item, Failure):
                    await self.handle(group, item)
                else:
                    await item()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("group %s: handling failed", group.spec.name)
            finally:
                group.busy = False

    async def handle(self, group: GroupRuntime, f: Failure) -> None:
        slot = f.slot
        if slot.generation != f.generation or slot.state != "dead":
            return  # a later restart already replaced that incarnation
        if f.event is not None:
            await self.timeline.publish(f.event)
        child = self.state.child(slot.child)
        now = time.monotonic()
        verdict = self.verdict(group, f, child, now)
        match verdict:
            case Verdict.DRAINED:
                slot.state = "drained"
            case Verdict.NOT_RESTARTED:
                slot.state = "stopped"
                log.info("%s is %s: not restarted", slot.worker_id, child.restart)
            case Verdict.OBSERVED:
                pass
            case Verdict.LEFT_FAILED:
                slot.state = "failed"
            case Verdict.GROUP_OVER_INTENSITY:
                slot.state = "failed"
                await self.escalator.group_failed(group, slot, f)
            case Verdict.SUPERVISOR_OVER_INTENSITY:
                slot.state = "failed"
                await self.escalator.supervisor_failed(slot, f)
            case Verdict.RESTART:
                await self._restart(group, f, child, now)

    def verdict(self, group: GroupRuntime, f: Failure, child: ChildSpec, now: float) -> Verdict:
        """Decide; a restart within intensity is recorded in the windows as it is allowed."""
        if f.slot.drain_requested and not f.abnormal:
            return Verdict.DRAINED
        if not should_restart(child.restart, abnormal=f.abnormal):
            return Verdict.NOT_RESTARTED
        if not self.backend.can_restart:
            # Observe-only still counts intensity, to escalate what nobody restarts.
            if not group.failed and not group.window.allow(now):
                return Verdict.GROUP_OVER_INTENSITY
            return Verdict.OBSERVED
        if group.failed or self.state.failed:
            return Verdict.LEFT_FAILED
        if not group.window.allow(now):
            return Verdict.GROUP_OVER_INTENSITY
        if not self.state.window.allow(now):
            return Verdict.SUPERVISOR_OVER_INTENSITY
        return Verdict.RESTART

    async def _restart(self, group: GroupRuntime, f: Failure, child: ChildSpec, now: float) -> None:
        slot, spec = f.slot, group.spec
        targets = [
            s
            for s in affected(spec.strategy, group.slots, slot)
            if s is slot or s.state in ("starting", "running", "dead")
        ]
        if slot.launched_at and now - slot.launched_at >= spec.reset_after:
            slot.backoff_level = 0
        slot.backoff_level += 1
        delay = backoff_delay(
            slot.backoff_level,
            minimum=spec.backoff_min,
            maximum=spec.backoff_max,
            jitter=spec.backoff_jitter,
        )
        detail = {
            "op": uuid.uuid4().hex[:12],
            "trigger": slot.worker_id,
            "cause": f.cause,
            "strategy": spec.strategy,
            "backoff": f"{delay:.3f}",
        }
        # A permanent child restarts after a normal exit too (a drain asked of it).
        why = "failed" if f.abnormal else "exited and is permanent"
        log.info(
            "group %s (%s): restarting %s after %.2fs because %s %s",
            spec.name, spec.strategy, ", ".join(s.worker_id for s in targets),
            delay, slot.worker_id, why,
        )  # fmt: skip
        await asyncio.sleep(delay)
        if not self.state.active:
            return
        # A hung-but-alive worker (stall) may still finish or hand back its messages;
        # a dead one is killed at once so it can never come back and double-handle.
        own_grace = child.shutdown_grace if f.cause == "stall" else 0.0
        if targets == [slot]:
            await self.launch(slot, child, kind="restarted", detail=detail,
                              restart_grace=own_grace)  # fmt: skip
            await self.wait_settled(slot)
            return
        for s in reversed(targets):
            s.state = "stopping"
            grace = own_grace if s is slot else self.state.child(s.child).shutdown_grace
            await self.terminate(s, grace)
        for order, s in enumerate(targets, 1):
            c = self.state.child(s.child)
            if s is not slot and c.restart == "temporary":
                s.state = "stopped"  # OTP: a temporary child is never restarted
                continue
            await self.launch(s, c, kind="restarted", detail={**detail, "order": str(order)})
            await self.wait_settled(s)

    # -- operator actions (queued like failures) ---------------------------------------

    async def operator_restart(self, slot: Slot) -> None:
        child = self.state.child(slot.child)
        grace = child.shutdown_grace if slot.live else 0.0
        if slot.live:
            slot.state = "stopping"
        slot.backoff_level = 0
        await self.launch(
            slot, child, kind="restarted", restart_grace=grace,
            detail={"operator": "1", "trigger": slot.worker_id, "cause": "operator"},
        )  # fmt: skip
        await self.wait_settled(slot)

    async def operator_restart_group(self, group: GroupRuntime) -> None:
        group.failed = False
        group.failed_reason = ""
        group.window.reset()
        self.state.clear_failed()
        for s in reversed(group.slots):
            if s.live:
                s.state = "stopping"
                await self.terminate(s, self.state.child(s.child).shutdown_grace)
        detail = {"operator": "1", "scope": "group", "op": uuid.uuid4().hex[:12],
                  "cause": "operator", "strategy": group.spec.strategy}  # fmt: skip
        for order, s in enumerate(group.slots, 1):
            s.backoff_level = 0
            c = self.state.child(s.child)
            await self.launch(s, c, kind="restarted", detail={**detail, "order": str(order)})
            await self.wait_settled(s)
