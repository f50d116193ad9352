"""Prometheus metrics of one worker, in a registry of its own.

Two sources: a worker interceptor (its `outcome` hook) counts each message
outcome (by message type) and times handlers; a collector reads the worker's own counters and the
mailbox state at scrape time, so nothing is counted twice and a scrape always
sees the same numbers the heartbeat and the `stats` control op report.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import msgspec
from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    InfoMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

from .._interceptor import MessageInput, Outcome, WorkerInterceptor
from .._version import VERSION

if TYPE_CHECKING:
    from .._worker import Worker
    from ._toolmetrics import ToolMetrics

__all__ = ["WorkerMetrics"]

log = logging.getLogger("actormesh.observability")

#: Handler durations: actor handlers range from sub-millisecond to long tool calls.
DURATION_BUCKETS = (
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
    30.0,
    60.0,
    300.0,
)
#: Label value for a message whose type we cannot tell (undecodable, unknown tag).
UNKNOWN = "unknown"

_HEALTH_VALUE = {"healthy": 0.0, "degraded": 1.0, "unhealthy": 2.0}


class _Tag(msgspec.Struct):
    type: str = ""


_tag = msgspec.json.Decoder(_Tag)


@dataclass(frozen=True, kw_only=True, slots=True)
class _MailboxState:
    messages: int
    bytes: int
    pending: int
    ack_pending: int
    redelivered: int
    waiting: int


class WorkerMetrics(WorkerInterceptor):
    """Registers the worker's metrics in `registry` and itself as the worker's interceptor.

    `await start()` begins polling the mailbox (depth, pending acks; for a
    partitioned mailbox, of this worker's partition consumer) every
    `poll_interval` seconds; `await close()` stops it and detaches the interceptor.
    """

    def __init__(
        self,
        worker: Worker,
        registry: CollectorRegistry,
        *,
        poll_interval: float = 5.0,
    ) -> None:
        self.worker = worker
        self.registry = registry
        self.poll_interval = poll_interval
        self.actor_type = worker.actor_type
        self.mailbox: _MailboxState | None = None
        #: Unix time of the last successful mailbox poll.
        self.polled_at = 0.0
        self._poller: asyncio.Task[None] | None = None
        # Only names of types the actor handles become label values: a stream of
        # junk messages must not create unbounded series.
        self._known: dict[str, str] = {}
        for cls in worker.spec.handlers:
            tag = getattr(getattr(cls, "__struct_config__", None), "tag", None)
            self._known[str(tag) if tag is not None else cls.__name__] = cls.__name__
        self.messages = Counter(
            "actormesh_messages",
            "Messages settled by this worker, by actor type, message type and outcome "
            "(handled, failed, dead_lettered, expired, bad_message, denied).",
            ["actor_type", "message_type", "outcome"],
            registry=registry,
        )
        self.duration = Histogram(
            "actormesh_handler_duration_seconds",
            "Handler run time, by actor type, message type and outcome (handled, failed).",
            ["actor_type", "message_type", "outcome"],
            buckets=DURATION_BUCKETS,
            registry=registry,
        )
        # labels() costs a lock and a dict build per call; the hook runs per message.
        self._counters: dict[tuple[str, str], Any] = {}
        self._histograms: dict[tuple[str, str], Any] = {}
        self._collector = _WorkerCollector(self)
        registry.register(self._collector)
        worker.add_interceptor(self)
        #: Per-tool metrics, for a worker that serves tools (`_tools`).
        self.tools: ToolMetrics | None = None
        if worker.spec.tools:
            from ._toolmetrics import ToolMetrics

            self.tools = ToolMetrics(worker, registry)

    # -- the interceptor ----------------------------------------------------------

    def outcome(
        self, worker: Worker, outcome: Outcome, input: MessageInput | None, seconds: float
    ) -> None:
        if outcome == "restarted" or input is None:
            return  # restarts are counted from worker.restarts at scrape time
        message = input.message
        message_type = type(message).__name__ if message is not None else self._peek_type(input)
        key = (message_type, outcome)
        counter = self._counters.get(key)
        if counter is None:
            counter = self._counters[key] = self.messages.labels(
                self.actor_type, message_type, outcome
            )
        counter.inc()
        if outcome == "handled" or outcome == "failed":
            hist = self._histograms.get(key)
            if hist is None:
                hist = self._histograms[key] = self.duration.labels(
                    self.actor_type, message_type, outcome
                )
            hist.observe(seconds)

    def _peek_type(self, input: MessageInput) -> str:
        # Only the rare outcomes (expired, dead-lettered, bad) come here undecoded.
        try:
            tag = _tag.decode(input.msg.data).type
        except Exception:
            # Anything the worker's decoder rejects (bad UTF-8, deep nesting) too.
            return UNKNOWN
        return self._known.get(tag, UNKNOWN)

    # -- mailbox polling ----------------------------------------------------------

    async def start(self) -> None:
        if self._poller is None:
            self._poller = asyncio.get_running_loop().create_task(
                self._poll_loop(), name="actormesh-metrics-poll"
            )

    async def close(self) -> None:
        poller, self._poller = self._poller, None
        if poller is not None:
            poller.cancel()
            try:
                await poller
            except asyncio.CancelledError:
                # The poller's own cancellation ends here; ours must go on.
                current = asyncio.current_task()
                if current is not None and current.cancelling():
                    raise
        self.worker.remove_interceptor(self)
        if self.tools is not None:
            self.tools.close()
        with contextlib.suppress(KeyError):
            self.registry.unregister(self._collector)

    async def _poll_loop(self) -> None:
        while True:
            await self.poll_mailbox()
            await asyncio.sleep(self.poll_interval)

    async def poll_mailbox(self) -> bool:
        """Ask the broker for the stream and consumer state once; False if it did not say."""
        mesh = self.worker.mesh
        stream = mesh.subjects.mailbox_stream(self.actor_type)
        # A partitioned mailbox has one consumer per partition: this worker's own.
        durable = mesh.subjects.consumer(self.actor_type, self.worker.partition)
        try:
            async with asyncio.timeout(max(1.0, min(self.poll_interval, 5.0))):
                si = await mesh.js.stream_info(stream)
                ci = await mesh.js.consumer_info(stream, durable)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            # Absent beats stale: a scrape shows no mailbox gauges until a poll succeeds.
            if self.mailbox is not None:
                log.debug("mailbox state of %s unknown: %r", self.actor_type, exc)
            self.mailbox = None
            return False
        self.mailbox = _MailboxState(
            messages=si.state.messages,
            bytes=si.state.bytes,
            pending=ci.num_pending or 0,
            ack_pending=ci.num_ack_pending or 0,
            redelivered=ci.num_redelivered or 0,
            waiting=ci.num_waiting or 0,
        )
        self.polled_at = time.time()
        return True


class _WorkerCollector(Collector):
    """Reads the worker's state when scraped."""

    def __init__(self, metrics: WorkerMetrics) -> None:
        self._m = metrics

    def collect(self) -> Iterator[Metric]:
        m = self._m
        w = m.worker
        at = [m.actor_type]

        def gauge(name: str, doc: str, value: float) -> GaugeMetricFamily:
            g = GaugeMetricFamily(name, doc, labels=["actor_type"])
            g.add_metric(at, value)
            return g

        def counter(name: str, doc: str, value: float) -> CounterMetricFamily:
            c = CounterMetricFamily(name, doc, labels=["actor_type"])
            c.add_metric(at, value)
            return c

        info = InfoMetricFamily(
            "actormesh_worker", "This worker process.", labels=["actor_type", "worker", "version"]
        )
        info.add_metric([m.actor_type, w.id, VERSION], {})
        yield info
        yield gauge(
            "actormesh_worker_start_time_seconds",
            "When this worker started, in seconds since the Unix epoch.",
            w.started_at,
        )
        yield gauge("actormesh_in_flight_messages", "Handlers running now.", w.in_flight)
        stats = w.stats()
        yield gauge(
            "actormesh_held_messages",
            "Messages delivered to this worker and not yet settled "
            "(running or waiting in a per-key lane).",
            stats.buffered,
        )
        yield gauge(
            "actormesh_actor_instances",
            "Live actor instances (one per key) in this worker.",
            stats.instances,
        )
        yield counter(
            "actormesh_passivations",
            "Actor instances passivated (idle, or over max_instances); their state is kept.",
            stats.passivated,
        )
        yield gauge(
            "actormesh_parked_keys",
            "Keys parked now for failing past their restart intensity (messages wait).",
            stats.parked,
        )
        yield counter(
            "actormesh_redeliveries",
            "Failed messages handed back to the broker for a later redelivery.",
            w.redelivered,
        )
        yield counter(
            "actormesh_dead_letters",
            "Messages moved to the dead-letter stream by this worker.",
            w.dead_lettered,
        )
        yield counter(
            "actormesh_restarts",
            "Actor instances restarted (or stopped) after a handler raised.",
            w.restarts,
        )
        consumer = w._consumer
        yield counter(
            "actormesh_consumer_pull_resets",
            "Times this worker re-issued its pulls (reconnect, lost pulls).",
            consumer.resets if consumer is not None else 0,
        )
        yield gauge(
            "actormesh_event_loop_lag_seconds",
            "How late the last heartbeat tick ran: a blocked event loop shows here.",
            w.loop_lag,
        )
        health = w.health()
        hg = GaugeMetricFamily(
            "actormesh_health_status",
            "Health per component: 0 healthy, 1 degraded, 2 unhealthy.",
            labels=["actor_type", "component"],
        )
        hg.add_metric([m.actor_type, "worker"], _HEALTH_VALUE.get(health.status, 2.0))
        for comp in health.components:
            hg.add_metric([m.actor_type, comp.name], _HEALTH_VALUE.get(comp.status, 2.0))
        yield hg
        mb = m.mailbox
        if mb is None:
            return
        yield gauge(
            "actormesh_mailbox_messages",
            "Messages in the actor type's mailbox stream (all workers; polled).",
            mb.messages,
        )
        yield gauge(
            "actormesh_mailbox_bytes",
            "Bytes in the actor type's mailbox stream (polled).",
            mb.bytes,
        )
        yield gauge(
            "actormesh_consumer_pending_messages",
            "Messages in the mailbox not yet delivered to any worker (polled).",
            mb.pending,
        )
        yield gauge(
            "actormesh_consumer_ack_pending_messages",
            "Messages delivered to workers and awaiting their ack (polled).",
            mb.ack_pending,
        )
        yield gauge(
            "actormesh_consumer_redelivered_messages",
            "Delivered-but-unacked messages that were delivered more than once (polled).",
            mb.redelivered,
        )
        yield gauge(
            "actormesh_consumer_waiting_pulls",
            "Open pull requests on the mailbox consumer, all workers (polled).",
            mb.waiting,
        )
        yield gauge(
            "actormesh_mailbox_polled_time_seconds",
            "When the mailbox gauges were last read from the broker.",
            m.polled_at,
        )
