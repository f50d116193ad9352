"""The supervisor: heartbeats in, OTP restarts out.

Failures are detected in three ways (missed heartbeats, a process exit, a
stalled consumer) and funnelled into one queue per group, whose task applies
the group's strategy, restart types, intensity and backoff one failure at a
time, so two failures of one group never race each other's restarts.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import time
import uuid
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import msgspec
from nats.aio.msg import Msg

from actormesh import ActorMeshError, Event, Heartbeat, Mesh
from actormesh._mailbox import ensure_system_streams
from actormesh._meshfile import ChildSpec, GroupSpec
from actormesh._subjects import Subjects
from actormesh._wire import ControlReply, ControlRequest

from ._backends import Backend, Found, NoneBackend, ProcessBackend, pid_runs
from ._docker import DockerBackend
from ._errors import BackendError, SupervisorError
from ._history import load_events
from ._mailboxes import MailboxMonitor
from ._options import SupervisorOptions
from ._policy import RestartWindow, affected, backoff_delay, should_restart
from ._views import Slot, WorkerView

__all__ = ["GroupRuntime", "Supervisor", "TimelineEntry", "make_backend"]

log = logging.getLogger("actormesh.supervisor")

_encode = msgspec.json.Encoder().encode
_decode_hb = msgspec.json.Decoder(Heartbeat).decode
_decode_evt = msgspec.json.Decoder(Event).decode
_decode_ctl = msgspec.json.Decoder(ControlReply).decode

#: Events kept for the timeline (and read back from the stream at start).
TIMELINE = 1000
#: Seconds an event's publish may take; a step of `stop` may take STOP_STEP.
EVENT_TIMEOUT = 2.0
STOP_STEP = 5.0
#: Heartbeats of workers nobody supervises are forgotten after this long.
FORGET_AFTER = 600.0


def make_backend(options: SupervisorOptions) -> Backend:
    sup = options.meshfile.supervisor
    if sup.backend == "docker":
        return DockerBackend(sup.docker_socket, prefix=options.prefix)
    if sup.backend == "none":
        return NoneBackend()
    return ProcessBackend(options)


@dataclass(frozen=True, slots=True)
class TimelineEntry:
    id: int
    event: Event


@dataclass(eq=False)
class _Failure:
    slot: Slot
    generation: int
    cause: str
    abnormal: bool
    reason: str
    event: Event | None


_Command = Callable[[], Awaitable[None]]


@dataclass(eq=False)
class GroupRuntime:
    spec: GroupSpec
    window: RestartWindow
    slots: list[Slot] = field(default_factory=list)
    failed: bool = False
    failed_reason: str = ""
    failed_at: float = 0.0
    queue: asyncio.Queue[_Failure | _Command] = field(default_factory=asyncio.Queue)
    #: A failure or command is being handled (restarts may be under way).
    busy: bool = False


class Supervisor:
    """Supervise the groups of mesh.toml. `await start()`, later `await stop()`."""

    def __init__(self, options: SupervisorOptions, *, backend: Backend | None = None) -> None:
        self.options = options
        self.sup = options.meshfile.supervisor
        self.subjects = Subjects(options.prefix)
        self.source = options.source
        self.host = socket.gethostname()
        self.backend = backend or make_backend(options)
        self.backend.bind(self._on_exit)
        self.mesh: Mesh | None = None
        self.status = "starting"
        self.started_at = time.time()
        self.groups: dict[str, GroupRuntime] = {}
        self.children: dict[str, tuple[GroupSpec, ChildSpec]] = {}
        for group in options.meshfile.groups:
            self.groups[group.name] = GroupRuntime(
                spec=group, window=RestartWindow(group.intensity, group.period)
            )
            for child in group.children:
                self.children[child.name] = (group, child)
        self.slots: dict[str, Slot] = {}
        self.views: dict[str, WorkerView] = {}
        self.window = RestartWindow(self.sup.intensity, self.sup.period)
        self.failed = False
        self.failed_reason = ""
        self.mailboxes: MailboxMonitor | None = None
        self.timeline: deque[TimelineEntry] = deque(maxlen=TIMELINE)
        self._timeline_ids = 0
        self._listeners: set[asyncio.Queue[TimelineEntry]] = set()
        self._tasks: set[asyncio.Task[Any]] = set()
        self._loops: list[asyncio.Task[Any]] = []
        self._subs: list[Any] = []
        self._restored: dict[str, tuple[int, int]] = {}
        self._http: aiohttp.ClientSession | None = None
        self.stopped = asyncio.Event()
        # Counters for /metrics and the dashboard.
        self.heartbeats = 0
        self.bad_heartbeats = 0
        self.restarts_total: dict[tuple[str, str], int] = {}
        self.failures_total: dict[tuple[str, str, str], int] = {}
        self.escalations_total: dict[str, int] = {}
        self.detections: deque[tuple[str, float]] = deque(maxlen=200)

    # -- lifecycle ----------------------------------------------------------------

    @property
    def interval(self) -> float:
        return self.sup.heartbeat_interval

    @property
    def dead_after(self) -> float:
        return self.sup.heartbeat_interval * self.sup.heartbeat_misses

    async def start(self) -> None:
        """Connect, rebuild the view, adopt or start every worker, start watching."""
        o = self.options
        options: dict[str, Any] = {}
        if o.nats_creds:
            options["user_credentials"] = o.nats_creds
        self.mesh = await Mesh.connect(
            o.nats_url, prefix=o.prefix, name=f"supervisor-{self.sup.name}", **options
        )
        nc = self.mesh.nc
        await ensure_system_streams(self.mesh.js, self.subjects)
        self.mailboxes = MailboxMonitor(
            self.mesh.js, self.subjects, stall_after=self.sup.stall_after
        )
        self._subs.append(
            await nc.subscribe(
                self.subjects.heartbeat_all,
                cb=self._on_heartbeat,
                pending_msgs_limit=200_000,
                pending_bytes_limit=256 * 1024 * 1024,
            )
        )
        history = await load_events(self.mesh.js, self.subjects, limit=TIMELINE)
        for evt in history:
            self._append(evt)
        self._rebuild(history)
        self._subs.append(await nc.subscribe(f"{o.prefix}.sys.evt.>", cb=self._on_event))
        for group in self.groups.values():
            self._loops.append(self._spawn(self._group_loop(group), f"group-{group.spec.name}"))
        await self._boot()
        self.status = "running"
        self._loops.append(self._spawn(self._monitor_loop(), "monitor"))
        self._loops.append(self._spawn(self._mailbox_loop(), "mailboxes"))
        log.info(
            "supervisor %s running: %d groups, %d workers, backend %s",
            self.sup.name, len(self.groups), len(self.slots), self.backend.name,
        )  # fmt: skip

    async def stop(self) -> None:
        """Stop supervising; with the process backend, drain every worker first
        (SIGTERM, `shutdown_grace`, SIGKILL) in reverse start order."""
        if self.status in ("stopping", "stopped"):
            await self.stopped.wait()
            return
        self.status = "stopping"
        # Every step is bounded: a broker too slow to take a publish or an unsubscribe
        # must not keep the supervisor (and `make up`'s Ctrl-C) from exiting.
        await _cancel_all(self._loops, "supervisor loops")
        self._loops.clear()
        if isinstance(self.backend, ProcessBackend):
            for group in reversed(list(self.groups.values())):
                for child in reversed(group.spec.children):
                    slots = [s for s in group.slots if s.child == child.name]
                    for s in slots:
                        s.state = "stopping"
                    await asyncio.gather(*(self._terminate(s, child.shutdown_grace) for s in slots))
                    for s in slots:
                        s.state = "stopped"
            self.backend.remove_state()
        if self.mesh is not None:
            await self._publish(
                self._event("stopped", reason="supervisor stopped", detail={"scope": "supervisor"})
            )
        await _cancel_all(list(self._tasks), "supervisor tasks")
        await _bounded(self.backend.close(), "closing the backend")
        if self._http is not None:
            await _bounded(self._http.close(), "closing the HTTP client")
        if self.mesh is not None:
            for sub in self._subs:
                await _bounded(sub.unsubscribe(), "unsubscribing")
            await self.mesh.close(timeout=STOP_STEP)
        self.status = "stopped"
        self.stopped.set()
        log.info("supervisor %s stopped", self.sup.name)

    async def __aenter__(self) -> Supervisor:
        try:
            await self.start()
        except BaseException:
            await self.stop()
            raise
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    def _spawn(self, coro: Awaitable[Any], name: str) -> asyncio.Task[Any]:
        task: asyncio.Task[Any] = asyncio.ensure_future(coro)
        task.set_name(name)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    # -- boot: adopt what runs, start the rest ------------------------------------------

    async def _boot(self) -> None:
        child_specs = [c for _, c in self.children.values()]
        try:
            found = await self.backend.discover(child_specs)
        except BackendError as exc:
            log.error("the %s backend cannot list workers: %s", self.backend.name, exc)
            found = []
        # Live workers heartbeat within an interval: listen before deciding what to
        # start, so a restarted supervisor does not start a second copy of them.
        window = self.sup.discovery_window or 1.5 * self.interval
        await asyncio.sleep(window)
        by_id = {f.worker_id: f for f in found}
        for group in self.groups.values():
            for child in group.spec.children:
                if self.backend.fixed_slots:
                    ids = [f"{child.name}-{n}" for n in range(1, child.replicas + 1)]
                else:
                    ids = [f.worker_id for f in found if f.child == child.name]
                to_launch: list[Slot] = []
                for worker_id in ids:
                    slot = self._new_slot(group, child, worker_id)
                    adopted = self._adoptable(slot, child, by_id.get(worker_id))
                    if adopted is not None:
                        self._adopt(slot, adopted)
                    elif group.failed or self.failed:
                        slot.state = "failed"
                    elif self.backend.can_restart:
                        to_launch.append(slot)
                for slot in to_launch:
                    await self._launch(slot, child, kind="started")
                for slot in to_launch:
                    await self._wait_settled(slot)

    def _new_slot(self, group: GroupRuntime, child: ChildSpec, worker_id: str) -> Slot:
        index = sum(1 for s in group.slots if s.child == child.name) + 1
        slot = Slot(worker_id=worker_id, group=group.spec.name, child=child.name, index=index)
        restarts, failures = self._restored.get(worker_id, (0, 0))
        slot.restarts, slot.failures = restarts, failures
        group.slots.append(slot)
        self.slots[worker_id] = slot
        return slot

    def _adoptable(self, slot: Slot, child: ChildSpec, found: Found | None) -> Found | None:
        if found is not None and found.running:
            return found
        view = self.views.get(slot.worker_id)
        if view is None or view.age(time.monotonic()) > self.dead_after:
            return None
        hb = view.hb
        if hb.status not in ("running", "starting") or hb.supervisor_child != child.name:
            return None
        if not isinstance(self.backend, ProcessBackend):
            return Found(worker_id=slot.worker_id, child=child.name)
        if hb.host != self.host:
            # Not ours to signal: watch it by heartbeat alone.
            return Found(worker_id=slot.worker_id, child=child.name)
        if pid_runs(hb.pid, slot.worker_id):
            return Found(worker_id=slot.worker_id, child=child.name, pid=hb.pid)
        return None

    def _adopt(self, slot: Slot, found: Found) -> None:
        slot.generation += 1
        slot.state = "running"
        slot.adopted = True
        slot.pid = found.pid
        slot.launched_at = time.monotonic()
        slot.launched_wall = 0.0
        slot.settled.set()
        self.backend.adopt(slot, found)
        log.info("adopted %s (pid %s)", slot.worker_id, found.pid or "?")
        self._publish_soon(
            self._event(
                "adopted", slot=slot, reason="already running when the supervisor started",
                detail={"pid": str(found.pid or "")},
            )
        )  # fmt: skip

    async def _launch(
        self,
        slot: Slot,
        child: ChildSpec,
        *,
        kind: str,
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
            self._fail(slot, cause="launch", abnormal=True, reason=str(exc))
            return
        # The restart may have taken a while (grace): start the clocks now.
        slot.launched_at = time.monotonic()
        slot.pid = pid
        if kind == "restarted":
            slot.restarts += 1
            key = (slot.group, slot.child)
            self.restarts_total[key] = self.restarts_total.get(key, 0) + 1
        await self._publish(
            self._event(kind, slot=slot, detail={"pid": str(pid or ""), **(detail or {})})
        )

    async def _wait_settled(self, slot: Slot) -> None:
        """Until the slot's first heartbeat, its failure, or the start timeout."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(self.sup.start_timeout + 1.0):
                await slot.settled.wait()

    # -- detection ----------------------------------------------------------------------

    async def _on_heartbeat(self, msg: Msg) -> None:
        try:
            hb = _decode_hb(msg.data)
        except (msgspec.DecodeError, msgspec.ValidationError):
            self.bad_heartbeats += 1
            return
        self.heartbeats += 1
        now = time.monotonic()
        slot = self.slots.get(hb.worker)
        if slot is not None and self._stale(slot, hb):
            return
        view = self.views.get(hb.worker)
        if view is None:
            self.views[hb.worker] = view = WorkerView(hb, now)
        else:
            view.update(hb, now)
        if slot is None:
            if (
                isinstance(self.backend, NoneBackend)
                and hb.supervisor_child in self.children
                and hb.status == "running"
            ):
                group_spec, child = self.children[hb.supervisor_child]
                slot = self._new_slot(self.groups[group_spec.name], child, hb.worker)
                slot.state = "running"
                slot.adopted = True
                slot.pid = hb.pid
                slot.launched_at = now
            return
        if hb.status in ("stopped", "escalated"):
            # The worker's last word. Our own child processes report their exit code
            # through the backend a moment later; for the others this is the exit.
            if isinstance(self.backend, ProcessBackend) and slot.pid and not slot.adopted:
                return
            self._fail(
                slot, cause="exit", abnormal=hb.status != "stopped",
                reason=f"worker reported {hb.status}",
            )  # fmt: skip
            return
        if slot.state == "starting":
            slot.state = "running"
            slot.pid = slot.pid or hb.pid
            slot.settled.set()
        elif slot.state in ("dead", "failed", "stopped") and not self.backend.can_restart:
            slot.state = "running"  # observe-only: someone else brought it back

    def _stale(self, slot: Slot, hb: Heartbeat) -> bool:
        """A heartbeat from an incarnation older than the slot's current one."""
        if slot.launched_wall and hb.started_at < slot.launched_wall - 0.05:
            return True
        _, child = self.children[slot.child]
        return bool(
            child.actor and slot.pid and not slot.adopted and hb.pid != slot.pid
            and hb.host == self.host
        )  # fmt: skip

    def _on_exit(self, worker_id: str, generation: int, code: int | None) -> None:
        slot = self.slots.get(worker_id)
        if slot is None or slot.generation != generation:
            return
        if code is None:
            view = self.views.get(worker_id)
            abnormal = view is None or view.hb.status != "stopped"
            reason = "process gone"
        elif code < 0:
            abnormal, reason = True, f"killed by signal {-code}"
        else:
            abnormal, reason = code != 0, f"exited with code {code}"
            if code == 3:
                reason += " (escalated: restart intensity exceeded inside the worker)"
        self._fail(slot, cause="exit", abnormal=abnormal, reason=reason)

    def _fail(self, slot: Slot, *, cause: str, abnormal: bool, reason: str) -> None:
        """Record a failure (or a clean exit) and queue it for the slot's group."""
        if self.status in ("stopping", "stopped") or not slot.live:
            return
        was_running = slot.state == "running"
        slot.state = "dead"
        slot.settled.set()
        group = self.groups[slot.group]
        event = None
        if abnormal:
            slot.failures += 1
            slot.last_failure = reason
            slot.last_failure_at = time.time()
            key = (slot.group, slot.child, cause)
            self.failures_total[key] = self.failures_total.get(key, 0) + 1
            if was_running:
                self.detections.append((cause, time.time()))
            event = self._event("failed", slot=slot, reason=reason, detail={"cause": cause})
            log.warning("%s failed (%s): %s", slot.worker_id, cause, reason)
        else:
            log.info("%s exited normally: %s", slot.worker_id, reason)
        group.queue.put_nowait(_Failure(slot, slot.generation, cause, abnormal, reason, event))

    async def _monitor_loop(self) -> None:
        # Death is noticed at most one tick after the last missed heartbeat was due;
        # a tick over 1,000 workers costs about a millisecond.
        tick = min(0.1, self.interval / 10)
        while True:
            await asyncio.sleep(tick)
            self.check(time.monotonic())

    def check(self, now: float) -> None:
        """Declare dead what has missed its heartbeats, timed out starting, or exited."""
        for slot in list(self.slots.values()):
            if slot.state == "starting":
                if now - slot.launched_at > self.sup.start_timeout:
                    self._fail(
                        slot, cause="start_timeout", abnormal=True,
                        reason=f"no heartbeat within {self.sup.start_timeout:g}s of starting",
                    )  # fmt: skip
                continue
            if slot.state != "running":
                continue
            view = self.views.get(slot.worker_id)
            last = max(slot.launched_at, view.last_seen if view is not None else 0.0)
            if now - last > self.dead_after:
                self._fail(
                    slot, cause="heartbeat", abnormal=True,
                    reason=f"no heartbeat for {now - last:.1f}s "
                    f"({self.sup.heartbeat_misses} x {self.interval:g}s missed)",
                )  # fmt: skip
            elif self.backend.alive(slot) is False:
                self._on_exit(slot.worker_id, slot.generation, None)
        for worker_id, view in list(self.views.items()):
            if worker_id not in self.slots and view.age(now) > FORGET_AFTER:
                del self.views[worker_id]

    async def _mailbox_loop(self) -> None:
        assert self.mailboxes is not None
        poll = min(2.0, max(0.25, self.sup.stall_after / 4))
        while True:
            now = time.monotonic()
            types: set[str] = set()
            live: set[str] = set()
            progress: dict[str, int] = {}
            for view in self.views.values():
                actor_type = view.hb.actor_type
                types.add(actor_type)
                if view.age(now) <= self.dead_after and view.hb.status == "running":
                    live.add(actor_type)
                    progress[actor_type] = progress.get(actor_type, 0) + view.progress
            try:
                await self.mailboxes.poll(types, progress, live, now)
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("mailbox poll failed")
            if self.status == "running":
                for actor_type in sorted(live):
                    if self.mailboxes.views[actor_type].stalled:
                        self._on_stall(actor_type, time.monotonic())
            await asyncio.sleep(poll)

    def _on_stall(self, actor_type: str, now: float) -> None:
        assert self.mailboxes is not None
        mailbox = self.mailboxes.views[actor_type]
        ours = [
            s
            for s in self.slots.values()
            if s.state == "running"
            and (v := self.views.get(s.worker_id)) is not None
            and v.hb.actor_type == actor_type
        ]
        # The workers holding messages are the ones stuck; if none says so, all are.
        busy = [s for s in ours if self.views[s.worker_id].hb.in_flight > 0]
        reason = (
            f"consumer of {actor_type} made no progress for {mailbox.stalled_for:.1f}s "
            f"with {mailbox.backlog} messages waiting"
        )
        log.warning("%s", reason)
        for slot in busy or ours:
            self._fail(slot, cause="stall", abnormal=True, reason=reason)
        self.mailboxes.reset(actor_type, now)

    # -- restarts -----------------------------------------------------------------------

    async def _group_loop(self, group: GroupRuntime) -> None:
        while True:
            item = await group.queue.get()
            group.busy = True
            try:
                if isinstance(item, _Failure):
                    await self._handle_failure(group, item)
                else:
                    await item()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("group %s: handling failed", group.spec.name)
            finally:
                group.busy = False

    async def _handle_failure(self, group: GroupRuntime, f: _Failure) -> None:
        slot = f.slot
        if slot.generation != f.generation or slot.state != "dead":
            return  # a later restart already replaced that incarnation
        if f.event is not None:
            await self._publish(f.event)
        _, child = self.children[slot.child]
        if slot.drain_requested and not f.abnormal:
            slot.state = "drained"
            return
        if not should_restart(child.restart, abnormal=f.abnormal):
            slot.state = "stopped"
            log.info("%s is %s: not restarted", slot.worker_id, child.restart)
            return
        now = time.monotonic()
        if not self.backend.can_restart:
            if not group.failed and not group.window.allow(now):
                await self._escalate_group(group, slot, f)
            return
        if group.failed or self.failed:
            slot.state = "failed"
            return
        if not group.window.allow(now):
            slot.state = "failed"
            await self._escalate_group(group, slot, f)
            return
        if not self.window.allow(now):
            slot.state = "failed"
            await self._escalate_supervisor(group, slot, f)
            return
        targets = [
            s
            for s in affected(group.spec.strategy, group.slots, slot)
            if s is slot or s.state in ("starting", "running", "dead")
        ]
        if slot.launched_at and now - slot.launched_at >= group.spec.reset_after:
            slot.backoff_level = 0
        slot.backoff_level += 1
        delay = backoff_delay(
            slot.backoff_level,
            minimum=group.spec.backoff_min,
            maximum=group.spec.backoff_max,
            jitter=group.spec.backoff_jitter,
        )
        detail = {
            "op": uuid.uuid4().hex[:12],
            "trigger": slot.worker_id,
            "cause": f.cause,
            "strategy": group.spec.strategy,
            "backoff": f"{delay:.3f}",
        }
        log.info(
            "group %s (%s): restarting %s after %.2fs because %s failed",
            group.spec.name, group.spec.strategy, ", ".join(s.worker_id for s in targets),
            delay, slot.worker_id,
        )  # fmt: skip
        await asyncio.sleep(delay)
        if self.status != "running" and self.status != "starting":
            return
        # A hung-but-alive worker (stall) may still finish or hand back its messages;
        # a dead one is killed at once so it can never come back and double-handle.
        own_grace = child.shutdown_grace if f.cause == "stall" else 0.0
        if targets == [slot]:
            await self._launch(slot, child, kind="restarted", detail=detail,
                               restart_grace=own_grace)  # fmt: skip
            await self._wait_settled(slot)
            return
        for s in reversed(targets):
            _, c = self.children[s.child]
            s.state = "stopping"
            await self._terminate(s, own_grace if s is slot else c.shutdown_grace)
        for order, s in enumerate(targets, 1):
            _, c = self.children[s.child]
            if s is not slot and c.restart == "temporary":
                s.state = "stopped"  # OTP: a temporary child is never restarted
                continue
            await self._launch(
                s, c, kind="restarted", detail={**detail, "order": str(order)},
                restart_grace=None,
            )  # fmt: skip
            await self._wait_settled(s)

    async def _terminate(self, slot: Slot, grace: float) -> None:
        try:
            await self.backend.terminate(slot, grace)
        except BackendError as exc:
            log.error("cannot stop %s: %s", slot.worker_id, exc)

    async def _escalate_group(self, group: GroupRuntime, slot: Slot, f: _Failure) -> None:
        spec = group.spec
        group.failed = True
        group.failed_at = time.time()
        group.failed_reason = (
            f"more than {spec.intensity} restarts within {spec.period:g}s; "
            f"last: {slot.worker_id} {f.reason}"
        )
        key = spec.name
        self.escalations_total[key] = self.escalations_total.get(key, 0) + 1
        log.error("group %s failed: %s; escalating", spec.name, group.failed_reason)
        for s in group.slots:
            if s.state == "dead":
                s.state = "failed"
        await self._escalate(
            self._event(
                "escalated", slot=slot, reason=group.failed_reason,
                detail={
                    "scope": "group", "strategy": spec.strategy,
                    "intensity": str(spec.intensity), "period": f"{spec.period:g}",
                    "supervisor": self.sup.name, "prefix": self.options.prefix,
                },
            )
        )  # fmt: skip

    async def _escalate_supervisor(self, group: GroupRuntime, slot: Slot, f: _Failure) -> None:
        self.failed = True
        self.failed_reason = (
            f"more than {self.sup.intensity} restarts within {self.sup.period:g}s across "
            f"all groups; last: {slot.worker_id} {f.reason}"
        )
        self.escalations_total[""] = self.escalations_total.get("", 0) + 1
        log.error("supervisor %s failed: %s; escalating", self.sup.name, self.failed_reason)
        await self._escalate(
            self._event(
                "escalated", slot=slot, reason=self.failed_reason,
                detail={
                    "scope": "supervisor", "intensity": str(self.sup.intensity),
                    "period": f"{self.sup.period:g}", "supervisor": self.sup.name,
                    "prefix": self.options.prefix,
                },
            )
        )  # fmt: skip

    async def _escalate(self, evt: Event) -> None:
        """To our own events stream, the parent supervisor's mesh, and the webhook."""
        await self._publish(evt)
        parent = self.sup.parent_prefix
        if parent and self.mesh is not None:
            subject = Subjects(parent).event("escalated")
            data = _encode(evt)
            try:
                await self.mesh.publish(subject, data, timeout=2.0)
            except asyncio.CancelledError:
                raise
            except ActorMeshError as exc:
                # No events stream there (yet): a parent listening still hears it.
                log.warning("escalation to %s not stored (%s): sent without storage",
                            subject, exc)  # fmt: skip
                with contextlib.suppress(Exception):
                    await self.mesh.nc.publish(subject, data)
        if self.sup.webhook:
            self._spawn(self._post_webhook(evt), "webhook")

    async def _post_webhook(self, evt: Event) -> None:
        if self._http is None:
            self._http = aiohttp.ClientSession()
        body = _encode(evt)
        for attempt in range(1, 4):
            try:
                async with self._http.post(
                    self.sup.webhook,
                    data=body,
                    headers={"Content-Type": "application/json"},
                    timeout=aiohttp.ClientTimeout(total=5.0),
                ) as resp:
                    if resp.status < 300:
                        return
                    log.warning("webhook answered %d (attempt %d)", resp.status, attempt)
            except (aiohttp.ClientError, TimeoutError) as exc:
                log.warning("webhook failed (attempt %d): %r", attempt, exc)
            await asyncio.sleep(attempt)
        log.error("escalation not delivered to the webhook after 3 attempts")

    # -- operator actions ---------------------------------------------------------------

    def slot(self, worker_id: str) -> Slot:
        try:
            return self.slots[worker_id]
        except KeyError:
            raise SupervisorError(f"no supervised worker {worker_id!r}") from None

    def group(self, name: str) -> GroupRuntime:
        try:
            return self.groups[name]
        except KeyError:
            raise SupervisorError(f"no group {name!r}") from None

    def _require_restarts(self) -> None:
        if not self.backend.can_restart:
            raise SupervisorError("the `none` backend observes only: it cannot restart")
        if self.status != "running":
            raise SupervisorError(f"the supervisor is {self.status}")

    def restart_worker(self, worker_id: str) -> None:
        """Queue a graceful restart of one worker (not counted against intensity)."""
        slot = self.slot(worker_id)
        self._require_restarts()
        self.groups[slot.group].queue.put_nowait(lambda: self._operator_restart(slot))

    async def _operator_restart(self, slot: Slot) -> None:
        _, child = self.children[slot.child]
        grace = child.shutdown_grace if slot.live else 0.0
        if slot.live:
            slot.state = "stopping"
        slot.backoff_level = 0
        await self._launch(
            slot, child, kind="restarted", restart_grace=grace,
            detail={"operator": "1", "trigger": slot.worker_id, "cause": "operator"},
        )  # fmt: skip
        await self._wait_settled(slot)

    def restart_group(self, name: str) -> None:
        """Queue a restart of every worker of a group, in order; clears a failed group."""
        group = self.group(name)
        self._require_restarts()
        group.queue.put_nowait(lambda: self._operator_restart_group(group))

    async def _operator_restart_group(self, group: GroupRuntime) -> None:
        group.failed = False
        group.failed_reason = ""
        group.window.reset()
        if self.failed:
            self.failed = False
            self.failed_reason = ""
            self.window.reset()
        for s in reversed(group.slots):
            if s.live:
                s.state = "stopping"
                _, c = self.children[s.child]
                await self._terminate(s, c.shutdown_grace)
        detail = {"operator": "1", "scope": "group", "op": uuid.uuid4().hex[:12],
                  "cause": "operator", "strategy": group.spec.strategy}  # fmt: skip
        for order, s in enumerate(group.slots, 1):
            _, c = self.children[s.child]
            s.backoff_level = 0
            await self._launch(s, c, kind="restarted", detail={**detail, "order": str(order)})
            await self._wait_settled(s)

    async def drain_worker(self, worker_id: str) -> ControlReply:
        """Ask a worker to drain and stop; it is not restarted afterwards."""
        slot = self.slot(worker_id)
        _, child = self.children[slot.child]
        slot.drain_requested = True
        reply = await self.control(
            worker_id, ControlRequest(op="drain", grace=child.shutdown_grace)
        )
        if not reply.ok:
            slot.drain_requested = False
        return reply

    async def control(self, worker_id: str, request: ControlRequest) -> ControlReply:
        """Send a control request (drain, stop, stats) to any worker."""
        if self.mesh is None:
            raise SupervisorError("not connected")
        try:
            msg = await self.mesh.nc.request(
                self.subjects.control(worker_id), _encode(request), timeout=2.0
            )
        except Exception as exc:
            if isinstance(exc, asyncio.CancelledError):
                raise
            raise SupervisorError(
                f"worker {worker_id} did not answer {request.op}: {exc!r}"
            ) from exc
        return _decode_ctl(msg.data)

    # -- events ------------------------------------------------------------------------

    def _event(
        self, kind: str, *, slot: Slot | None = None, reason: str = "",
        detail: dict[str, str] | None = None,
    ) -> Event:  # fmt: skip
        actor_type = ""
        if slot is not None and (view := self.views.get(slot.worker_id)) is not None:
            actor_type = view.hb.actor_type
        return Event(
            kind=kind,
            at=time.time(),
            source=self.source,
            actor_type=actor_type,
            worker=slot.worker_id if slot else "",
            group=slot.group if slot else "",
            child=slot.child if slot else "",
            reason=reason,
            detail=detail or {},
        )

    async def _publish(self, evt: Event) -> None:
        if self.mesh is None:
            return
        try:
            # The whole publish is bounded, not only the wait for its PubAck: with the
            # broker backed up, sending alone can block.
            async with asyncio.timeout(EVENT_TIMEOUT):
                await self.mesh.publish(self.subjects.event(evt.kind), _encode(evt))
        except asyncio.CancelledError:
            raise
        except (ActorMeshError, TimeoutError) as exc:
            # Restarts must not wait on the broker: the event is lost, the log keeps it.
            log.warning(
                "event %s for %s not recorded within %gs: %r",
                evt.kind, evt.worker, EVENT_TIMEOUT, exc,
            )  # fmt: skip

    def _publish_soon(self, evt: Event) -> None:
        self._spawn(self._publish(evt), f"event-{evt.kind}")

    async def _on_event(self, msg: Msg) -> None:
        try:
            evt = _decode_evt(msg.data)
        except (msgspec.DecodeError, msgspec.ValidationError):
            return
        self._append(evt)

    def _append(self, evt: Event) -> None:
        self._timeline_ids += 1
        entry = TimelineEntry(self._timeline_ids, evt)
        self.timeline.append(entry)
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

    def _rebuild(self, history: list[Event]) -> None:
        """Carry on from a predecessor that did not stop cleanly: restart windows,
        failed groups and per-worker counters come back from the events stream."""
        mine = [e for e in history if e.source == self.source]
        for i in range(len(mine) - 1, -1, -1):
            if mine[i].kind == "stopped" and mine[i].detail.get("scope") == "supervisor":
                mine = mine[i + 1 :]
                break
        if not mine:
            return
        now_wall, now = time.time(), time.monotonic()
        ops: dict[str, dict[str, float]] = {}
        restored: dict[str, list[int]] = {}
        for e in mine:
            counters = restored.setdefault(e.worker, [0, 0]) if e.worker else [0, 0]
            if e.kind == "restarted":
                counters[0] += 1
                if e.detail.get("operator") == "1":
                    if e.detail.get("scope") == "group" and e.group in self.groups:
                        g = self.groups[e.group]
                        g.failed, g.failed_reason = False, ""
                        ops.pop(e.group, None)
                        self.failed, self.failed_reason = False, ""
                    continue
                op = e.detail.get("op", "")
                if op and e.group:
                    ops.setdefault(e.group, {})[op] = now - (now_wall - e.at)
            elif e.kind == "failed":
                counters[1] += 1
            elif e.kind == "escalated":
                if e.detail.get("scope") == "supervisor":
                    self.failed, self.failed_reason = True, e.reason
                elif e.group in self.groups:
                    g = self.groups[e.group]
                    g.failed, g.failed_reason, g.failed_at = True, e.reason, e.at
        all_ops: list[float] = []
        for name, by_op in ops.items():
            if name in self.groups:
                self.groups[name].window.restore(by_op.values())
                all_ops.extend(by_op.values())
        self.window.restore(all_ops)
        self._restored = {k: (v[0], v[1]) for k, v in restored.items()}
        failed = [g.spec.name for g in self.groups.values() if g.failed]
        log.info(
            "rebuilt from %d events: %d recent restarts%s", len(mine), len(all_ops),
            f"; failed groups: {', '.join(failed)}" if failed else "",
        )  # fmt: skip


async def _bounded(step: Awaitable[object], what: str) -> None:
    """Await one step of a shutdown for at most STOP_STEP seconds, whatever it raises."""
    try:
        async with asyncio.timeout(STOP_STEP):
            await step
    except asyncio.CancelledError:
        raise
    except TimeoutError:
        log.warning("stopping: %s took more than %gs; going on without it", what, STOP_STEP)
    except Exception as exc:
        log.warning("stopping: %s failed (%r); going on", what, exc)


async def _cancel_all(tasks: list[asyncio.Task[Any]], what: str) -> None:
    """Cancel `tasks` and wait (bounded) until they are done."""
    for task in tasks:
        task.cancel()
    if tasks:
        done, pending = await asyncio.wait(tasks, timeout=STOP_STEP)
        for task in done:
            if not task.cancelled() and task.exception() is not None:
                log.warning("stopping: %s: %s failed: %r", what, task.get_name(), task.exception())
        if pending:
            names = ", ".join(sorted(t.get_name() for t in pending))
            log.warning("stopping: %s still running after %gs: %s", what, STOP_STEP, names)
