"""The sender-side tracing hook: `Mesh.tracer`. `None` (the default) costs one
attribute check per tell, ask or reply.

`actormesh.observability` provides the implementations; anything with these
methods works (a test double, another tracing system). The worker side (the
consumer span around handling) plugs in through the worker interceptor seam
(`actormesh._interceptor`); `consumer` is what that interceptor calls.
"""

from __future__ import annotations

from contextlib import AbstractContextManager
from typing import Protocol

__all__ = ["NO_SPAN", "SpanHandle", "ToolTracer", "Tracer"]


class SpanHandle(Protocol):
    def error(self, exc: BaseException) -> None:
        """Mark the span failed with this exception."""


class Tracer(Protocol):
    def producer(
        self, *, destination: str, headers: dict[str, str], operation: str
    ) -> AbstractContextManager[SpanHandle]:
        """A span around sending; injects the trace context into `headers`.

        Like `consumer`, it marks the span failed when an exception leaves it."""

    def sent(self, *, destination: str, headers: dict[str, str], operation: str) -> None:
        """A producer span of no length, for a message sent without waiting on it
        (`tell_many`); injects the trace context into `headers`."""

    def consumer(
        self,
        *,
        destination: str,
        headers: dict[str, str],
        actor_type: str,
        message_type: str,
        key: str,
        deliveries: int,
    ) -> AbstractContextManager[SpanHandle]:
        """A span around handling; continues the trace in `headers`."""


class ToolTracer(Protocol):
    """The caller's side of a tool call: `ToolBus.tracer` (None costs one check).

    The worker names its consumer span of a tool call after the tool itself
    (`actormesh.observability`)."""

    def tool_call(
        self, *, tool: str, call_id: str, description: str
    ) -> AbstractContextManager[SpanHandle]:
        """A span around the call (`execute_tool <tool>`), current while it runs, so
        the call's ask is its child."""


class _NoSpan:
    """The span scope when tracing is off: a shared object that does nothing."""

    def __enter__(self) -> _NoSpan:
        return self

    def __exit__(self, *exc: object) -> None:
        return None

    def error(self, exc: BaseException) -> None:
        return None


NO_SPAN = _NoSpan()
