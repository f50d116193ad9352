"""Boot: adopt the workers that already run, start the rest, in start order.

A restarted supervisor must not start a second copy of a worker its
predecessor left running: it adopts what the backend finds, and what
heartbeats within a discovery window, before starting anything.
"""

from __future__ import annotations

import asyncio
import logging
import time

from actormesh.lowlevel import ChildSpec

from ._backends import Backend, Found, pid_runs
from ._errors import BackendError
from ._restarts import Restarter
from ._state import GroupRuntime, SupervisorState
from ._timeline import Timeline
from ._views import Slot

__all__ = ["Boot"]

log = logging.getLogger("actormesh.supervisor")


class Boot:
    def __init__(
        self, state: SupervisorState, backend: Backend, timeline: Timeline, restarter: Restarter
    ) -> None:
        self.state = state
        self.backend = backend
        self.timeline = timeline
        self.restarter = restarter

    async def run(self) -> None:
        child_specs = [c for _, c in self.state.children.values()]
        try:
            found = await self.backend.discover(child_specs)
        except BackendError as exc:
            log.error("the %s backend cannot list workers: %s", self.backend.name, exc)
            found = []
        # Live workers heartbeat within an interval: listen before deciding what to
        # start, so a restarted supervisor does not start a second copy of them.
        window = self.state.sup.discovery_window or 1.5 * self.state.interval
        await asyncio.sleep(window)
        for group in self.state.groups.values():
            for child in group.spec.children:
                await self._boot_child(group, child, found)

    async def _boot_child(self, group: GroupRuntime, child: ChildSpec, found: list[Found]) -> None:
        if self.backend.fixed_slots:
            ids = [f"{child.name}-{n}" for n in range(1, child.replicas + 1)]
        else:
            ids = [f.worker_id for f in found if f.child == child.name]
        by_id = {f.worker_id: f for f in found}
        to_launch: list[Slot] = []
        for worker_id in ids:
            slot = self.state.new_slot(group, child, worker_id)
            adopted = self._adoptable(slot, child, by_id.get(worker_id))
            if adopted is not None:
                self._adopt(slot, adopted)
            elif group.failed or self.state.failed:
                slot.state = "failed"
            elif self.backend.can_restart:
                to_launch.append(slot)
        for slot in to_launch:
            await self.restarter.launch(slot, child, kind="started")
        for slot in to_launch:
            await self.restarter.wait_settled(slot)

    def _adoptable(self, slot: Slot, child: ChildSpec, found: Found | None) -> Found | None:
        if found is not None and found.running:
            return found
        view = self.state.views.get(slot.worker_id)
        if view is None or view.age(time.monotonic()) > self.state.dead_after:
            return None
        hb = view.hb
        if hb.status not in ("running", "starting") or hb.supervisor_child != child.name:
            return None
        if not self.backend.spawns_processes or hb.host != self.state.host:
            # Not a process of ours to signal: watch it by heartbeat alone.
            return Found(worker_id=slot.worker_id, child=child.name)
        if pid_runs(hb.pid, slot.worker_id):
            return Found(worker_id=slot.worker_id, child=child.name, pid=hb.pid)
        return None

    def _adopt(self, slot: Slot, found: Found) -> None:
        slot.generation += 1
        view = self.state.views.get(slot.worker_id)
        # A worker the backend found running but that has not heartbeated yet may be
        # starting (a container just launched): it gets start_timeout, not the few
        # missed heartbeats of a running worker; its first heartbeat makes it running.
        heard = view is not None and view.age(time.monotonic()) <= self.state.dead_after
        slot.state = "running" if heard else "starting"
        slot.adopted = True
        slot.pid = found.pid
        slot.launched_at = time.monotonic()
        slot.launched_wall = 0.0
        slot.settled.set()
        self.backend.adopt(slot, found)
        log.info("adopted %s (pid %s)", slot.worker_id, found.pid or "?")
        self.timeline.publish_soon(
            self.timeline.event(
                "adopted", slot=slot, reason="already running when the supervisor started",
                detail={"pid": str(found.pid or "")},
            )
        )  # fmt: skip
