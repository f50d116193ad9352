"""The worker runtime: one process serving one actor type from its mailbox.

fetch (continuous pull, bounded) → per-key lane → decode → handler → reply /
ack; failures nak with backoff, then dead-letter after `max_deliver`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import socket
import time
import uuid
from collections import deque
from contextlib import AbstractContextManager
from typing import Any

import msgspec
from nats.aio.msg import Msg

from ._actor import Actor, ActorSpec, Context, spec_of
from ._config import WorkerConfig
from ._consumer import PullConsumer
from ._errors import ActorMeshError, BadMessage, ConfigError
from ._hooks import NO_SPAN, SpanHandle
from ._mailbox import ensure_mailbox, ensure_system_streams
from ._mesh import Mesh
from ._subjects import KEYLESS
from ._version import VERSION
from ._wire import (
    ComponentHealth,
    ControlReply,
    ControlRequest,
    ErrorReply,
    Event,
    Hdr,
    HealthReport,
    Heartbeat,
    WorkerStats,
)
from .patterns._policy import run_with_policy

__all__ = ["Worker"]

log = logging.getLogger("actormesh.worker")

_encoder = msgspec.json.Encoder()
_control = msgspec.json.Decoder(ControlRequest)

EXIT_ESCALATED = 3


class Worker:
    """Serve one actor type. `await worker.run()` returns the process exit code."""

    def __init__(self, mesh: Mesh, actor: type[Actor], config: WorkerConfig | None = None) -> None:
        self.mesh = mesh
        self.spec: ActorSpec = spec_of(actor)
        self.config = config or WorkerConfig()
        self.actor_type = self.spec.actor_type
        host = socket.gethostname().split(".")[0].replace("-", "_")[:20] or "host"
        self.id = self.config.worker_id or (
            f"{self.actor_type}-{host}-{os.getpid()}-{uuid.uuid4().hex[:4]}"
        )
        self.host = socket.gethostname()
        self.status = "starting"
        self.exit_code = 0
        self.started_at = time.time()
        subjects = mesh.subjects
        partitions = self.spec.mailbox.partitions
        #: The partition this worker serves, for a partitioned mailbox.
        self.partition: int | None = None
        if partitions > 1:
            p = self.config.partition
            if p is None or not 0 <= p < partitions:
                raise ConfigError(
                    f"the mailbox of {self.actor_type!r} has {partitions} partitions: run one "
                    f"worker per partition with --partition 0..{partitions - 1} (the "
                    "supervisor does this for a child's replicas)"
                    + (f"; got {p}" if p is not None else "")
                )
            self.partition = p
            self._base = subjects.partition_base(self.actor_type, p)
        else:
            self._base = subjects.mailbox_base(self.actor_type)
        self._stream = subjects.mailbox_stream(self.actor_type)
        self._sem = asyncio.Semaphore(self.config.concurrency)
        self._lanes: dict[str, deque[Msg]] = {}
        self._instances: dict[str, Actor] = {}
        #: Every message we hold, by id(msg): the message and when we last told the
        #: server we are still on it.
        self._held: dict[int, tuple[Msg, float]] = {}
        self._tasks: set[asyncio.Task[Any]] = set()
        self._restart_times: deque[float] = deque()
        self._done = asyncio.Event()
        #: Set whenever the worker holds no message: what a drain waits for.
        self._idle = asyncio.Event()
        self._idle.set()
        self._drain_task: asyncio.Task[None] | None = None
        self._consumer: PullConsumer | None = None
        self._control_sub: Any = None
        self.in_flight = 0
        self.handled = 0
        self.failed = 0
        self.dead_lettered = 0
        self.redelivered = 0
        self.expired = 0
        self.restarts = 0
        self.hb_seq = 0
        self.loop_lag = 0.0
        #: The port serving /metrics and /healthz, for heartbeats (set once bound).
        self.metrics_port = self.config.metrics_port or 0
        #: Observability hooks, called as hook(worker, outcome, msg, obj, seconds) with
        #: outcome handled, failed, dead_lettered, expired, bad_message or restarted.
        self.observers: list[Any] = []

    # -- lifecycle ------------------------------------------------------------------

    async def start(self) -> None:
        js = self.mesh.js
        subjects = self.mesh.subjects
        await ensure_system_streams(js, subjects)
        await ensure_mailbox(
            js,
            subjects,
            self.actor_type,
            self.spec.mailbox,
            update=self.config.update_mailbox,
            partition=self.partition,
        )
        self._consumer = PullConsumer(
            self.mesh.nc,
            stream=self._stream,
            durable=subjects.consumer(self.actor_type, self.partition),
            on_msg=self._dispatch,
            capacity=self.config.prefetch,
            expires=self.config.pull_expires,
            idle_heartbeat=self.config.pull_idle_heartbeat,
            on_stall=self._recover_consumer,
        )
        self.mesh.on_reconnect(self._on_reconnect)
        self._control_sub = await self.mesh.nc.subscribe(
            subjects.control(self.id), cb=self._on_control
        )
        self.status = "running"
        await self._consumer.start()
        self._spawn(self._heartbeat_loop(), "heartbeat")
        self._spawn(self._progress_loop(), "in-progress")
        await self._event("started")
        log.info(
            "worker %s serving %s (concurrency %d)",
            self.id,
            self.actor_type,
            self.config.concurrency,
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
                self._cancel_work()
            return
        if self.status in ("stopped",):
            return
        self._drain_task = asyncio.get_running_loop().create_task(self.drain(grace))

    async def drain(self, grace: float | None = None) -> None:
        grace = self.config.drain_grace if grace is None else grace
        if self.status not in ("escalated",):
            self.status = "draining"
        if self._consumer is not None:
            self._consumer.pause()
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(grace):
                await self._idle.wait()
        if self._held:
            log.warning(
                "drain grace over with %d messages unfinished: handing them back", len(self._held)
            )
            self._cancel_work()
            await asyncio.sleep(0)
        await self._hand_back_all()
        await self.stop()

    def _cancel_work(self) -> None:
        for task in list(self._tasks):
            if task.get_name().startswith("msg"):
                task.cancel()

    async def _hand_back_all(self) -> None:
        for msg, _ in list(self._held.values()):
            await self._nak(msg, 0.0)

    async def stop(self) -> None:
        if self.status == "stopped":
            return
        final = "escalated" if self.status == "escalated" else "stopped"
        if self._consumer is not None:
            await self._consumer.stop()
        for key, inst in list(self._instances.items()):
            try:
                await inst.on_stop()
            except Exception:
                log.exception("on_stop of %s/%s failed", self.actor_type, key)
        self._instances.clear()
        await self._event(final)
        await self._publish_heartbeat(final)
        for task in list(self._tasks):
            task.cancel()
        for task in list(self._tasks):
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        if self._control_sub is not None:
            with contextlib.suppress(Exception):
                await self._control_sub.unsubscribe()
        with contextlib.suppress(Exception):
            await self.mesh.flush(2.0)
        self.status = "stopped" if final == "stopped" else final
        self._done.set()

    async def _on_reconnect(self) -> None:
        if self._consumer is not None:
            log.info("reconnected to NATS: renewing pulls")
            self._consumer.reset()

    async def _recover_consumer(self) -> None:
        """Our pulls went unanswered: make sure the stream and consumer still exist."""
        try:
            await ensure_mailbox(
                self.mesh.js,
                self.mesh.subjects,
                self.actor_type,
                self.spec.mailbox,
                update=self.config.update_mailbox,
                partition=self.partition,
            )
        except Exception as exc:
            log.warning("could not re-check the mailbox yet: %r", exc)

    # -- dispatch -------------------------------------------------------------------

    def _spawn(self, coro: Any, name: str) -> asyncio.Task[Any]:
        task = asyncio.get_running_loop().create_task(coro, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    def _dispatch(self, msg: Msg) -> None:
        self._held[id(msg)] = (msg, time.monotonic())
        self._idle.clear()
        if self.status != "running":
            # Draining: this arrived on a pull asked for earlier; give it straight back.
            self._spawn(self._nak(msg, 0.0), "handback")
            return
        key = self._key_of(msg)
        if self.spec.keyless:
            self._spawn(self._run_one(key, msg), "msg")
            return
        lane = self._lanes.get(key)
        if lane is None:
            self._lanes[key] = deque((msg,))
            self._spawn(self._run_lane(key), "msg-lane")
        else:
            lane.append(msg)

    def _key_of(self, msg: Msg) -> str:
        subject = msg.subject
        return subject[len(self._base) :] if subject.startswith(self._base) else KEYLESS

    def _mailbox_subject(self, msg: Msg) -> str:
        """The subject senders used (a partitioned mailbox stores another one)."""
        if self.partition is None:
            return msg.subject
        return self.mesh.subjects.mailbox(self.actor_type, self._key_of(msg))

    async def _run_one(self, key: str, msg: Msg) -> None:
        async with self._sem:
            await self._process(key, msg)

    async def _run_lane(self, key: str) -> None:
        lane = self._lanes[key]
        try:
            while lane:
                async with self._sem:
                    await self._process(key, lane[0])
                lane.popleft()
        finally:
            if self._lanes.get(key) is lane:
                del self._lanes[key]

    def _settle(self, msg: Msg) -> None:
        if self._held.pop(id(msg), None) is not None and self._consumer is not None:
            self._consumer.settled()
        if not self._held:
            self._idle.set()

    async def _ack(self, msg: Msg) -> None:
        try:
            if self.config.ack_sync:
                await msg.ack_sync(timeout=self.mesh.publish_timeout)
            else:
                await msg.ack()
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            # The server will redeliver after ack_wait: at-least-once, nothing lost.
            log.warning("ack failed (%r): the message will be redelivered", exc)
        self._settle(msg)

    async def _nak(self, msg: Msg, delay: float) -> None:
        try:
            await msg.nak(delay=delay or None)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            log.warning("nak failed (%r): the message returns after ack_wait", exc)
        self._settle(msg)

    # -- one message ----------------------------------------------------------------

    async def _process(self, key: str, msg: Msg) -> None:
        headers = msg.headers or {}
        reply_to = headers.get(Hdr.REPLY_TO)
        deadline = headers.get(Hdr.DEADLINE)
        if deadline is not None and _expired(deadline):
            self.expired += 1
            self._observe("expired", msg, None, 0.0)
            await self._dead_letter(
                msg,
                code="deadline_exceeded",
                type_="DeadlineExceeded",
                message=f"ask deadline {deadline} passed before it ran",
            )
            return
        try:
            obj = self.spec.decoder.decode(msg.data)
            handler = self.spec.handlers[type(obj)]
        except (msgspec.DecodeError, msgspec.ValidationError, KeyError) as exc:
            bad = BadMessage(
                f"{self.actor_type} cannot decode the message: {exc}",
                actor_type=self.actor_type,
                detail=str(exc),
            )
            self.failed += 1
            self._observe("bad_message", msg, None, 0.0)
            if reply_to:
                await self._reply_error(reply_to, bad, status="400")
            await self._dead_letter(msg, code=bad.code, type_="BadMessage", message=bad.message)
            return
        tracer = self.mesh.tracer
        wants_context = handler.wants_context or reply_to
        if tracer is None and not wants_context:
            scope: AbstractContextManager[SpanHandle] = NO_SPAN
        else:
            # Parsed once for both the span and the handler's Context.
            subject, deliveries = self._mailbox_subject(msg), _deliveries(msg)
            scope = (
                NO_SPAN
                if tracer is None
                else tracer.consumer(
                    destination=subject,
                    headers=headers,
                    actor_type=self.actor_type,
                    message_type=type(obj).__name__,
                    key=key,
                    deliveries=deliveries,
                )
            )
        self.in_flight += 1
        started = time.perf_counter()
        ctx: Context | None = None
        # Failure handling and replies run inside the span: they belong to the trace,
        # and their log lines carry its ids.
        with scope as span:
            try:
                instance = self._instances.get(key)
                if instance is None:
                    instance = await self._new_instance(key)
                if wants_context:
                    ctx = self._context(key, subject, deliveries, headers, reply_to)
                result = await self._call(handler, instance, obj, ctx)
            except asyncio.CancelledError:
                self.in_flight -= 1
                raise
            except Exception as exc:
                span.error(exc)
                self.in_flight -= 1
                self.failed += 1
                self._observe("failed", msg, obj, time.perf_counter() - started)
                await self._on_failure(key, msg, exc, reply_to)
                return
            self.in_flight -= 1
            if reply_to and ctx is not None and not ctx.replied:
                await self._reply_value(reply_to, result)
        await self._ack(msg)
        self.handled += 1
        self._observe("handled", msg, obj, time.perf_counter() - started)

    @staticmethod
    async def _call(handler: Any, instance: Actor, obj: Any, ctx: Context | None) -> Any:
        if handler.policy is not None:
            return await run_with_policy(handler.policy, _invoke, handler, instance, obj, ctx)
        return await _invoke(handler, instance, obj, ctx)

    def _observe(self, outcome: str, msg: Msg, obj: Any, seconds: float) -> None:
        for hook in self.observers:
            try:
                hook(self, outcome, msg, obj, seconds)
            except Exception:
                log.exception("observer failed")

    def _context(
        self,
        key: str,
        subject: str,
        deliveries: int,
        headers: dict[str, str],
        reply_to: str | None,
    ) -> Context:
        async def reply(value: Any) -> None:
            assert reply_to is not None
            await self._reply_value(reply_to, value)

        return Context(
            mesh=self.mesh,
            actor_type=self.actor_type,
            key=key,
            subject=subject,
            headers=headers,
            deliveries=deliveries,
            reply=reply if reply_to else None,
        )

    async def _new_instance(self, key: str) -> Actor:
        instance = self.spec.cls()
        instance.key = key
        await instance.on_start()
        self._instances[key] = instance
        return instance

    async def _on_failure(self, key: str, msg: Msg, exc: Exception, reply_to: str | None) -> None:
        deliveries = _deliveries(msg)
        retryable = exc.retryable if isinstance(exc, ActorMeshError) else True
        log.warning(
            "%s/%s: handler raised %s: %s (delivery %d)",
            self.actor_type,
            key,
            type(exc).__name__,
            exc,
            deliveries,
        )
        await self._supervise(key, exc)
        if reply_to:
            # The asker is told at once and decides; the message is settled.
            await self._reply_error(reply_to, exc)
            await self._ack(msg)
            return
        if not retryable or deliveries >= self.spec.mailbox.max_deliver:
            await self._dead_letter(
                msg,
                code=getattr(exc, "code", "handler_error"),
                type_=type(exc).__name__,
                message=str(exc) or type(exc).__name__,
                deliveries=deliveries,
            )
            return
        self.redelivered += 1
        await self._nak(msg, self.spec.mailbox.redelivery_delay(deliveries))

    async def _supervise(self, key: str, exc: Exception) -> None:
        policy = self.spec.supervision
        if policy.on_error == "resume":
            return
        now = time.monotonic()
        window = self._restart_times
        window.append(now)
        while window and now - window[0] > policy.within:
            window.popleft()
        self.restarts += 1
        for hook in self.observers:
            with contextlib.suppress(Exception):
                hook(self, "restarted", None, None, 0.0)
        old = self._instances.pop(key, None)
        if old is not None:
            try:
                await old.on_stop()
            except Exception:
                log.exception("on_stop of %s/%s failed", self.actor_type, key)
        if len(window) > policy.max_restarts:
            await self._escalate(exc, len(window), policy.within)
            return
        if policy.on_error == "restart" and old is not None:
            fresh = self.spec.cls()
            fresh.key = key
            try:
                await fresh.on_restart(exc)
            except Exception:
                log.exception(
                    "on_restart of %s/%s failed; it starts afresh on its next message",
                    self.actor_type,
                    key,
                )
                return
            self._instances[key] = fresh

    async def _escalate(self, exc: Exception, restarts: int, within: float) -> None:
        if self.status == "escalated":
            return
        log.error(
            "%s: %d restarts within %.0fs (intensity %d): escalating and exiting",
            self.id,
            restarts,
            within,
            self.spec.supervision.max_restarts,
        )
        self.status = "escalated"
        self.exit_code = EXIT_ESCALATED
        await self._event(
            "escalated",
            reason=f"{type(exc).__name__}: {exc}",
            detail={"restarts": str(restarts), "within": str(within)},
        )
        # Unfinished messages stay in JetStream for the next worker.
        self.request_drain(grace=min(5.0, self.config.drain_grace))

    # -- replies, dead letters, events ----------------------------------------------

    async def _reply_value(self, reply_to: str, value: Any) -> None:
        try:
            data = _encoder.encode(value)
        except (TypeError, msgspec.EncodeError) as exc:
            await self._reply_error(
                reply_to, ActorMeshError(f"the handler's reply cannot be encoded: {exc}")
            )
            return
        await self._send_reply(reply_to, data, None, None)

    async def _reply_error(self, reply_to: str, exc: Exception, *, status: str = "500") -> None:
        if isinstance(exc, ActorMeshError):
            code, retryable = exc.code, exc.retryable
        else:
            code, retryable = "handler_error", True
        body = ErrorReply(
            code=code, type=type(exc).__name__, message=str(exc)[:4000], retryable=retryable
        )
        await self._send_reply(reply_to, _encoder.encode(body), {Hdr.STATUS: status}, exc)

    async def _send_reply(
        self,
        reply_to: str,
        data: bytes,
        headers: dict[str, str] | None,
        error: Exception | None,
    ) -> None:
        tracer = self.mesh.tracer
        try:
            if tracer is None:
                await self.mesh.nc.publish(reply_to, data, headers=headers)
                return
            headers = headers or {}
            with tracer.producer(destination=reply_to, headers=headers, operation="reply") as span:
                if error is not None:
                    span.error(error)
                await self.mesh.nc.publish(reply_to, data, headers=headers)
        except Exception as exc:
            log.warning("reply to %s not sent: %r", reply_to, exc)

    async def _dead_letter(
        self, msg: Msg, *, code: str, type_: str, message: str, deliveries: int | None = None
    ) -> None:
        deliveries = _deliveries(msg) if deliveries is None else deliveries
        seq = _stream_seq(msg)
        headers = {
            k: v for k, v in (msg.headers or {}).items() if k not in (Hdr.REPLY_TO, Hdr.MSG_ID)
        }
        headers.update(
            {
                # Dead-lettering the same stored message twice (a crash between the two
                # steps below) is deduplicated by the DLQ stream.
                Hdr.MSG_ID: f"{self._stream}:{seq}",
                Hdr.ERROR_CODE: code,
                Hdr.ERROR_TYPE: type_,
                Hdr.ERROR_MESSAGE: " ".join(message.split())[:1000],
                Hdr.DELIVERIES: str(deliveries),
                Hdr.WORKER: self.id,
                Hdr.ORIGINAL_SUBJECT: self._mailbox_subject(msg),
                Hdr.ORIGINAL_SEQ: str(seq),
                Hdr.DEAD_AT: f"{time.time():.3f}",
            }
        )
        try:
            await self.mesh.publish(
                self.mesh.subjects.dlq(self.actor_type), msg.data, headers=headers
            )
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            log.error(
                "dead-lettering %s seq %d failed (%r): keeping it in the mailbox",
                self.actor_type,
                seq,
                exc,
            )
            await self._nak(msg, self.spec.mailbox.redelivery_delay(max(deliveries, 1)))
            return
        await self._ack(msg)
        self.dead_lettered += 1
        self._observe("dead_lettered", msg, None, 0.0)
        await self._event(
            "dead_lettered",
            reason=f"{type_}: {message}"[:500],
            detail={"seq": str(seq), "subject": self._mailbox_subject(msg), "code": code},
        )

    async def _event(
        self, kind: str, *, reason: str = "", detail: dict[str, str] | None = None
    ) -> None:
        evt = Event(
            kind=kind,
            at=time.time(),
            source=self.id,
            actor_type=self.actor_type,
            worker=self.id,
            child=self.config.supervisor_child,
            reason=reason,
            detail=detail or {},
        )
        try:
            await self.mesh.publish(
                self.mesh.subjects.event(kind), _encoder.encode(evt), timeout=2.0
            )
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            log.warning("event %s not recorded: %r", kind, exc)

    # -- heartbeats, in-progress acks, control --------------------------------------

    def heartbeat(self, status: str | None = None) -> Heartbeat:
        return Heartbeat(
            worker=self.id,
            actor_type=self.actor_type,
            pid=os.getpid(),
            host=self.host,
            started_at=self.started_at,
            seq=self.hb_seq,
            in_flight=self.in_flight,
            handled=self.handled,
            failed=self.failed,
            dead_lettered=self.dead_lettered,
            restarts=self.restarts,
            version=VERSION,
            status=status or self.status,
            loop_lag=self.loop_lag,
            concurrency=self.config.concurrency,
            supervisor_child=self.config.supervisor_child,
            metrics_port=self.metrics_port,
            partition=-1 if self.partition is None else self.partition,
            sent_at=time.time(),
        )

    async def _publish_heartbeat(self, status: str | None = None) -> None:
        self.hb_seq += 1
        try:
            await self.mesh.nc.publish(
                self.mesh.subjects.heartbeat(self.actor_type, self.id),
                _encoder.encode(self.heartbeat(status)),
            )
        except Exception as exc:
            log.debug("heartbeat not sent: %r", exc)

    async def _heartbeat_loop(self) -> None:
        interval = self.config.heartbeat_interval
        loop = asyncio.get_running_loop()
        expected = loop.time()
        while True:
            # A busy handler awaits and yields; only a blocked loop delays this tick,
            # and the lag it measures tells the supervisor so.
            self.loop_lag = max(0.0, loop.time() - expected)
            await self._publish_heartbeat()
            expected = loop.time() + interval
            await asyncio.sleep(interval)

    async def _progress_loop(self) -> None:
        ack_wait = self.spec.mailbox.ack_wait
        tick = max(0.05, min(ack_wait / 4, 5.0))
        while True:
            await asyncio.sleep(tick)
            now = time.monotonic()
            for key, (msg, since) in list(self._held.items()):
                if now - since > ack_wait / 2 and key in self._held:
                    try:
                        await msg.in_progress()
                    except Exception as exc:
                        log.debug("in-progress ack not sent: %r", exc)
                        continue
                    self._held[key] = (msg, now)

    def stats(self) -> WorkerStats:
        return WorkerStats(
            worker=self.id,
            actor_type=self.actor_type,
            status=self.status,
            in_flight=self.in_flight,
            buffered=len(self._held),
            handled=self.handled,
            failed=self.failed,
            dead_lettered=self.dead_lettered,
            redelivered=self.redelivered,
            expired=self.expired,
            restarts=self.restarts,
            instances=len(self._instances),
            uptime=time.time() - self.started_at,
        )

    def health(self) -> HealthReport:
        """Healthy, degraded or unhealthy, per component; the worst one wins."""
        comps: list[ComponentHealth] = []
        connected = self.mesh.connected
        comps.append(
            ComponentHealth(
                name="broker",
                status="healthy" if connected else "unhealthy",
                detail={"connected": str(connected).lower()},
            )
        )
        silent = time.monotonic() - self._consumer.last_activity if self._consumer else 0.0
        consumer_status = "healthy"
        if (
            self._consumer is None
            or self.status not in ("running",)
            or (self._consumer.requested > 0 and silent > 3 * self.config.pull_idle_heartbeat)
        ):
            consumer_status = "degraded"
        comps.append(
            ComponentHealth(
                name="consumer",
                status=consumer_status,
                detail={
                    "status": self.status,
                    "silent_s": f"{silent:.1f}",
                    "pull_resets": str(self._consumer.resets if self._consumer else 0),
                },
            )
        )
        lag = self.loop_lag
        comps.append(
            ComponentHealth(
                name="event_loop",
                status="healthy" if lag < 0.5 else ("degraded" if lag < 5 else "unhealthy"),
                detail={"lag_s": f"{lag:.3f}"},
            )
        )
        order = {"healthy": 0, "degraded": 1, "unhealthy": 2}
        worst = max(comps, key=lambda c: order[c.status]).status
        return HealthReport(
            status=worst,
            worker=self.id,
            actor_type=self.actor_type,
            at=time.time(),
            components=comps,
            counters={
                "handled": self.handled,
                "failed": self.failed,
                "dead_lettered": self.dead_lettered,
                "redelivered": self.redelivered,
                "in_flight": self.in_flight,
                "restarts": self.restarts,
            },
        )

    async def _on_control(self, msg: Msg) -> None:
        try:
            req = _control.decode(msg.data)
        except (msgspec.DecodeError, msgspec.ValidationError) as exc:
            reply = ControlReply(ok=False, op="?", error=f"bad control request: {exc}")
        else:
            if req.op == "stats":
                reply = ControlReply(ok=True, op=req.op, stats=self.stats())
            elif req.op == "health":
                reply = ControlReply(ok=True, op=req.op, health=self.health())
            elif req.op == "drain":
                self.request_drain(req.grace)
                reply = ControlReply(ok=True, op=req.op)
            elif req.op == "stop":
                self.request_drain(0.0)
                reply = ControlReply(ok=True, op=req.op)
            else:
                reply = ControlReply(
                    ok=False, op=req.op, error="unknown op: use drain, stop, stats or health"
                )
        if msg.reply:
            with contextlib.suppress(Exception):
                await msg.respond(_encoder.encode(reply))


async def _invoke(handler: Any, instance: Actor, obj: Any, ctx: Context | None) -> Any:
    result = handler.fn(instance, obj, ctx) if handler.wants_context else handler.fn(instance, obj)
    if handler.is_async:
        result = await result
    return result


def _expired(deadline: str) -> bool:
    try:
        return time.time() * 1000 > int(deadline)
    except ValueError:
        return False


def _deliveries(msg: Msg) -> int:
    # $JS.ACK.<stream>.<consumer>.<delivered>.<sseq>.<cseq>.<ts>.<pending> (or the
    # 12-token form with domain and account hash).
    reply = msg.reply or ""
    dots = reply.count(".")
    if dots == 8:
        return int(reply.split(".", 5)[4])
    if dots >= 11:
        return int(reply.split(".", 7)[6])
    return 1


def _stream_seq(msg: Msg) -> int:
    parts = (msg.reply or "").split(".")
    if len(parts) == 9:
        return int(parts[5])
    if len(parts) >= 12:
        return int(parts[7])
    return 0
