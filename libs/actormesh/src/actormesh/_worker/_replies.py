"""Replies to asks: the handler's value, or its error (see `actormesh._errwire`)."""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import Coroutine
from typing import TYPE_CHECKING, Any

import msgspec

from .._errors import ActorMeshError
from .._errwire import encode_error_reply
from .._nats import Client, flushed

if TYPE_CHECKING:
    from .._mesh import Mesh

__all__ = ["Replies"]

log = logging.getLogger("actormesh.worker")

_encoder = msgspec.json.Encoder()


class Replies:
    """Sends replies on the worker's connection, traced by the mesh's tracer."""

    def __init__(self, mesh: Mesh) -> None:
        self._mesh = mesh
        #: The connection replies are queued on directly, skipping nats-py's `publish`
        #: wrapper (set by the worker when it is an `actormesh._nats.Client` with its
        #: overrides on); None: `publish`.
        self.nc: Client | None = None

    def value_soon(self, reply_to: str, value: Any) -> Coroutine[Any, Any, None] | None:
        """`value`, done here when it can be (no tracer, a publishable subject, a
        reply that encodes): None, or what the caller must await (waking the
        flusher, once per loop turn; nats-py's `publish` when the connection is
        not up; or `value` itself). Saves the hot path two coroutines per ask."""
        nc = self.nc
        if nc is None or self._mesh.tracer is not None or not _publishable(reply_to):
            return self.value(reply_to, value)
        try:
            data = _encoder.encode(value)
        except (TypeError, msgspec.EncodeError):
            return self.value(reply_to, value)
        pending = nc.publish_soon(reply_to, data, "", None, checked=True)
        return None if pending is None else flushed(pending, f"reply to {reply_to}")

    async def value(self, reply_to: str, value: Any) -> None:
        try:
            data = _encoder.encode(value)
        except (TypeError, msgspec.EncodeError) as exc:
            await self.error(
                reply_to, ActorMeshError(f"the handler's reply cannot be encoded: {exc}")
            )
            return
        await self._send(reply_to, data, None, None)

    async def error(self, reply_to: str, exc: BaseException, *, status: str = "500") -> None:
        data, headers = encode_error_reply(exc, status=status)
        await self._send(reply_to, data, headers, exc)

    async def _send(
        self,
        reply_to: str,
        data: bytes,
        headers: dict[str, str] | None,
        error: BaseException | None,
    ) -> None:
        if not _publishable(reply_to):
            # From a header anyone can set: a subject past the server's control line
            # would make it close our connection, acks and all.
            log.warning("reply not sent: %r is not a subject to publish to", reply_to[:100])
            return
        mesh = self._mesh
        tracer = mesh.tracer
        try:
            if tracer is None:
                nc = self.nc
                if nc is not None:
                    # The subject was checked above, more strictly than `publish` does.
                    pending = nc.publish_soon(reply_to, data, "", headers, checked=True)
                    if pending is not None:
                        await pending
                else:
                    await mesh.nc.publish(reply_to, data, headers=headers)
                return
            headers = headers or {}
            with tracer.producer(destination=reply_to, headers=headers, operation="reply") as span:
                if error is not None:
                    span.error(error)
                await mesh.nc.publish(reply_to, data, headers=headers)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            log.warning("reply to %s not sent: %r", reply_to, exc)


#: Whitespace, an empty token, or a wildcard token.
_NOT_LITERAL = re.compile(r"\s|^\.|\.\.|\.$|(?:^|\.)[*>](?:\.|$)")
#: The longest reply subject answered (the server's control line is 4 KiB).
MAX_REPLY_SUBJECT = 1024


#: Subject prefixes (all but the last token) of replies found publishable: an
#: asker's inbox prefix is the same for all its asks, so the common case is a set
#: lookup and `str.isalnum` on the last token instead of a regular expression.
_GOOD_PREFIXES: set[str] = set()
_GOOD_PREFIXES_MAX = 4096


def _publishable(subject: str) -> bool:
    """A literal subject: tokens neither empty nor wildcards, no whitespace, short."""
    prefix, dot, last = subject.rpartition(".")
    if dot and prefix in _GOOD_PREFIXES and last.isalnum() and len(subject) <= MAX_REPLY_SUBJECT:
        return True
    ok = (
        0 < len(subject) <= MAX_REPLY_SUBJECT // 4 or 0 < len(subject.encode()) <= MAX_REPLY_SUBJECT
    ) and _NOT_LITERAL.search(subject) is None
    if ok and dot:
        if len(_GOOD_PREFIXES) >= _GOOD_PREFIXES_MAX:  # a bound: askers come and go
            _GOOD_PREFIXES.clear()
        _GOOD_PREFIXES.add(prefix)
    return ok
