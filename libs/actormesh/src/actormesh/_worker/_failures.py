"""When a message does not end well: expired asks, undecodable input, handler
failures (supervision, restart intensity, escalation), and dead letters."""

from __future__ import annotations

import asyncio
import logging
import time
from typing import TYPE_CHECKING

from nats.aio.msg import Msg

from .._errors import BadMessage, BrokerUnavailable, ToolDenied
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

    async def denied(self, inp: MessageInput, tool: str) -> None:
        """A message to a tool handler from a principal without a grant: an ask is
        answered with `ToolDenied`; a tell is dead-lettered (replayable once granted)."""
        w = self._w
        principal = inp.headers.get(Hdr.PRINCIPAL, "")
        denied = ToolDenied(tool, principal)
        w.denied += 1
        w._handling.report("denied", inp, 0.0)
        log.warning("%s: %s", w.actor_type, denied.message)
        if inp.reply_to:
            await w._replies.error(inp.reply_to, denied, status="403")
            await w._settler.ack(inp.msg)
            return
        await self.dead_letter(
            inp.msg, code=denied.code, type_="ToolDenied", message=denied.message
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
        if isinstance(exc, BrokerUnavailable):
            await self._broker_unavailable(inp, exc)
            return
        fields = error_fields(exc)
        log.warning(
            "%s/%s: handler raised %s: %s (delivery %d)",
            w.actor_type,
            key,
            fields.type,
            exc,
            deliveries,
        )
        try:
            await self.supervise(key, exc, inp.msg)
        except asyncio.CancelledError:
            raise
        except Exception:
            # The message is settled below all the same, with the handler's reason.
            log.exception("supervising %s/%s failed", w.actor_type, key)
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

    async def _broker_unavailable(self, inp: MessageInput, exc: BrokerUnavailable) -> None:
        """A write the handling needed (its state commit, a send) found no stream
        leader for longer than the mesh's publish timeout (a cluster electing one):
        not the message's failure. The instance is dropped (its state reloads from
        the bucket) and the message delivered again, not counted against the key's
        intensity. Its deliveries still count: an outage longer than `max_deliver`
        of them dead-letters it (as `DeliveriesExhausted`, unless its effect is in
        the state), so nothing is lost or stranded."""
        w = self._w
        log.warning(
            "%s/%s: the broker could not take a write (%s); delivering the message again",
            w.actor_type,
            inp.key,
            exc,
        )
        old = w._handling.drop(inp.key)
        if old is not None:
            await w._handling.stop_instance(inp.key, old)
        # At least a second: an election takes seconds, the delivery count is finite.
        await w._settler.nak(inp.msg, max(w.spec.mailbox.redelivery_delay(1), 1.0))

    async def supervise(self, key: str, exc: Exception, msg: Msg | None = None) -> None:
        """Restart (or stop) the failed instance; contain the failure to its key
        (`_containment`: count it once per message and per key, park the key past
        its intensity) and escalate only when the process is failing."""
        w = self._w
        policy = w.spec.supervision
        if policy.on_error == "resume":
            return
        w.restarts += 1
        w._handling.report("restarted", None, 0.0)
        instances = w._handling.instances
        old = w._handling.drop(key)
        if old is not None:
            await w._handling.stop_instance(key, old)
        try:
            # No instance to drop: its activation (on_start) is what failed.
            verdict = await w._containment.failed(key, msg, activated=old is not None)
        except asyncio.CancelledError:
            raise
        except Exception as internal:
            log.exception("supervision of %s/%s failed", w.actor_type, key)
            verdict = ("internal_error", {"error": f"{type(internal).__name__}: {internal}"})
        if verdict is not None:
            await self._escalate(exc, *verdict)
            return
        if policy.on_error == "restart" and old is not None:
            try:
                # Restart means reload: the committed state, not the failed run's.
                fresh = await w._handling.fresh_instance(key)
                await fresh.on_restart(exc)
            except Exception:
                log.exception(
                    "on_restart of %s/%s failed; it starts afresh on its next message",
                    w.actor_type,
                    key,
                )
                return
            instances[key] = fresh

    async def _escalate(self, exc: Exception, rule: str, detail: dict[str, str]) -> None:
        """The process is failing (`rule`, see `_containment`): drain and exit 3."""
        w = self._w
        if w.status == "escalated":
            return
        policy = w.spec.supervision
        log.error(
            "%s: escalating and exiting: %s %s within %.0fs (last failure %s: %s)",
            w.id,
            rule,
            detail,
            policy.within,
            type(exc).__name__,
            exc,
        )
        w.status = "escalated"
        w.exit_code = EXIT_ESCALATED
        await w._reporter.event(
            "escalated",
            reason=f"{rule}: {type(exc).__name__}: {exc}",
            detail={**detail, "rule": rule, "within": str(policy.within)},
        )
        # Unfinished messages stay in JetStream for the next worker.
        w.request_drain(grace=min(5.0, w.config.drain_grace))

    async def unsettled(self, key: str, msg: Msg, exc: BaseException) -> None:
        """Processing raised past its own failure handling (a bug, an interceptor,
        a `SystemExit` or `KeyboardInterrupt` from a handler): nak with backoff,
        or dead-letter at the last delivery. The worker carries on; nothing is
        supervised, the key's instance is left as it is."""
        w = self._w
        w.failed += 1
        deliveries = deliveries_of(msg)
        mailbox = w.spec.mailbox
        if deliveries >= mailbox.max_deliver:
            await self.dead_letter(
                msg,
                code="internal_error",
                type_=type(exc).__name__,
                message=f"handling raised {_describe(exc)}",
                deliveries=deliveries,
            )
            return
        w.redelivered += 1
        await w._settler.nak(msg, mailbox.redelivery_delay(deliveries))

    async def exhausted(self, key: str, msg: Msg) -> None:
        """Delivered past `max_deliver`: its last delivery did not settle it (the
        dead-letter stream refused it, a crash, a lost ack). Dead-letter it now,
        with the reason its last delivery failed if this process knows it."""
        w = self._w
        if w.spec.tools and await w.mesh.tools.approvals.holding(w.actor_type, msg):
            # Its deliveries went on waiting for an operator, not on failing: not
            # exhausted. Handled as usual (the approval gate decides what comes next).
            await w._handling.process(key, msg)
            return
        if await w._handling.already_applied(key, msg):
            # Its last delivery committed the state, then was not acked (a crash): its
            # effect is there, so it is done, not a dead letter (replaying it from
            # there would apply it twice).
            await w._settler.ack(msg)
            return
        deliveries = deliveries_of(msg)
        reason = _unstored.get(
            (w.mesh.subjects.mailbox_stream(w.actor_type), stream_seq_of(msg)),
            (
                "max_deliver_exceeded",
                "DeliveriesExhausted",
                f"delivered {deliveries} times, past max_deliver "
                f"{w.spec.mailbox.max_deliver}: its last delivery did not settle it "
                "(a failed dead-lettering, a crash or a lost ack)",
            ),
        )
        code, type_, message = reason
        await self.dead_letter(msg, code=code, type_=type_, message=message, deliveries=deliveries)

    async def dead_letter(
        self, msg: Msg, *, code: str, type_: str, message: str, deliveries: int | None = None
    ) -> None:
        """Store `msg` in the dead-letter stream with the reason, then ack it. If
        the stream refuses or is unreachable, nak it with backoff: it comes back
        past `max_deliver` and `exhausted` tries again, until the stream is back."""
        w = self._w
        deliveries = deliveries_of(msg) if deliveries is None else deliveries
        seq = stream_seq_of(msg)
        stream = w.mesh.subjects.mailbox_stream(w.actor_type)
        subject = w._handling.mailbox_subject(msg)
        # One line each: a handler's own error code or message may hold line breaks.
        code, type_ = "".join(code.split())[:200], "".join(type_.split())[:200]
        message = " ".join(message.split())[:1000]
        # The sender's headers go along, but not the server's own (`Nats-*`: an
        # expected-stream or TTL header meant for the mailbox would make the
        # dead-letter stream refuse the message, every time) nor the reply inbox.
        headers = {
            k: v
            for k, v in (msg.headers or {}).items()
            if k != Hdr.REPLY_TO and not k.lower().startswith("nats-")
        }
        headers.update(
            {
                # Dead-lettering the same stored message twice (a crash between the two
                # steps below) is deduplicated by the DLQ stream.
                Hdr.MSG_ID: f"{stream}:{seq}",
                Hdr.ERROR_CODE: code,
                Hdr.ERROR_TYPE: type_,
                Hdr.ERROR_MESSAGE: message,
                Hdr.DELIVERIES: str(deliveries),
                Hdr.WORKER: w.id,
                Hdr.ORIGINAL_SUBJECT: subject,
                Hdr.ORIGINAL_SEQ: str(seq),
                Hdr.DEAD_AT: f"{time.time():.3f}",
            }
        )
        original_id = (msg.headers or {}).get(Hdr.MSG_ID)
        if original_id:
            headers[Hdr.ORIGINAL_MSG_ID] = original_id
        data = _fit(msg.data, headers, w.mesh.nc.max_payload)
        try:
            await w.mesh.publish(w.mesh.subjects.dlq(w.actor_type), data, headers=headers)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            log.error(
                "dead-lettering %s seq %d failed (%r): keeping it in the mailbox, "
                "to try again at its next delivery",
                w.actor_type,
                seq,
                exc,
            )
            _remember((stream, seq), (code, type_, message))
            await w._settler.nak(msg, w.spec.mailbox.redelivery_delay(max(deliveries, 1)))
            return
        _unstored.pop((stream, seq), None)
        await w._settler.ack(msg)
        w.dead_lettered += 1
        w._handling.report_raw("dead_lettered", msg)
        await w._reporter.event(
            "dead_lettered",
            reason=f"{type_}: {message}"[:500],
            detail={"seq": str(seq), "subject": subject, "code": code,
                    "traceparent": headers.get(Hdr.TRACEPARENT, "")},
        )  # fmt: skip


#: Why messages whose dead-lettering failed were given up, by (mailbox stream,
#: stream sequence): their next delivery is dead-lettered with that reason. Kept
#: per process (workers of one type in a process share it), bounded; a message
#: redelivered to another process gets the generic reason of `exhausted`.
_unstored: dict[tuple[str, int], tuple[str, str, str]] = {}
_UNSTORED_MAX = 10_000
#: Set on a dead letter whose payload was cut to fit the server's max_payload:
#: the original size in bytes.
TRUNCATED = "Am-Truncated-From"


def _remember(where: tuple[str, int], reason: tuple[str, str, str]) -> None:
    _unstored.pop(where, None)
    _unstored[where] = reason
    while len(_unstored) > _UNSTORED_MAX:
        del _unstored[next(iter(_unstored))]


def _fit(data: bytes, headers: dict[str, str], max_payload: int) -> bytes:
    """`data`, cut to fit with `headers` in one message: a mailbox message near
    the size limit plus the reason headers must still reach the dead letters."""
    size = 12 + sum(len(k.encode()) + len(v.encode()) + 4 for k, v in headers.items())
    room = max_payload - size - 64  # the truncation header, below
    if len(data) <= room + 64:
        return data
    headers[TRUNCATED] = str(len(data))
    return data[: max(room, 0)]


def _describe(exc: BaseException) -> str:
    """`Type: message`, even for an exception whose `str` raises."""
    try:
        text = str(exc)
    except Exception:
        text = ""
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__
