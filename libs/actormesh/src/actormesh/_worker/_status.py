"""What the worker tells others: heartbeats, events, stats, health, and control requests."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from typing import TYPE_CHECKING, Literal

import msgspec
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription

from .._version import VERSION
from .._wire import (
    ComponentHealth,
    ControlReply,
    ControlRequest,
    Event,
    HealthReport,
    Heartbeat,
    InstanceInfo,
    WorkerStats,
)
from ._handling import percentiles

if TYPE_CHECKING:
    from ._facade import Worker

__all__ = ["StatusReporter"]

log = logging.getLogger("actormesh.worker")

_encoder = msgspec.json.Encoder()
_control = msgspec.json.Decoder(ControlRequest)
_peer_hb = msgspec.json.Decoder(Heartbeat)

Health = Literal["healthy", "degraded", "unhealthy"]
_ORDER: dict[str, int] = {"healthy": 0, "degraded": 1, "unhealthy": 2}


class StatusReporter:
    """Publishes the worker's heartbeats and events; answers its control subject."""

    def __init__(self, worker: Worker) -> None:
        self._w = worker
        #: Other workers seen serving our keys (warned about once each).
        self._split_with: set[str] = set()

    # -- heartbeats ---------------------------------------------------------------------

    def heartbeat(self, status: str | None = None) -> Heartbeat:
        w = self._w
        # Each heartbeat reports the handler times since the previous one.
        p50, p99 = percentiles(w._handling.durations)
        w._handling.durations.clear()
        return Heartbeat(
            worker=w.id,
            actor_type=w.actor_type,
            pid=os.getpid(),
            host=w.host,
            started_at=w.started_at,
            seq=w.hb_seq,
            in_flight=w.in_flight,
            handled=w.handled,
            failed=w.failed,
            dead_lettered=w.dead_lettered,
            restarts=w.restarts,
            version=VERSION,
            status=status or w.status,
            loop_lag=w.loop_lag,
            concurrency=w.config.concurrency,
            supervisor_child=w.config.supervisor_child,
            metrics_port=w.metrics_port,
            partition=-1 if w.partition is None else w.partition,
            sent_at=time.time(),
            keyed=not w.spec.keyless,
            instances=len(w._handling.instances),
            passivated=w.passivated,
            parked=w.parked,
            paused=w.paused,
            tools=w.tool_stats() if w.tool_stats is not None else [],
            handler_p50=p50,
            handler_p99=p99,
        )

    async def publish_heartbeat(self, status: str | None = None) -> None:
        w = self._w
        w.hb_seq += 1
        try:
            await w.mesh.nc.publish(
                w.mesh.subjects.heartbeat(w.actor_type, w.id),
                _encoder.encode(self.heartbeat(status)),
            )
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            log.debug("heartbeat not sent: %r", exc)

    async def heartbeat_loop(self) -> None:
        w = self._w
        interval = w.config.heartbeat_interval
        loop = asyncio.get_running_loop()
        expected = loop.time()
        peers = await self._watch_peers()
        try:
            while True:
                # A busy handler awaits and yields; only a blocked loop delays this tick,
                # and the lag it measures tells the supervisor so.
                w.loop_lag = max(0.0, loop.time() - expected)
                await self.publish_heartbeat()
                expected = loop.time() + interval
                await asyncio.sleep(interval)
        finally:
            if peers is not None:
                with contextlib.suppress(Exception):
                    await peers.unsubscribe()

    # -- split warning ------------------------------------------------------------------

    async def _watch_peers(self) -> Subscription | None:
        """Listen to our type's heartbeats when keyed and unpartitioned: another worker
        there splits each key's messages and in-memory state with us (the supervisor
        reports it as an event too; this is the worker's own log line).

        Only there: a keyed unpartitioned type has one worker, so this costs one
        message per heartbeat; with N partition workers it would cost N squared, and
        the supervisor watches partitions on its own.
        """
        w = self._w
        if w.spec.keyless or w.partition is not None:
            return None
        try:
            return await w.mesh.nc.subscribe(
                w.mesh.subjects.heartbeat(w.actor_type, "*"), cb=self._on_peer
            )
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            log.debug("not watching other workers of %s: %r", w.actor_type, exc)
            return None

    async def _on_peer(self, msg: Msg) -> None:
        w = self._w
        try:
            hb = _peer_hb.decode(msg.data)
        except (msgspec.DecodeError, msgspec.ValidationError):
            return
        if (
            hb.worker == w.id
            or not hb.keyed
            or hb.partition != -1
            or hb.status != "running"
            or w.status != "running"
            or hb.worker in self._split_with
        ):
            return
        self._split_with.add(hb.worker)
        log.warning(
            "worker %s (pid %d on %s) also serves the unpartitioned mailbox of keyed actor "
            "%s: each key's messages and in-memory state are split between us; partition "
            "the mailbox (MailboxConfig(partitions=N)) with one worker per partition, or "
            "run one worker",
            hb.worker, hb.pid, hb.host, w.actor_type,
        )  # fmt: skip

    # -- events -------------------------------------------------------------------------

    async def event(
        self, kind: str, *, reason: str = "", detail: dict[str, str] | None = None
    ) -> None:
        w = self._w
        evt = Event(
            kind=kind,
            at=time.time(),
            source=w.id,
            actor_type=w.actor_type,
            worker=w.id,
            child=w.config.supervisor_child,
            reason=reason,
            detail=detail or {},
        )
        try:
            await w.mesh.publish(
                w.mesh.subjects.event(kind, w.actor_type), _encoder.encode(evt), timeout=2.0
            )
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            log.warning("event %s not recorded: %r", kind, exc)

    # -- stats and health ---------------------------------------------------------------

    def stats(self) -> WorkerStats:
        w = self._w
        return WorkerStats(
            worker=w.id,
            actor_type=w.actor_type,
            status=w.status,
            in_flight=w.in_flight,
            buffered=len(w._settler.held),
            handled=w.handled,
            failed=w.failed,
            dead_lettered=w.dead_lettered,
            redelivered=w.redelivered,
            expired=w.expired,
            restarts=w.restarts,
            instances=len(w._handling.instances),
            uptime=time.time() - w.started_at,
            keyed=not w.spec.keyless,
            passivated=w.passivated,
            parked=w.parked,
            paused=w.paused,
        )

    def health(self) -> HealthReport:
        """Healthy, degraded or unhealthy, per component; the worst one wins."""
        w = self._w
        connected = w.mesh.connected
        comps = [
            ComponentHealth(
                name="broker",
                status="healthy" if connected else "unhealthy",
                detail={"connected": str(connected).lower()},
            ),
            self._consumer_health(),
            _loop_health(w.loop_lag),
        ]
        worst = max(comps, key=lambda c: _ORDER[c.status]).status
        return HealthReport(
            status=worst,
            worker=w.id,
            actor_type=w.actor_type,
            at=time.time(),
            components=comps,
            counters={
                "handled": w.handled,
                "failed": w.failed,
                "dead_lettered": w.dead_lettered,
                "redelivered": w.redelivered,
                "in_flight": w.in_flight,
                "restarts": w.restarts,
            },
        )

    def _consumer_health(self) -> ComponentHealth:
        w = self._w
        consumer = w._consumer
        silent = time.monotonic() - consumer.last_activity if consumer else 0.0
        status: Health = "healthy"
        if (
            consumer is None
            or w.status != "running"
            or (consumer.requested > 0 and silent > 3 * w.config.pull_idle_heartbeat)
        ):
            status = "degraded"
        return ComponentHealth(
            name="consumer",
            status=status,
            detail={
                "status": w.status,
                "silent_s": f"{silent:.1f}",
                "pull_resets": str(consumer.resets if consumer else 0),
            },
        )

    # -- control ------------------------------------------------------------------------

    async def on_control(self, msg: Msg) -> None:
        try:
            req = _control.decode(msg.data)
        except (msgspec.DecodeError, msgspec.ValidationError) as exc:
            reply = ControlReply(ok=False, op="?", error=f"bad control request: {exc}")
        else:
            if req.op == "passivate":
                reply = await self._passivate(req.key)
            else:
                reply = self._control(req)
        if msg.reply:
            with contextlib.suppress(Exception):
                await msg.respond(_encoder.encode(reply))

    def _control(self, req: ControlRequest) -> ControlReply:
        w = self._w
        if req.op == "stats":
            return ControlReply(ok=True, op=req.op, stats=self.stats())
        if req.op == "health":
            return ControlReply(ok=True, op=req.op, health=self.health())
        if req.op == "drain":
            w.request_drain(req.grace)
            return ControlReply(ok=True, op=req.op)
        if req.op == "stop":
            w.request_drain(0.0)
            return ControlReply(ok=True, op=req.op)
        if req.op == "instances":
            return ControlReply(ok=True, op=req.op, instances=self.instances())
        return ControlReply(
            ok=False,
            op=req.op,
            error="unknown op: use drain, stop, stats, health, instances or passivate",
        )

    # -- instances ----------------------------------------------------------------------

    #: Instances listed at most, the most recently used (a worker may hold millions).
    MAX_LISTED = 500

    def instances(self) -> list[InstanceInfo]:
        """Live instances (most recently used last) and those passivated lately."""
        w = self._w
        live = list(w._handling.instances)[-self.MAX_LISTED :]
        gone = w._handling.passivator.passivated_lately()[-self.MAX_LISTED :]
        return [InstanceInfo(key=k, state="passivated") for k in gone] + [
            InstanceInfo(key=k, state="active") for k in live
        ]

    async def _passivate(self, key: str) -> ControlReply:
        """Stop one instance now (an operator's `stop-instance`); its state is kept."""
        w = self._w
        if w.spec.keyless:
            error = f"{w.actor_type} is keyless: it has no instance per key"
            return ControlReply(ok=False, op="passivate", error=error)
        if not key:
            return ControlReply(ok=False, op="passivate", error="give the key to passivate")
        stopped = await w._handling.passivator.stop_now(key)
        if stopped is False:
            return ControlReply(
                ok=False,
                op="passivate",
                error=f"busy: messages to {key!r} kept running or queued; try again",
            )
        done = [InstanceInfo(key=key, state="passivated")] if stopped else []
        if stopped:
            log.info("instance %s/%s passivated by request", w.actor_type, key)
        return ControlReply(ok=True, op="passivate", instances=done)


def _loop_health(lag: float) -> ComponentHealth:
    status: Health = "healthy" if lag < 0.5 else ("degraded" if lag < 5 else "unhealthy")
    return ComponentHealth(name="event_loop", status=status, detail={"lag_s": f"{lag:.3f}"})
