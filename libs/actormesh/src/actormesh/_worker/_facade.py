"""`Worker`, the facade: its identity, counters and lifecycle (start, drain, stop,
signals). Each stage of a message's flow is a collaborator of its own:

    PullConsumer → Dispatcher (lanes) → Handling (decode, interceptors, handler)
    → Settler (ack / nak / in-progress) or Failures (supervision, dead letters);
    Replies answer asks; StatusReporter sends heartbeats and events and answers
    control requests.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import os
import signal
import socket
import time
import uuid
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any, Literal

from .. import _nats
from .._actor import Actor, ActorSpec, spec_of
from .._config import WorkerConfig
from .._consumer import PullConsumer
from .._errors import ConfigError
from .._interceptor import WorkerInterceptor
from .._mailbox import ensure_mailbox, ensure_system_streams
from .._subjects import LEVELS
from .._wire import HealthReport, Heartbeat, ToolStats, WorkerStats
from ._containment import Containment
from ._dispatch import Dispatcher
from ._failures import Failures
from ._handling import Handling
from ._micro import MicroService
from ._pausewatch import PauseWatch
from ._priority import PriorityDispatcher, level_bases
from ._replies import Replies
from ._settle import Settler
from ._status import StatusReporter

if TYPE_CHECKING:
    from nats.aio.msg import Msg

    from .._mesh import Mesh

__all__ = ["Worker", "WorkerStatus"]

log = logging.getLogger("actormesh.worker")

#: starting → running → draining → stopped; `escalated` replaces draining and
#: stopped when the restart intensity was exceeded.
WorkerStatus = Literal["starting", "running", "draining", "escalated", "stopped"]


class Worker:
    """Serve one actor type. `await worker.run()` returns the process exit code.

    `interceptors` wrap this worker's message handling (see
    `actormesh.WorkerInterceptor`); those in `mesh.interceptors` come first.
    """

    def __init__(
        self,
        mesh: Mesh,
        actor: type[Actor],
        config: WorkerConfig | None = None,
        *,
        interceptors: Iterable[WorkerInterceptor] = (),
    ) -> None:
        self.mesh = mesh
        self.spec: ActorSpec = spec_of(actor)
        self.config = config or WorkerConfig()
        self.actor_type = self.spec.actor_type
        host = socket.gethostname().split(".")[0].replace("-", "_")[:20] or "host"
        self.id = self.config.worker_id or (
            f"{self.actor_type}-{host}-{os.getpid()}-{uuid.uuid4().hex[:4]}"
        )
        self.host = socket.gethostname()
        self.status: WorkerStatus = "starting"
        self.exit_code = 0
        self.started_at = time.time()
        #: The partition this worker serves, for a partitioned mailbox.
        self.partition: int | None = self._partition_of(self.config.partition)
        subjects = mesh.subjects
        if self.partition is not None:
            base = subjects.partition_base(self.actor_type, self.partition)
        else:
            base = subjects.mailbox_base(self.actor_type)
        self.in_flight = 0
        self.handled = 0
        self.failed = 0
        self.dead_lettered = 0
        self.redelivered = 0
        self.expired = 0
        self.restarts = 0
        #: Instances stopped for being idle or over `max_instances` (their state is kept).
        self.passivated = 0
        #: Messages to tool handlers refused for want of a grant.
        self.denied = 0
        #: Keys parked for failing past their restart intensity (see `_failures`).
        self.parked = 0
        #: Per-tool figures for heartbeats (the observability package's tool
        #: metrics set it); None sends none.
        self.tool_stats: Callable[[], list[ToolStats]] | None = None
        self.hb_seq = 0
        self.loop_lag = 0.0
        #: The port serving /metrics and /healthz, for heartbeats (set once bound).
        self.metrics_port = self.config.metrics_port or 0
        self._interceptors: tuple[WorkerInterceptor, ...] = tuple(interceptors)
        self._consumer: PullConsumer | None = None
        #: With priorities: the high and low levels' consumers (`_consumer` is normal's).
        self._level_consumers: dict[str, PullConsumer] = {}
        self._control_sub: Any = None
        self._typed_control_sub: Any = None
        self._done = asyncio.Event()
        self._drain_task: asyncio.Task[None] | None = None
        self._settler = Settler(
            ack_sync=self.config.ack_sync,
            ack_timeout=mesh.publish_timeout,
            ack_wait=self.spec.mailbox.ack_wait,
        )
        self._replies = Replies(mesh)
        self._reporter = StatusReporter(self)
        self._pause = PauseWatch(self)
        self._micro = MicroService(self)
        self._failures = Failures(self)
        self._containment = Containment(self)
        self._handling = Handling(self, base=base)
        self._dispatcher = self._make_dispatcher(base)
        self._compose()

    def _make_dispatcher(self, base: str) -> Dispatcher:
        mailbox = self.spec.mailbox
        common: dict[str, Any] = {
            "keyless": self.spec.keyless,
            "concurrency": self.config.concurrency,
            "settler": self._settler,
            "process": self._handling.process,
            "accepting": lambda: self.status == "running",
            "failed": self._failures,
            "max_deliver": mailbox.max_deliver,
        }
        if mailbox.priorities:
            if self.spec.state_type is not None:
                raise ConfigError(
                    f"{self.actor_type!r} declares durable state and a mailbox with "
                    "priorities: state commits go by one consumer's ack floor, and "
                    "priorities have a consumer per level (not supported yet)"
                )
            dispatcher = PriorityDispatcher(
                bases=level_bases(self.mesh.subjects, self.actor_type),
                fairness=mailbox.priority_fairness,
                **common,
            )
            self._handling.key_of = dispatcher.key_of
            return dispatcher
        return Dispatcher(base=base, **common)

    def _partition_of(self, p: int | None) -> int | None:
        partitions = self.spec.mailbox.partitions
        if partitions <= 1:
            return None
        if p is None or not 0 <= p < partitions:
            raise ConfigError(
                f"the mailbox of {self.actor_type!r} has {partitions} partitions: run one "
                f"worker per partition with --partition 0..{partitions - 1} (the "
                "supervisor does this for a child's replicas)"
                + (f"; got {p}" if p is not None else "")
            )
        return p

    # -- interceptors -----------------------------------------------------------------

    @property
    def interceptors(self) -> tuple[WorkerInterceptor, ...]:
        """This worker's own interceptors (the mesh's come before them)."""
        return self._interceptors

    def add_interceptor(self, interceptor: WorkerInterceptor) -> None:
        """Add an innermost interceptor; takes effect at once, even while running."""
        self._interceptors = (*self._interceptors, interceptor)
        self._compose()

    def remove_interceptor(self, interceptor: WorkerInterceptor) -> None:
        """Remove `interceptor` if present."""
        self._interceptors = tuple(i for i in self._interceptors if i is not interceptor)
        self._compose()

    def _compose(self) -> None:
        # Composed again at start: the mesh's interceptors may change until then.
        self._handling.compose((*self.mesh.interceptors, *self._interceptors))

    # -- state the tests and the metrics read -------------------------------------------

    @property
    def _instances(self) -> dict[str, Actor]:
        return self._handling.instances

    @property
    def _held(self) -> dict[int, tuple[Msg, int]]:
        return self._settler.held

    def heartbeat(self, status: str | None = None) -> Heartbeat:
        return self._reporter.heartbeat(status)

    @property
    def paused(self) -> bool:
        """The mailbox consumer is paused on the server (`actormesh pause`)."""
        return self._pause.paused

    def stats(self) -> WorkerStats:
        return self._reporter.stats()

    def health(self) -> HealthReport:
        """Healthy, degraded or unhealthy, per component; the worst one wins."""
        return self._reporter.health()

    # -- lifecycle --------------------------------------------------------------------

    async def start(self) -> None:
        mesh = self.mesh
        js, subjects = mesh.js, mesh.subjects
        # The mesh's replication fills in what the type leaves unset (`Replication`):
        # the mailbox, parked stream and state bucket are made from this spec.
        mailbox = mesh.replication.mailbox(self.spec.mailbox)
        self.spec = dataclasses.replace(self.spec, mailbox=mailbox)
        await ensure_system_streams(
            js,
            subjects,
            replicas=max(mailbox.replicas or 1, mesh.replication.replicas),
            placement_tags=mesh.replication.placement_tags,
        )
        await self._ensure_mailbox()
        await self._containment.start()
        await self._handling.start_state()
        if self.spec.tools:
            # Published, and grants watched, before the first message is taken.
            await mesh.tools.publish(self.spec.tools)
            if not await mesh.tools.grants.watch(wait=5.0):
                # Not fatal (each message then reads its grant), but worth a look:
                # usually the broker user lacks the grants bucket's permissions.
                log.warning(
                    "grants of %s not loaded after 5s: checking them per message until "
                    "they are (may this worker's NATS user read %s?)",
                    self.actor_type,
                    mesh.tools.grants.bucket,
                )
        self._compose()
        if _nats.OVERRIDDEN and isinstance(mesh.nc, _nats.Client):
            # nats-py's internals are as `_nats` expects: acks (and replies) are written
            # directly.
            self._settler.nc = self._replies.nc = mesh.nc
        self._consumer = self._settler.consumer = PullConsumer(
            mesh.nc,
            stream=subjects.mailbox_stream(self.actor_type),
            durable=subjects.consumer(self.actor_type, self.partition),
            on_msg=self._dispatcher.on_msg(LEVELS.index("normal"))
            if isinstance(self._dispatcher, PriorityDispatcher)
            else self._dispatcher.dispatch,
            capacity=self.config.prefetch,
            expires=self.config.pull_expires,
            idle_heartbeat=self.config.pull_idle_heartbeat,
            on_stall=self._recover_consumer,
        )
        self._start_levels()
        mesh.on_reconnect(self._on_reconnect)
        # Under its type too: with broker users only this type's user may answer that
        # one (`actormesh authz`, which refuses the id-only subject to workers).
        self._typed_control_sub = await mesh.nc.subscribe(
            subjects.control_of(self.actor_type, self.id), cb=self._reporter.on_control
        )
        self._control_sub = await mesh.nc.subscribe(
            subjects.control(self.id), cb=self._reporter.on_control
        )
        await self._pause.start()
        self.status = "running"
        await self._consumer.start()
        for consumer in self._level_consumers.values():
            await consumer.start()
        self._dispatcher.spawn(self._reporter.heartbeat_loop(), "heartbeat")
        self._dispatcher.spawn(self._settler.progress_loop(), "in-progress")
        if self._handling.passivator.enabled:
            self._dispatcher.spawn(self._handling.passivator.sweep_loop(), "passivation")
        await self._reporter.event("started")
        if self.config.micro:
            await self._micro.start()
        log.info(
            "worker %s serving %s (concurrency %d)",
            self.id,
            self.actor_type,
            self.config.concurrency,
        )

    def _start_levels(self) -> None:
        """With priorities, a consumer per level besides normal's, all feeding the
        one dispatcher (see `_priority`)."""
        dispatcher = self._dispatcher
        if not isinstance(dispatcher, PriorityDispatcher) or self._consumer is None:
            return
        subjects = self.mesh.subjects
        by_level: list[PullConsumer] = []
        for index, level in enumerate(LEVELS):
            if level == "normal":
                by_level.append(self._consumer)
                continue
            consumer = PullConsumer(
                self.mesh.nc,
                stream=subjects.mailbox_stream(self.actor_type),
                durable=subjects.consumer(self.actor_type, level=level),
                on_msg=dispatcher.on_msg(index),
                capacity=self.config.prefetch,
                expires=self.config.pull_expires,
                idle_heartbeat=self.config.pull_idle_heartbeat,
                on_stall=self._recover_consumer,
            )
            self._level_consumers[level] = consumer
            by_level.append(consumer)
        level_of = dispatcher.level_of
        self._settler.route = lambda msg: by_level[level_of(msg)]

    def _consumers(self) -> list[PullConsumer]:
        """Every mailbox consumer of this worker (one per priority level, if any)."""
        first = [self._consumer] if self._consumer is not None else []
        return first + list(self._level_consumers.values())

    async def _ensure_mailbox(self) -> None:
        await ensure_mailbox(
            self.mesh.js,
            self.mesh.subjects,
            self.actor_type,
            self.spec.mailbox,
            update=self.config.update_mailbox,
            partition=self.partition,
        )

    async def run(self, *, install_signals: bool = True) -> int:
        """Start, serve until drained or stopped, and return the exit code."""
        if install_signals:
            self._install_signals()
        await self.start()
        await self._done.wait()
        return self.exit_code

    def _install_signals(self) -> None:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.add_signal_handler(sig, self._on_signal, sig)

    def _on_signal(self, sig: int) -> None:
        if self.status == "draining":
            log.warning(
                "second %s: stopping now; unfinished messages are handed back",
                signal.Signals(sig).name,
            )
            self.request_drain(grace=0.0)
            return
        log.info("%s: draining (grace %.0fs)", signal.Signals(sig).name, self.config.drain_grace)
        self.request_drain()

    def request_drain(self, grace: float | None = None) -> None:
        """Stop taking messages, finish in-flight work within `grace`, then stop."""
        grace = self.config.drain_grace if grace is None else grace
        if self._drain_task is not None and not self._drain_task.done():
            if grace == 0.0:
                self._dispatcher.cancel_work()
            return
        if self.status == "stopped":
            return
        self._drain_task = asyncio.get_running_loop().create_task(self.drain(grace))

    async def drain(self, grace: float | None = None) -> None:
        grace = self.config.drain_grace if grace is None else grace
        if self.status != "escalated":
            self.status = "draining"
        for consumer in self._consumers():
            consumer.pause()
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(grace):
                await self._settler.idle.wait()
        if self._settler.held:
            log.warning(
                "drain grace over with %d messages unfinished: handing them back",
                len(self._settler.held),
            )
            self._dispatcher.cancel_work()
            await asyncio.sleep(0)
        await self._settler.hand_back_all()
        await self.stop()

    async def stop(self) -> None:
        if self.status == "stopped":
            return
        final: WorkerStatus = "escalated" if self.status == "escalated" else "stopped"
        for consumer in self._consumers():
            await consumer.stop()
        await self._containment.stop()
        await self._pause.stop()
        await self._micro.stop()
        await self._handling.stop_all()
        await self._reporter.event(final)
        await self._reporter.publish_heartbeat(final)
        await self._dispatcher.cancel_all()
        for sub in (self._typed_control_sub, self._control_sub):
            if sub is not None:
                with contextlib.suppress(Exception):
                    await sub.unsubscribe()
        with contextlib.suppress(Exception):
            await self.mesh.flush(2.0)
        self.status = final
        self._done.set()

    async def _on_reconnect(self) -> None:
        if self._consumer is not None:
            log.info("reconnected to NATS: renewing pulls")
            for consumer in self._consumers():
                consumer.reset()
            await self._pause.refresh()

    async def _recover_consumer(self) -> None:
        """Our pulls went unanswered: make sure the stream and consumer still exist."""
        try:
            await self._ensure_mailbox()
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            log.warning("could not re-check the mailbox yet: %r", exc)
