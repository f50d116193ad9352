"""Escalation: what happens when restarts are not enough.

A group past its restart intensity fails (its workers are left alone), and so
does the whole supervisor past its own. Either way an `escalated` event goes to
this mesh's events stream, to the parent supervisor's mesh (`parent_prefix`),
and to the webhook, which is retried with the library's `retry`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable

import aiohttp
import msgspec

from actormesh import ActorMeshError, Event, RetryPolicy
from actormesh.lowlevel import RetryExhausted, Subjects, retry

from ._state import Failure, GroupRuntime, SupervisorState
from ._tasks import TaskSet
from ._timeline import Timeline
from ._views import Slot

__all__ = ["WEBHOOK_RETRY", "Escalator"]

log = logging.getLogger("actormesh.supervisor")

_encode = msgspec.json.Encoder().encode

#: Three tries, 1 s then 2 s apart: a webhook briefly down still hears of it.
WEBHOOK_RETRY = RetryPolicy(attempts=3, base=1.0, multiplier=2.0, cap=2.0, jitter=0.0)


class WebhookRefused(ActorMeshError):
    """The webhook answered with a status of 300 or more."""

    code = "webhook_refused"
    retryable = True

    def __init__(self, status: int) -> None:
        super().__init__(f"the webhook answered {status}")
        self.status = status


class Escalator:
    def __init__(self, state: SupervisorState, timeline: Timeline, tasks: TaskSet) -> None:
        self.state = state
        self.timeline = timeline
        self.tasks = tasks
        self._http: aiohttp.ClientSession | None = None
        #: Told of every escalation after it is recorded (a host supervisor's tree
        #: agent hands it to the root); an exception is logged, never raised.
        self.hooks: list[Callable[[Event], Awaitable[None]]] = []

    async def group_failed(self, group: GroupRuntime, slot: Slot, f: Failure) -> None:
        """`group` went over its intensity: mark it (and its dead slots) failed."""
        spec = group.spec
        group.failed = True
        group.failed_at = time.time()
        group.failed_reason = (
            f"more than {spec.intensity} restarts within {spec.period:g}s; "
            f"last: {slot.worker_id} {f.reason}"
        )
        totals = self.state.escalations_total
        totals[spec.name] = totals.get(spec.name, 0) + 1
        log.error("group %s failed: %s; escalating", spec.name, group.failed_reason)
        for s in group.slots:
            if s.state == "dead":
                s.state = "failed"
        await self.escalate(
            self.timeline.event(
                "escalated", slot=slot, reason=group.failed_reason,
                detail={
                    "scope": "group", "strategy": spec.strategy,
                    "intensity": str(spec.intensity), "period": f"{spec.period:g}",
                    "supervisor": self.state.sup.name, "prefix": self.state.options.prefix,
                },
            )
        )  # fmt: skip

    async def supervisor_failed(self, slot: Slot, f: Failure) -> None:
        """The supervisor went over its own intensity, across all groups."""
        state, sup = self.state, self.state.sup
        state.failed = True
        state.failed_reason = (
            f"more than {sup.intensity} restarts within {sup.period:g}s across "
            f"all groups; last: {slot.worker_id} {f.reason}"
        )
        state.escalations_total[""] = state.escalations_total.get("", 0) + 1
        log.error("supervisor %s failed: %s; escalating", sup.name, state.failed_reason)
        await self.escalate(
            self.timeline.event(
                "escalated", slot=slot, reason=state.failed_reason,
                detail={
                    "scope": "supervisor", "intensity": str(sup.intensity),
                    "period": f"{sup.period:g}", "supervisor": sup.name,
                    "prefix": state.options.prefix,
                },
            )
        )  # fmt: skip

    async def escalate(self, evt: Event) -> None:
        """To our own events stream, the parent supervisor's mesh, and the webhook."""
        await self.timeline.publish(evt)
        await self._to_parent(evt)
        if self.state.sup.webhook:
            self.tasks.spawn(self._post_webhook(evt), "webhook")
        for hook in self.hooks:
            try:
                await hook(evt)
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("escalation hook %r failed", hook)

    async def _to_parent(self, evt: Event) -> None:
        parent, mesh = self.state.sup.parent_prefix, self.state.mesh
        if not parent or mesh is None:
            return
        subject = Subjects(parent).event("escalated")
        data = _encode(evt)
        try:
            await mesh.publish(subject, data, timeout=2.0)
        except asyncio.CancelledError:
            raise
        except ActorMeshError as exc:
            # No events stream there (yet): a parent listening still hears it.
            log.warning("escalation to %s not stored (%s): sent without storage",
                        subject, exc)  # fmt: skip
            with contextlib.suppress(Exception):
                await mesh.nc.publish(subject, data)

    async def _post_webhook(self, evt: Event) -> None:
        body = _encode(evt)

        async def post() -> None:
            if self._http is None:
                self._http = aiohttp.ClientSession()
            async with self._http.post(
                self.state.sup.webhook,
                data=body,
                headers={"Content-Type": "application/json"},
                timeout=aiohttp.ClientTimeout(total=5.0),
            ) as resp:
                if resp.status >= 300:
                    raise WebhookRefused(resp.status)

        def on_retry(attempt: int, exc: Exception, delay: float) -> None:
            log.warning("webhook failed (attempt %d): %r", attempt - 1, exc)

        try:
            await retry(post, WEBHOOK_RETRY, retry_if=_retryable, on_retry=on_retry)
        except RetryExhausted as exc:
            log.error("escalation not delivered to the webhook after %d attempts: %r",
                      exc.attempts, exc.last_error)  # fmt: skip

    async def close(self) -> None:
        if self._http is not None:
            await self._http.close()


def _retryable(exc: Exception) -> bool:
    return isinstance(exc, (aiohttp.ClientError, TimeoutError, WebhookRefused))
