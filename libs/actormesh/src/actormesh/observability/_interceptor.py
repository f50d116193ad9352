"""The consumer span: a worker interceptor around each handled message.

`instrument(mesh, ...)` puts one in `mesh.interceptors`, so every worker on that
mesh opens a span per message with whichever tracer `mesh.tracer` holds at the
time (none while it is None: `uninstrument` needs no worker restart). The
failure handling and the reply run inside the span, so the reply's producer span
is its child and their log lines carry its ids. A tool call's consumer span is
named `execute_tool <tool>`, with the GenAI attributes (`_tools`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .._interceptor import HandleMessage, MessageInput, WorkerInterceptor
from ._tools import name_tool_span

if TYPE_CHECKING:
    from .._mesh import Mesh

__all__ = ["TracingInterceptor", "install_tracing_interceptor", "remove_tracing_interceptor"]


class TracingInterceptor(WorkerInterceptor):
    """Continues the sender's trace in a consumer span around the message."""

    def __init__(self, mesh: Mesh) -> None:
        self._mesh = mesh

    def intercept_message(self, next: HandleMessage) -> HandleMessage:
        mesh = self._mesh

        async def traced(input: MessageInput) -> BaseException | None:
            tracer = mesh.tracer
            if tracer is None:
                return await next(input)
            message = input.message
            with tracer.consumer(
                destination=input.subject,
                headers=input.headers,
                actor_type=input.actor_type,
                message_type=type(message).__name__,
                key=input.key,
                deliveries=input.deliveries,
            ) as span:
                handler = input.handler
                if handler is not None and handler.tool is not None:
                    name_tool_span(handler.tool, input.headers)
                error = await next(input)
                if error is not None:
                    span.error(error)
                return error

        return traced


def install_tracing_interceptor(mesh: Mesh) -> None:
    """Put the consumer-span interceptor first in `mesh.interceptors`, once."""
    current = tuple(getattr(mesh, "interceptors", ()))
    if not any(isinstance(i, TracingInterceptor) for i in current):
        # A plain object standing in for a mesh (a test double) gets the attribute.
        mesh.interceptors = (TracingInterceptor(mesh), *current)


def remove_tracing_interceptor(mesh: Mesh) -> None:
    current = tuple(getattr(mesh, "interceptors", ()))
    kept = tuple(i for i in current if not isinstance(i, TracingInterceptor))
    if kept != current:
        mesh.interceptors = kept
