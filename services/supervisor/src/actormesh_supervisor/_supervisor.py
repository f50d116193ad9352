"""The supervisor: heartbeats in, OTP restarts out.

`Supervisor` is the facade: it holds the shared state (`_state.py`) and wires
the roles that act on it, each in its own module:

- `_detection.py`: failures are detected three ways (missed heartbeats, a
  process exit, a stalled consumer) and funnelled into one queue per group;
- `_restarts.py`: each group's task applies the group's strategy, restart
  types, intensity and backoff one failure at a time, so two failures of one
  group never race each other's restarts;
- `_escalation.py`: past intensity, a group or the supervisor fails and says so
  (events stream, parent mesh, webhook);
- `_timeline.py`: the events, published and kept for the dashboard;
- `_boot.py`: at start, adopt what runs and start the rest;
- `_split.py`: refuse, then report, a keyed actor served twice on one partition;
- `_history.py`: read the events back, and carry on counting from them.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Coroutine
from typing import Any

import msgspec

from actormesh import Event, Mesh
from actormesh.lowlevel import ControlReply, ControlRequest, ensure_system_streams

from ._backends import Backend, NoneBackend, ProcessBackend
from ._boot import Boot
from ._detection import Detector
from ._docker import DockerBackend
from ._errors import SupervisorError
from ._escalation import Escalator
from ._history import load_events, rebuild
from ._mailboxes import MailboxMonitor
from ._options import SupervisorOptions
from ._restarts import Restarter
from ._split import SplitWatch
from ._state import GroupRuntime, SupervisorState
from ._tasks import STOP_STEP, TaskSet, bounded, cancel_all
from ._timeline import TIMELINE, Timeline, TimelineEntry
from ._tree import TreeRole
from ._views import Slot

__all__ = ["GroupRuntime", "Supervisor", "TimelineEntry", "make_backend"]

log = logging.getLogger("actormesh.supervisor")

_encode = msgspec.json.Encoder().encode
_decode_ctl = msgspec.json.Decoder(ControlReply).decode


def make_backend(options: SupervisorOptions) -> Backend:
    sup = options.meshfile.supervisor
    if sup.backend == "docker":
        return DockerBackend(sup.docker_socket, prefix=options.prefix)
    if sup.backend == "none":
        return NoneBackend()
    return ProcessBackend(options)


class Supervisor(SupervisorState):
    """Supervise the groups of mesh.toml. `await start()`, later `await stop()`.

    The state is inherited (`SupervisorState`); the roles are `detector`,
    `restarter`, `escalator` and `timeline`, all acting on it.
    """

    def __init__(self, options: SupervisorOptions, *, backend: Backend | None = None) -> None:
        super().__init__(options)
        self.backend = backend or make_backend(options)
        self.tasks = TaskSet()
        self.timeline = Timeline(self, self.tasks)
        self.detector = Detector(self, self.backend, self.timeline)
        self.escalator = Escalator(self, self.timeline, self.tasks)
        self.restarter = Restarter(self, self.backend, self.timeline, self.detector, self.escalator)
        self.splits = SplitWatch(self, self.timeline)
        self.backend.bind(self.detector.on_exit)
        self.mailboxes: MailboxMonitor | None = None
        self.stopped = asyncio.Event()
        self._loops: list[asyncio.Task[Any]] = []
        self._subs: list[Any] = []
        self.started_at = time.time()
        #: Its part in a supervision tree across hosts (None when standalone).
        self.tree: TreeRole | None = None

    # -- lifecycle ----------------------------------------------------------------------

    async def start(self) -> None:
        """Connect, rebuild the view, adopt or start every worker, start watching."""
        o = self.options
        options: dict[str, Any] = {}
        if o.nats_creds:
            options["user_credentials"] = o.nats_creds
        self.mesh = mesh = await Mesh.connect(
            o.nats_url, prefix=o.prefix, name=f"supervisor-{self.sup.name}", **options
        )
        mesh.replication = replication = o.meshfile.mesh.replication()
        await ensure_system_streams(
            mesh.js,
            self.subjects,
            replicas=replication.replicas,
            placement_tags=replication.placement_tags,
        )
        # The mesh file's grants (idempotent: only adds), so a deployment without
        # `actormesh up` (compose) gets them too.
        for grant in o.meshfile.grants:
            if grant.tools:
                await mesh.tools.grants.grant(grant.principal, *grant.tools)
            if grant.approval:
                await mesh.tools.grants.grant(grant.principal, *grant.approval, approval=True)
        self.mailboxes = MailboxMonitor(mesh.js, self.subjects, stall_after=self.sup.stall_after)
        self._subs.append(
            await mesh.nc.subscribe(
                self.subjects.heartbeat_all,
                cb=self.detector.on_heartbeat,
                pending_msgs_limit=200_000,
                pending_bytes_limit=256 * 1024 * 1024,
            )
        )
        history = await load_events(mesh.js, self.subjects, limit=TIMELINE)
        for evt in history:
            self.timeline.append(evt)
        self._rebuild(history)
        self._subs.append(
            await mesh.nc.subscribe(f"{o.prefix}.sys.evt.>", cb=self.timeline.on_event)
        )
        for group in self.groups.values():
            self._loop(self.restarter.group_loop(group), f"group-{group.spec.name}")
        await Boot(self, self.backend, self.timeline, self.restarter).run()
        self.status = "running"
        self._loop(self.detector.monitor_loop(), "monitor")
        self._loop(self.detector.mailbox_loop(self.mailboxes), "mailboxes")
        self._loop(self.splits.loop(), "splits")
        log.info(
            "supervisor %s running: %d groups, %d workers, backend %s",
            self.sup.name, len(self.groups), len(self.slots), self.backend.name,
        )  # fmt: skip

    def _loop(self, coro: Coroutine[Any, Any, None], name: str) -> None:
        self._loops.append(self.tasks.spawn(coro, name))

    async def stop(self) -> None:
        """Stop supervising; when the backend spawned the workers, drain every one
        first (SIGTERM, `shutdown_grace`, SIGKILL) in reverse start order."""
        if self.status in ("stopping", "stopped"):
            await self.stopped.wait()
            return
        self.status = "stopping"
        # Every step is bounded: a broker too slow to take a publish or an unsubscribe
        # must not keep the supervisor (and `make up`'s Ctrl-C) from exiting.
        await cancel_all(self._loops, "supervisor loops")
        self._loops.clear()
        if self.backend.spawns_processes:
            await self._drain_workers()
        if self.mesh is not None:
            await self.timeline.publish(
                self.timeline.event(
                    "stopped", reason="supervisor stopped", detail={"scope": "supervisor"}
                )
            )
        await self.tasks.cancel("supervisor tasks")
        await bounded(self.backend.close(), "closing the backend")
        await bounded(self.escalator.close(), "closing the HTTP client")
        if self.mesh is not None:
            for sub in self._subs:
                await bounded(sub.unsubscribe(), "unsubscribing")
            await self.mesh.close(timeout=STOP_STEP)
        self.status = "stopped"
        self.stopped.set()
        log.info("supervisor %s stopped", self.sup.name)

    async def _drain_workers(self) -> None:
        for group in reversed(list(self.groups.values())):
            for child in reversed(group.spec.children):
                slots = [s for s in group.slots if s.child == child.name]
                for s in slots:
                    s.state = "stopping"
                await asyncio.gather(
                    *(self.restarter.terminate(s, child.shutdown_grace) for s in slots)
                )
                for s in slots:
                    s.state = "stopped"
        self.backend.remove_state()

    async def __aenter__(self) -> Supervisor:
        try:
            await self.start()
        except BaseException:
            await self.stop()
            raise
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    # -- the timeline, for the dashboard --------------------------------------------------

    def listen(self) -> asyncio.Queue[TimelineEntry]:
        """A queue that receives every new timeline entry (for server-sent events)."""
        return self.timeline.listen()

    def unlisten(self, queue: asyncio.Queue[TimelineEntry]) -> None:
        self.timeline.unlisten(queue)

    def check(self, now: float) -> None:
        """Declare dead what has missed its heartbeats, timed out starting, or exited."""
        self.detector.check(now)

    def _rebuild(self, history: list[Event]) -> None:
        rebuild(self, history)

    # -- operator actions ---------------------------------------------------------------

    def _require_restarts(self) -> None:
        if not self.backend.can_restart:
            raise SupervisorError(
                f"the `{self.backend.name}` backend observes only: it cannot restart"
            )
        if self.status != "running":
            raise SupervisorError(f"the supervisor is {self.status}")

    def restart_worker(self, worker_id: str) -> None:
        """Queue a graceful restart of one worker (not counted against intensity)."""
        slot = self.slot(worker_id)
        self._require_restarts()
        self.groups[slot.group].queue.put_nowait(lambda: self.restarter.operator_restart(slot))

    def restart_group(self, name: str) -> None:
        """Queue a restart of every worker of a group, in order; clears a failed group."""
        group = self.group(name)
        self._require_restarts()
        group.queue.put_nowait(lambda: self.restarter.operator_restart_group(group))

    async def drain_worker(self, worker_id: str) -> ControlReply:
        """Ask a worker to drain and stop; it is not restarted afterwards."""
        slot: Slot = self.slot(worker_id)
        child = self.child(slot.child)
        slot.drain_requested = True
        reply = await self.control(
            worker_id, ControlRequest(op="drain", grace=child.shutdown_grace)
        )
        if not reply.ok:
            slot.drain_requested = False
        return reply

    async def _request_first(self, subjects: list[str], data: bytes) -> Any:
        from nats.errors import NoRespondersError

        if self.mesh is None:
            raise SupervisorError("not connected")
        for subject in subjects[:-1]:
            with contextlib.suppress(NoRespondersError):
                return await self.mesh.nc.request(subject, data, timeout=2.0)
        return await self.mesh.nc.request(subjects[-1], data, timeout=2.0)

    async def control(self, worker_id: str, request: ControlRequest) -> ControlReply:
        """Send a control request (drain, stop, stats) to any worker."""
        if self.mesh is None:
            raise SupervisorError("not connected")
        # Under its type where its heartbeat names it (a broker with users lets only
        # that type's user answer there); a worker that does not listen there (older)
        # gets the id-only subject.
        view = self.views.get(worker_id)
        subjects = [self.subjects.control(worker_id)]
        if view is not None:
            subjects.insert(0, self.subjects.control_of(view.hb.actor_type, worker_id))
        try:
            msg = await self._request_first(subjects, _encode(request))
        except Exception as exc:
            if isinstance(exc, asyncio.CancelledError):
                raise
            raise SupervisorError(
                f"worker {worker_id} did not answer {request.op}: {exc!r}"
            ) from exc
        return _decode_ctl(msg.data)
