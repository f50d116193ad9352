"""The mesh's tools as an MCP server (the official `mcp` SDK's low-level server).

`tools/list` answers with what the caller's principal may call
(`mesh.tools.list_available_tools`), each tool's input and output schemas taken
as they are from its `ToolSpec` (msgspec-made JSON Schema, no pydantic model in
between). `tools/call` goes through `mesh.tools.call`, so validation, grants,
the deadline, approvals and metrics are the bus's, exactly as for any other
caller. A mesh error comes back as an MCP tool error (`isError: true`) whose
text starts with the mesh's error code (`tool_denied: ...`), so a model reading
it can tell a refusal from a failure.

With a `tracer` (an OpenTelemetry API tracer: `actormesh mcp` makes one from the
OTEL_* environment), each `tools/call` runs in a SERVER span of this process,
`tools/call <tool>` (the MCP semantic conventions' name and `mcp.*`, `gen_ai.*`
attributes), the child of the caller's trace context when the request's `_meta`
carries W3C `traceparent`/`tracestate`; the mesh's spans of the call (the bus's
`execute_tool`, the ask, the worker's) are its children. Without a tracer, the
caller's trace context is passed on as it is, so the mesh still continues it.

Who the caller is depends on the transport: on stdio, the principal the
process was started with; over streamable HTTP, the principal its bearer token
maps to (`_auth`), read from the request this message came with.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

import mcp.types as types
from mcp.server.context import ServerRequestContext
from mcp.server.lowlevel import Server

from actormesh import ActorMeshError

from ._auth import PRINCIPAL_SCOPE_KEY

if TYPE_CHECKING:
    from opentelemetry.trace import Span, Tracer

    from actormesh import Mesh

__all__ = ["TRACE_KEYS", "build_server", "fixed_principal", "http_principal"]

#: W3C trace context keys a caller may put in a request's `_meta`; passed on as
#: headers of the same name, so the mesh's spans continue the caller's trace.
TRACE_KEYS = ("traceparent", "tracestate")

#: Who is calling, from a request's context.
PrincipalOf = Callable[[ServerRequestContext[Any, Any]], str]


class NoPrincipal(ActorMeshError):
    """An HTTP request reached a handler without an authenticated principal."""

    code = "unauthenticated"


def fixed_principal(principal: str) -> PrincipalOf:
    """Every request is `principal`'s (stdio: one client, started by its owner)."""
    return lambda _ctx: principal


def http_principal(ctx: ServerRequestContext[Any, Any]) -> str:
    """The principal the bearer token of this message's HTTP request maps to."""
    request = ctx.request
    scope = getattr(request, "scope", None)
    principal = scope.get(PRINCIPAL_SCOPE_KEY) if isinstance(scope, dict) else None
    if not isinstance(principal, str) or not principal:
        # The auth wrapper refuses such requests with 401 before they get here.
        raise NoPrincipal("no authenticated principal on this request")
    return principal


def _tool(spec: Any) -> types.Tool:
    return types.Tool(
        name=spec.name,
        description=spec.description,
        input_schema=spec.input_schema,
        output_schema=spec.output_schema,
    )


def _trace_headers(meta: Any) -> dict[str, str]:
    if not meta:
        return {}
    return {k: v for k in TRACE_KEYS if isinstance(v := meta.get(k), str) and v}


@contextlib.contextmanager
def _server_span(
    tracer: Tracer | None, ctx: ServerRequestContext[Any, Any], tool: str
) -> Iterator[tuple[Span | None, dict[str, str]]]:
    """The `tools/call` SERVER span (None without a tracer), current inside, and the
    trace headers the mesh call carries: the span's context, or the caller's."""
    caller = _trace_headers(ctx.meta)
    if tracer is None:
        yield None, caller
        return
    from opentelemetry.propagate import extract, inject
    from opentelemetry.trace import SpanKind

    attributes: dict[str, Any] = {
        "mcp.method.name": "tools/call",
        "gen_ai.operation.name": "execute_tool",
        "gen_ai.tool.name": tool,
        "rpc.system": "jsonrpc",
    }
    if ctx.request_id is not None:
        attributes["jsonrpc.request.id"] = str(ctx.request_id)
    with tracer.start_as_current_span(
        f"tools/call {tool}",
        context=extract(caller),  # the caller's, when there is one; else a new trace
        kind=SpanKind.SERVER,
        attributes=attributes,
        record_exception=False,
        set_status_on_exception=True,
    ) as span:
        headers: dict[str, str] = {}
        inject(headers)
        yield span, headers


def _failed(span: Span | None, exc: ActorMeshError) -> None:
    if span is None:
        return
    from opentelemetry.trace import StatusCode

    span.set_attribute("error.type", exc.code)
    span.set_status(StatusCode.ERROR, exc.code)


def _error(exc: ActorMeshError) -> types.CallToolResult:
    return types.CallToolResult(
        content=[types.TextContent(text=f"{exc.code}: {exc}")],
        is_error=True,
    )


def build_server(
    mesh: Mesh,
    *,
    principal_of: PrincipalOf,
    call_timeout: float,
    version: str = "",
    tracer: Tracer | None = None,
) -> Server[Any]:
    """An MCP server answering `tools/list` and `tools/call` from `mesh.tools`
    (each call in a span of `tracer`'s, if given)."""

    async def list_tools(
        ctx: ServerRequestContext[Any, Any], params: types.PaginatedRequestParams | None
    ) -> types.ListToolsResult:
        specs = await mesh.tools.list_available_tools(principal_of(ctx))
        return types.ListToolsResult(tools=[_tool(s) for s in specs])

    async def call_tool(
        ctx: ServerRequestContext[Any, Any], params: types.CallToolRequestParams
    ) -> types.CallToolResult:
        with _server_span(tracer, ctx, params.name) as (span, headers):
            try:
                result = await mesh.tools.call(
                    params.name,
                    params.arguments or {},
                    principal=principal_of(ctx),
                    timeout=call_timeout,
                    headers=headers or None,
                )
            except ActorMeshError as exc:
                _failed(span, exc)
                return _error(exc)
        return types.CallToolResult(
            content=[types.TextContent(text=json.dumps(result))],
            structured_content={"result": result},
        )

    return Server(
        "actormesh",
        version=version,
        instructions="The actormesh tools this principal is granted.",
        on_list_tools=list_tools,
        on_call_tool=call_tool,
    )
