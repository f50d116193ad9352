"""A send's view of a stream that cannot take a message for a moment.

A cluster electing a stream's leader, or a node down, looks to a publisher like
no responders, a JetStream 503 or a PubAck that never comes. `Mesh._store`
keeps trying such a send with the same headers (so the same `Nats-Msg-Id`)
until its deadline; `Outage` holds that deadline, how long each attempt waits
for its PubAck, and the pause before the next, and tells a stream that does not
exist (JetStream says no stream stores the subject) from one that is away.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

from ._errors import ActorMeshError, BrokerUnavailable, NoSuchActorType
from ._retry import RetryPolicy
from ._wire import Hdr

if TYPE_CHECKING:
    from ._mesh import Mesh

__all__ = ["Outage", "first_attempt", "first_wait", "missing", "no_pub_ack"]


#: A PubAck this late is given up and the message resent (same id), so a publish
#: lost with a stream leader that died is retried: this share of the send's
#: timeout, and at least `_RESEND_MIN` seconds.
_RESEND_SHARE = 1 / 3
_RESEND_MIN = 1.0
#: Pauses between sends that met no stream leader (jittered, capped).
_UNAVAILABLE_BACKOFF = RetryPolicy(
    attempts=1_000_000, base=0.05, multiplier=2.0, cap=0.5, jitter=0.2
)
#: What an outage of a stream can look like; retried until the deadline.
_TRANSIENT = frozenset(
    {"no_pub_ack", "no_responders", "jetstream_unavailable", "disconnected", "in_process"}
)
_EXPECTED_LAST = "Nats-Expected-Last-Subject-Sequence"
#: How long after JetStream first says a subject has no stream it is asked again.
_RECHECK = 0.5


class Outage:
    """One send's view of an unavailable stream: the deadline, how long each
    attempt waits for its PubAck, and the pause before the next."""

    __slots__ = ("_checked", "_end", "_loop", "_mesh", "_resend", "_retries", "_started",
                 "_subject", "_timeout", "at", "msg_id")  # fmt: skip

    def __init__(
        self,
        mesh: Mesh,
        subject: str,
        headers: dict[str, str] | None,
        timeout: float | None,
        at: float | None,
        elapsed: float,
    ) -> None:
        self._mesh = mesh
        self._subject = subject
        self._timeout = timeout
        self.at = at
        self._loop = loop = asyncio.get_running_loop()
        self._started = start = loop.time() - elapsed
        self._end = at if at is not None else None if timeout is None else start + timeout
        self.msg_id = headers.get(Hdr.MSG_ID, "") if headers else ""
        # Resending a message that has no id could store it twice; a compare-and-set
        # cannot be applied twice.
        self._resend = bool(self.msg_id) or bool(headers and _EXPECTED_LAST in headers)
        self._retries = 0
        self._checked = False

    async def _confirmed_missing(self) -> bool:
        """Whether JetStream says, twice, that no stream stores the subject. Asked
        once, a cluster's meta leader that has just been elected may not have
        applied its log yet and answer "none" for a stream that exists: a send
        failed as `NoSuchActorType` (or a state commit dead-lettered) for that
        would be a loss, so the answer must still hold a moment later."""
        mesh, subject = self._mesh, self._subject
        if not await mesh.stream_missing(subject):
            return False
        left = _RECHECK if self._end is None else self._end - self._loop.time()
        await asyncio.sleep(max(0.0, min(_RECHECK, left)))
        return await mesh.stream_missing(subject)

    def attempt(self) -> tuple[float | None, float | None]:
        """This attempt's PubAck timeout, and its deadline on the loop's clock (None:
        the send's own)."""
        timeout = self._timeout
        if timeout is None or not self._resend:
            return timeout, None
        wait = max(_RESEND_MIN, timeout * _RESEND_SHARE)
        now = self._loop.time()
        left = (self._end or now) - now
        wait = min(wait, max(left, 0.0))
        return wait, now + wait

    async def handle(self, exc: BrokerUnavailable) -> None:
        """Return when the send should be tried again; raise otherwise."""
        if exc.reason not in _TRANSIENT or self._end is None:
            raise exc
        if exc.reason == "no_responders" and not self._checked:
            self._checked = True
            if await self._confirmed_missing():
                raise missing(self._subject) from None
        now = self._loop.time()
        if now >= self._end or (exc.reason == "no_pub_ack" and not self._resend):
            if self.at is not None:
                raise TimeoutError
            if exc.reason == "no_pub_ack" and self._timeout is not None:
                exc = no_pub_ack(self._subject, self._timeout)  # the whole wait, not the last
            exc.msg_id, exc.waited = self.msg_id, now - self._started
            raise exc
        self._retries += 1
        if exc.reason != "no_pub_ack":  # a lost PubAck has been waited for already
            await asyncio.sleep(min(_UNAVAILABLE_BACKOFF.delay(self._retries), self._end - now))


def first_wait(headers: dict[str, str] | None, timeout: float | None) -> float | None:
    """How long a send's first attempt waits for its PubAck: a share of `timeout`
    if the message may be resent (under its id, or a compare-and-set), else all
    of it."""
    if timeout is None or not headers:
        return timeout
    if Hdr.MSG_ID not in headers and _EXPECTED_LAST not in headers:
        return timeout
    return min(timeout, max(_RESEND_MIN, timeout * _RESEND_SHARE))


def first_attempt(
    headers: dict[str, str] | None, timeout: float | None, at: float | None
) -> tuple[float | None, float | None]:
    """A send's first PubAck wait (`first_wait`) and, for a request with deadline
    `at` that may be resent, the loop's clock when that shorter wait ends (else
    None: the send's own deadline ends it)."""
    wait = first_wait(headers, timeout)
    if at is None or wait is None or wait == timeout:
        return wait, None
    return wait, asyncio.get_running_loop().time() + wait


def no_pub_ack(subject: str, timeout: float | None) -> BrokerUnavailable:
    return BrokerUnavailable(
        f"no PubAck for {subject} within {timeout or 0:g}s: the broker is unreachable or "
        "overloaded, or the stream has no leader; retrying with the same msg_id is safe",
        reason="no_pub_ack",
        subject=subject,
    )


def missing(subject: str) -> ActorMeshError:
    """The error for a subject no stream stores (JetStream says so)."""
    if ".mbox." in subject:
        return NoSuchActorType(subject.split(".")[2], subject=subject)
    err = ActorMeshError(
        f"no JetStream stream stores {subject}: it was never created, or was deleted"
    )
    err.code = "no_stream"
    return err
