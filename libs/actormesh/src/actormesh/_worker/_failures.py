"""When a message does not end well: expired asks, undecodable input, handler
failures (supervision, restart intensity, escalation), and dead letters."""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from typing import TYPE_CHECKING

from nats.aio.msg import Msg

from .._errors import BadMessage
from .._errwire import error_fields
from .._interceptor import MessageInput
from .._subjects import deliveries_of, stream_seq_of
from .._wire import Hdr

if TYPE_CHECKING:
    from ._facade import Worker

__all__ = ["EXIT_ESCALATED", "Failures"]

log = logging.getLogger("actormesh.worker")

#: The exit code of a worker whose restarts exceeded its supervision intensity.
EXIT_ESCALATED = 3


class Failures:
    """Supervision state (the restart window) and the ways a message is given up."""

    def __init__(self, worker: Worker) -> None:
        self._w = worker
        self._restart_times: deque[float] = deque()

    async def expired(self, inp: MessageInput, deadline: str) -> None:
        w = self._w
        w.expired += 1
        w._handling.report("expired", inp, 0.0)
        await self.dead_letter(
            inp.msg,
            code="deadline_exceeded",
            type_="DeadlineExceeded",
            message=f"ask deadline {deadline} passed before it ran",
        )

    async def bad_message(self, inp: MessageInput, exc: Exception) -> None:
        """Input that does not decode to a handled type: dead-lettered at once."""
        w = self._w
        detail = str(exc) or type(exc).__name__
        bad = BadMessage(
            f"{w.actor_type} cannot decode the message: {detail}",
            actor_type=w.actor_type,
            detail=detail,
        )
        w.failed += 1
        w._handling.report("bad_message", inp, 0.0)
        if inp.reply_to:
            await w._replies.error(inp.reply_to, bad, status="400")
        await self.dead_letter(inp.msg, code=bad.code, type_="BadMessage", message=bad.message)

    async def handler_failed(self, inp: MessageInput, exc: Exception) -> None:
        """The handler raised: supervise the instance, then reply, retry or dead-letter."""
        w = self._w
        msg, key, deliveries = inp.msg, inp.key, inp.deliveries
        fields = error_fields(exc)
        log.warning(
            "%s/%s: handler raised %s: %s (delivery %d)",
            w.actor_type,
            key,
            fields.type,
            exc,
            deliveries,
        )
        await self.supervise(key, exc)
        if inp.reply_to:
            # The asker is told at once and decides; the message is settled.
            await w._replies.error(inp.reply_to, exc)
            await w._settler.ack(msg)
            return
        if not fields.retryable or deliveries >= w.spec.mailbox.max_deliver:
            await self.dead_letter(
                msg,
                code=fields.code,
                type_=fields.type,
                message=fields.message or fields.type,
                deliveries=deliveries,
            )
            return
        w.redelivered += 1
        await w._settler.nak(msg, w.spec.mailbox.redelivery_delay(deliveries))

    async def supervise(self, key: str, exc: Exception) -> None:
        w = self._w
        policy = w.spec.supervision
        if policy.on_error == "resume":
            return
        now = time.monotonic()
        window = self._restart_times
        window.append(now)
        while window and now - window[0] > policy.within:
            window.popleft()
        w.restarts += 1
        w._handling.report("restarted", None, 0.0)
        instances = w._handling.instances
        old = instances.pop(key, None)
        if old is not None:
            await w._handling.stop_instance(key, old)
        if len(window) > policy.max_restarts:
            await self._escalate(exc, len(window), policy.within)
            return
        if policy.on_error == "restart" and old is not None:
            fresh = w.spec.cls()
            fresh.key = key
            try:
                await fresh.on_restart(exc)
            except Exception:
                log.exception(
                    "on_restart of %s/%s failed; it starts afresh on its next message",
                    w.actor_type,
                    key,
                )
                return
            instances[key] = fresh

    async def _escalate(self, exc: Exception, restarts: int, within: float) -> None:
        w = self._w
        if w.status == "escalated":
            return
        log.error(
            "%s: %d restarts within %.0fs (intensity %d): escalating and exiting",
            w.id,
            restarts,
            within,
            w.spec.supervision.max_restarts,
        )
        w.status = "escalated"
        w.exit_code = EXIT_ESCALATED
        await w._reporter.event(
            "escalated",
            reason=f"{type(exc).__name__}: {exc}",
            detail={"restarts": str(restarts), "within": str(within)},
        )
        # Unfinished messages stay in JetStream for the next worker.
        w.request_drain(grace=min(5.0, w.config.drain_grace))

    async def dead_letter(
        self, msg: Msg, *, code: str, type_: str, message: str, deliveries: int | None = None
    ) -> None:
        w = self._w
        deliveries = deliveries_of(msg) if deliveries is None else deliveries
        seq = stream_seq_of(msg)
        subject = w._handling.mailbox_subject(msg)
        headers = {
            k: v for k, v in (msg.headers or {}).items() if k not in (Hdr.REPLY_TO, Hdr.MSG_ID)
        }
        headers.update(
            {
                # Dead-lettering the same stored message twice (a crash between the two
                # steps below) is deduplicated by the DLQ stream.
                Hdr.MSG_ID: f"{w.mesh.subjects.mailbox_stream(w.actor_type)}:{seq}",
                Hdr.ERROR_CODE: code,
                Hdr.ERROR_TYPE: type_,
                Hdr.ERROR_MESSAGE: " ".join(message.split())[:1000],
                Hdr.DELIVERIES: str(deliveries),
                Hdr.WORKER: w.id,
                Hdr.ORIGINAL_SUBJECT: subject,
                Hdr.ORIGINAL_SEQ: str(seq),
                Hdr.DEAD_AT: f"{time.time():.3f}",
            }
        )
        try:
            await w.mesh.publish(w.mesh.subjects.dlq(w.actor_type), msg.data, headers=headers)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            log.error(
                "dead-lettering %s seq %d failed (%r): keeping it in the mailbox",
                w.actor_type,
                seq,
                exc,
            )
            await w._settler.nak(msg, w.spec.mailbox.redelivery_delay(max(deliveries, 1)))
            return
        await w._settler.ack(msg)
        w.dead_lettered += 1
        w._handling.report_raw("dead_lettered", msg)
        await w._reporter.event(
            "dead_lettered",
            reason=f"{type_}: {message}"[:500],
            detail={"seq": str(seq), "subject": subject, "code": code},
        )
