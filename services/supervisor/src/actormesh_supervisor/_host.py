"""A host supervisor's side of the tree (`role = "host"`).

It heartbeats its tree to the root (`HostBeat`, every heartbeat interval), hands
each escalation of its own to the root (a request, resent until the root takes
it or the failure is cleared), and obeys the root's orders on its control
subject: restart a group, restart the whole host supervisor, or stop and exit.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
import uuid
from collections.abc import Callable
from typing import Any

import msgspec
from nats.aio.msg import Msg

from actormesh import Event

from ._errors import SupervisorError
from ._snapshot import health_of
from ._supervisor import Supervisor
from ._tasks import TaskSet, bounded
from ._tree import Role, host_name
from ._treewire import (
    HostBeat,
    TreeCommand,
    TreeEscalation,
    TreeGroup,
    TreeReply,
    TreeWorker,
    decode_command,
    decode_reply,
    encode,
)

__all__ = ["HostAgent"]

log = logging.getLogger("actormesh.supervisor.tree")

#: Seconds the root may take to answer one escalation request.
ESCALATION_TIMEOUT = 2.0


class HostAgent:
    """Connects one host supervisor to its root. `start()` after the supervisor's."""

    role: Role = "host"

    def __init__(
        self, sup: Supervisor, *, request_exit: Callable[[int], None],
        dashboard: Callable[[], str] = lambda: "",
    ) -> None:  # fmt: skip
        self.sup = sup
        self.host = host_name(sup.sup)
        self.request_exit = request_exit
        self.dashboard = dashboard
        self.tasks = TaskSet()
        self.started_at = time.time()
        self.beats = 0
        #: Escalations handed to the root and not yet taken by it, by id.
        self.pending: dict[str, TreeEscalation] = {}
        self.taken = 0
        self.last_order: TreeCommand | None = None
        self.last_order_at = 0.0
        self._sub: Any = None
        # Set once the supervisor runs and the control subject listens: before, the
        # root's order (restart this group) would find nobody to take it.
        self._ready = asyncio.Event()
        # Escalations during boot are caught too: the hook is there from the start.
        sup.escalator.hooks.append(self.on_escalated)

    async def start(self) -> None:
        mesh = self.sup.mesh
        if mesh is None:
            raise SupervisorError("the host supervisor is not connected")
        subjects = self.sup.subjects
        self._sub = await mesh.nc.subscribe(subjects.tree_control(self.host), cb=self._on_control)
        self.tasks.spawn(self._beat_loop(), "tree-beats")
        self._ready.set()
        log.info("host supervisor %s in the tree as %r", self.sup.sup.name, self.host)

    async def stop(self) -> None:
        await self.tasks.cancel("tree tasks")
        if self._sub is not None:
            await bounded(self._sub.unsubscribe(), "unsubscribing the tree control subject")
            self._sub = None
        # The last word: the root tells a clean stop from a lost host by it.
        await bounded(self._publish(self.beat("stopped")), "the last tree heartbeat")

    # -- heartbeats ----------------------------------------------------------------------

    async def _beat_loop(self) -> None:
        while True:
            await self._publish(self.beat())
            await asyncio.sleep(self.sup.interval)

    async def _publish(self, beat: HostBeat) -> None:
        mesh = self.sup.mesh
        if mesh is None or not mesh.connected:
            return
        try:
            await mesh.nc.publish(self.sup.subjects.tree_heartbeat(self.host), encode(beat))
            self.beats += 1
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            log.warning("tree heartbeat not sent: %r", exc)

    def beat(self, status: str = "") -> HostBeat:
        sup, now = self.sup, time.monotonic()
        groups = []
        for group in sup.groups.values():
            spec = group.spec
            workers = []
            for slot in group.slots:
                view = sup.views.get(slot.worker_id)
                workers.append(
                    TreeWorker(
                        id=slot.worker_id, child=slot.child, state=slot.state,
                        health=health_of(sup, slot, view, now),
                        actor_type=view.hb.actor_type if view is not None else "",
                        pid=slot.pid or (view.hb.pid if view is not None else None),
                        restarts=slot.restarts, failures=slot.failures,
                        last_failure=slot.last_failure,
                    )
                )  # fmt: skip
            groups.append(
                TreeGroup(
                    name=spec.name, strategy=spec.strategy, intensity=spec.intensity,
                    period=spec.period,
                    status="failed" if group.failed else ("restarting" if group.busy else "ok"),
                    failed_reason=group.failed_reason,
                    restarts_in_window=group.window.count(now), workers=workers,
                )
            )  # fmt: skip
        return HostBeat(
            host=self.host, supervisor=sup.sup.name, pid=os.getpid(),
            started_at=self.started_at, sent_at=time.time(), interval=sup.interval,
            status=status or ("failed" if sup.failed else sup.status),
            failed_reason=sup.failed_reason, intensity=sup.sup.intensity,
            period=sup.sup.period, restarts_in_window=sup.window.count(now),
            backend=sup.backend.name, dashboard=self.dashboard(), groups=groups,
        )  # fmt: skip

    # -- escalation to the root ----------------------------------------------------------

    async def on_escalated(self, evt: Event) -> None:
        """The supervisor's escalator hook: a group or this supervisor gave up."""
        scope = evt.detail.get("scope", "")
        if evt.source != self.sup.source or scope not in ("group", "supervisor"):
            return
        esc = TreeEscalation(
            id=uuid.uuid4().hex, host=self.host, supervisor=self.sup.sup.name,
            scope="group" if scope == "group" else "supervisor",
            group=evt.group, reason=evt.reason, at=evt.at,
        )  # fmt: skip
        self.pending[esc.id] = esc
        # On the side: the group's restart task must not wait for the root.
        self.tasks.spawn(self._deliver(esc), f"escalate-{esc.id[:8]}")

    def _still_failed(self, esc: TreeEscalation) -> bool:
        sup = self.sup
        if not sup.active:
            return False
        if esc.scope == "supervisor":
            return sup.failed
        group = sup.groups.get(esc.group)
        return group is not None and group.failed

    async def _deliver(self, esc: TreeEscalation) -> None:
        """Until the root takes it (it acts once per id), or the failure is cleared."""
        subject = self.sup.subjects.tree_escalation(self.host)
        try:
            await self._ready.wait()
            while self._still_failed(esc):
                if await self._send(subject, esc):
                    self.taken += 1
                    return
                await asyncio.sleep(max(1.0, self.sup.interval))
        finally:
            self.pending.pop(esc.id, None)

    async def _send(self, subject: str, esc: TreeEscalation) -> bool:
        mesh = self.sup.mesh
        if mesh is None:
            return False
        try:
            msg = await mesh.nc.request(subject, encode(esc), timeout=ESCALATION_TIMEOUT)
            reply = decode_reply(msg.data)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            # No root listening (no responders), or it is slow: resent later.
            log.warning("escalation %s not taken by the root yet: %r", esc.id[:8], exc)
            return False
        if not reply.ok:
            log.warning("the root refused escalation %s: %s", esc.id[:8], reply.error)
        return reply.ok

    # -- the root's orders ---------------------------------------------------------------

    async def _on_control(self, msg: Msg) -> None:
        try:
            cmd = decode_command(msg.data)
        except (msgspec.DecodeError, msgspec.ValidationError) as exc:
            await self._reply(msg, TreeReply(ok=False, host=self.host, error=f"bad command: {exc}"))
            return
        try:
            self._apply(cmd)
        except SupervisorError as exc:
            log.warning("the root's %s refused: %s", cmd.op, exc)
            await self._reply(msg, TreeReply(ok=False, host=self.host, error=str(exc)))
            return
        self.last_order, self.last_order_at = cmd, time.time()
        log.warning("the root (%s) ordered %s%s: %s", cmd.by, cmd.op,
                    f" {cmd.group}" if cmd.group else "", cmd.reason)  # fmt: skip
        await self._reply(msg, TreeReply(ok=True, host=self.host))
        if cmd.op == "stop":
            self.request_exit(0)

    def _apply(self, cmd: TreeCommand) -> None:
        sup = self.sup
        if cmd.op == "restart_group":
            sup.restart_group(cmd.group)
        elif cmd.op == "restart":
            if not sup.backend.can_restart or not sup.active:
                raise SupervisorError(f"cannot restart: backend {sup.backend.name}, {sup.status}")
            self.tasks.spawn(self._restart_all(), "tree-restart")

    async def _restart_all(self) -> None:
        """The whole host supervisor: every group, one after the other in start order."""
        for group in list(self.sup.groups.values()):
            done = asyncio.Event()

            async def step(g: Any = group, d: asyncio.Event = done) -> None:
                try:
                    await self.sup.restarter.operator_restart_group(g)
                finally:
                    d.set()

            group.queue.put_nowait(step)
            await done.wait()
        # Restarted whole: its own intensity starts over too.
        self.sup.clear_failed()
        self.sup.window.reset()

    async def _reply(self, msg: Msg, reply: TreeReply) -> None:
        if msg.reply:
            try:
                await msg.respond(encode(reply))
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("cannot answer the root: %r", exc)

    def view(self) -> dict[str, Any]:
        order = self.last_order
        return {
            "role": self.role,
            "host": self.host,
            "escalations_pending": len(self.pending),
            "escalations_taken": self.taken,
            "last_order": (
                {"op": order.op, "group": order.group, "by": order.by, "at": self.last_order_at}
                if order is not None
                else None
            ),
            "hosts": [],
        }
