"""Tool calls in traces.

Traces follow the OpenTelemetry GenAI semantic conventions for tool execution
(`execute_tool` spans; development status, names spelled out here):

- the caller's `mesh.tools.call` / `ctx.tools.call` runs in an INTERNAL span
  `execute_tool <tool>` (`ToolSpans`, set as `mesh.tools.tracer` by `instrument`),
  whose child is the call's `ask` producer span;
- the worker's consumer span of a tool call is named `execute_tool <tool>` too and
  carries the same `gen_ai.*` attributes besides the messaging ones
  (`name_tool_span`, from the tracing interceptor).

A handler that calls tools runs inside its consumer span, so an agent's nested
calls are one trace: caller → ask → execute_tool → (handler) → execute_tool → ...
Tool metrics are in `_toolmetrics`.
"""

from __future__ import annotations

from contextlib import AbstractContextManager
from typing import TYPE_CHECKING, Any

from .._wire import Hdr

if TYPE_CHECKING:
    from .._hooks import SpanHandle
    from .._tools import ToolSpec
    from ._native import MeshTracer
    from ._tracing import OtelTracer

__all__ = ["ToolSpans", "name_tool_span", "span_name", "tool_attributes"]

# GenAI semantic conventions (execute_tool span).
OPERATION_NAME = "gen_ai.operation.name"
EXECUTE_TOOL = "execute_tool"
TOOL_NAME = "gen_ai.tool.name"
TOOL_CALL_ID = "gen_ai.tool.call.id"
TOOL_DESCRIPTION = "gen_ai.tool.description"
TOOL_TYPE = "gen_ai.tool.type"
#: A tool is a handler the mesh calls for the agent: a function, in the conventions.
FUNCTION = "function"
#: Descriptions are docstrings: the first paragraph says enough on a span.
_DESCRIPTION_MAX = 512


def span_name(tool: str) -> str:
    return f"{EXECUTE_TOOL} {tool}"


def _short(description: str) -> str:
    return description.split("\n\n", 1)[0][:_DESCRIPTION_MAX]


def tool_attributes(tool: str, call_id: str, description: str) -> dict[str, Any]:
    """The `gen_ai.*` attributes of an `execute_tool` span."""
    attrs: dict[str, Any] = {OPERATION_NAME: EXECUTE_TOOL, TOOL_NAME: tool, TOOL_TYPE: FUNCTION}
    if call_id:
        attrs[TOOL_CALL_ID] = call_id
    if description:
        attrs[TOOL_DESCRIPTION] = _short(description)
    return attrs


class ToolSpans:
    """The `actormesh._hooks.ToolTracer` hook over either tracer: the caller's
    `execute_tool <tool>` span (INTERNAL, current while the call runs)."""

    __slots__ = ("_tracer",)

    def __init__(self, tracer: MeshTracer | OtelTracer) -> None:
        self._tracer = tracer

    def tool_call(
        self, *, tool: str, call_id: str, description: str
    ) -> AbstractContextManager[SpanHandle]:
        span: AbstractContextManager[SpanHandle] = self._tracer.internal(
            span_name(tool), tool_attributes(tool, call_id, description)
        )
        return span


def name_tool_span(spec: ToolSpec, headers: dict[str, str]) -> None:
    """Make the current (consumer) span the worker's `execute_tool` span of `spec`.

    Works through the OpenTelemetry API, so for either tracer; does nothing to a
    span that is not recorded."""
    from opentelemetry import trace

    span = trace.get_current_span()
    if not span.is_recording():
        return
    span.update_name(span_name(spec.name))
    span.set_attributes(
        tool_attributes(spec.name, headers.get(Hdr.TOOL_CALL_ID, ""), spec.description)
    )
