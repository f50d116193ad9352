"""External MCP servers as tools on the bus: `actormesh mcp-client NAME`.

One worker process per external server holds its MCP client session (the
official SDK, over stdio or streamable HTTP). At start it lists the server's
tools and publishes each as `mcp.<server>.<tool>` in the tool registry, routed
to its own keyless actor type `mcp-<server>`: a call is an ask through that
type's durable mailbox like any tool call. Each handler carries its tool's spec
(`ToolOptions(spec=...)`, as `@tool` gives one), so the worker treats it as any
`@tool` handler: the grant on `mcp.<server>.<tool>` checked by the worker's gate,
approvals held in the approvals bucket, the deadline, the per-tool metrics and the
`execute_tool` spans are the ones every tool gets; no check of its own here.
When the session breaks (the server died, the URL stopped answering) the
worker stops and the process exits 1, so its supervisor restarts it, with a
fresh session and a fresh listing.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import re
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import msgspec

from actormesh import (
    Actor,
    ActorMeshError,
    ConfigError,
    Context,
    Mesh,
    Message,
    SupervisionPolicy,
    ToolSpec,
    Worker,
    WorkerConfig,
)
from actormesh._tools._declare import TOOL_ATTR, ToolOptions

__all__ = ["McpServerSpec", "McpToolFailed", "actor_class", "serve", "tool_specs"]

log = logging.getLogger("actormesh.mcp.client")

#: A server's name: one subject token, and `mcp-<name>` a valid actor type.
_SERVER_RE = re.compile(r"^[a-z][a-z0-9_-]{0,59}$")
#: Characters MCP allows in a tool name, at most 128 (as `_declare` checks).
_TOOL_NAME_RE = re.compile(r"^[A-Za-z0-9_.\-]{1,128}$")
#: Seconds between the pings that find a dead session when no call does.
PING_INTERVAL = 1.0


class McpServerSpec(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """An external MCP server: a stdio `command` (argv) or a streamable HTTP `url`."""

    name: str
    command: list[str] = []
    url: str = ""
    env: dict[str, str] = {}

    def __post_init__(self) -> None:
        if not _SERVER_RE.match(self.name):
            raise ConfigError(
                f"MCP server name {self.name!r}: use 1-60 of a-z, 0-9, '_' and '-', "
                "starting with a letter"
            )
        if bool(self.command) == bool(self.url):
            raise ConfigError(
                f"MCP server {self.name!r}: give exactly one of `command = [...]` or `url`"
            )

    @property
    def actor_type(self) -> str:
        return f"mcp-{self.name}"

    def tool_name(self, tool: str) -> str:
        return f"mcp.{self.name}.{tool}"


class McpToolFailed(ActorMeshError):
    """The MCP server answered the call with a tool error (`isError`)."""

    code = "mcp_tool_error"


class _Session:
    """The calls the worker makes on its MCP session; a broken one ends the worker."""

    def __init__(self, session: Any) -> None:
        self.session = session
        self.broken = asyncio.Event()

    async def call(self, tool: str, args: dict[str, Any], deadline: float | None) -> Any:
        import anyio
        import mcp.types

        timeout = None if deadline is None else max(0.001, deadline - time.time())
        try:
            result = await self.session.call_tool(tool, args, read_timeout_seconds=timeout)
        except mcp.MCPError as exc:
            if exc.code == mcp.types.CONNECTION_CLOSED:
                self._broke(tool, exc)
            raise  # otherwise the server answered: the session is fine
        except (
            OSError,
            anyio.ClosedResourceError,
            anyio.BrokenResourceError,
            anyio.EndOfStream,
        ) as exc:
            # The transport failed under the call (a broken pipe, a closed stream).
            self._broke(tool, exc)
            raise
        if not isinstance(result, mcp.types.CallToolResult):
            raise McpToolFailed(f"{tool}: unsupported result {type(result).__name__}")
        return _result_value(tool, result)

    def _broke(self, tool: str, exc: Exception) -> None:
        log.error("MCP session broken during a call of %s: %s", tool, exc)
        self.broken.set()


def _result_value(tool: str, result: Any) -> Any:
    texts = [c.text for c in result.content if getattr(c, "type", "") == "text"]
    if result.is_error:
        raise McpToolFailed(f"{tool}: " + ("\n".join(texts) or "the MCP tool failed"))
    if result.structured_content is not None:
        return result.structured_content
    if len(texts) == len(result.content):
        return "\n".join(texts)
    return [c.model_dump(mode="json", by_alias=True, exclude_none=True) for c in result.content]


def _message_type(tag: str, schema: dict[str, Any]) -> tuple[type[Message], dict[str, str]]:
    """A Message type for the tool's arguments (tagged `tag`), and its fields' JSON names:
    every property optional here (the bus validated the arguments against the schema)."""
    props = schema.get("properties") or {}
    names = {f"a{i}": str(p) for i, p in enumerate(props)}
    fields = [(attr, Any, msgspec.UNSET) for attr in names]
    type_name = "Mcp_" + re.sub(r"[^A-Za-z0-9_]", "_", tag)
    struct = msgspec.defstruct(type_name, fields, bases=(Message,), tag=tag, rename=names)
    return struct, names  # type: ignore[return-value]  # defstruct's bases=(Message,)


def _handler(
    session: _Session, tool: str, spec: ToolSpec, names: dict[str, str], struct: type
) -> Callable[..., Any]:
    async def handle(self: Actor, msg: Any, ctx: Context) -> Any:
        # Runs only once the worker's gate admitted the call (grant, approval).
        args = {
            json: value
            for attr, json in names.items()
            if (value := getattr(msg, attr)) is not msgspec.UNSET
        }
        return await session.call(tool, args, ctx.deadline)

    handle.__annotations__ = {"msg": struct, "ctx": Context, "return": Any}
    setattr(handle, TOOL_ATTR, ToolOptions(spec=spec))
    return handle


def _methods(tools: list[Any]) -> list[str]:
    """The handler (method) name of each tool: what the worker's logs and metrics show."""
    names: list[str] = []
    for i, t in enumerate(tools):
        name = "call_" + re.sub(r"[^A-Za-z0-9_]", "_", t.name)
        names.append(name if name not in names else f"{name}_{i}")
    return names


def actor_class(spec: McpServerSpec, tools: list[Any], session: _Session) -> type[Actor]:
    """The actor type serving `tools` (the SDK's `Tool`s) through `session`."""
    namespace: dict[str, Any] = {
        "actor_type": spec.actor_type,
        "keyless": True,
        # A refused or failed call is the caller's answer, not the process's failure.
        "supervision": SupervisionPolicy(on_error="resume", max_failing_keys=10_000),
    }
    for t, method, tool in zip(tools, _methods(tools), tool_specs(spec, tools), strict=True):
        struct, names = _message_type(tool.name, t.input_schema or {})
        namespace[method] = _handler(session, t.name, tool, names, struct)
    return type(f"Mcp_{spec.name.replace('-', '_')}", (Actor,), namespace)


def tool_specs(spec: McpServerSpec, tools: list[Any]) -> list[ToolSpec]:
    out = []
    for t, method in zip(tools, _methods(tools), strict=True):
        name = spec.tool_name(t.name)
        output: dict[str, Any] = dict(t.output_schema) if t.output_schema else {}
        out.append(
            ToolSpec(
                name=name,
                actor_type=spec.actor_type,
                handler=method,
                message_type=name,
                description=t.description or name,
                input_schema=dict(t.input_schema or {"type": "object"}),
                output_schema={
                    "$schema": "https://json-schema.org/draft/2020-12/schema",
                    "type": "object",
                    "properties": {"result": output},
                    "required": ["result"],
                },
                keyed=False,
            )
        )
    return out


def _usable(spec: McpServerSpec, tools: list[Any]) -> list[Any]:
    usable = []
    for t in tools:
        props = (t.input_schema or {}).get("properties") or {}
        if not _TOOL_NAME_RE.match(spec.tool_name(t.name)):
            log.warning("MCP tool %r of %s: its name is not a valid tool name", t.name, spec.name)
        elif "type" in props:
            # The bus puts the message's tag in `type`: an argument of that name collides.
            log.warning("MCP tool %r of %s: an argument named 'type' is unsupported", t.name,
                        spec.name)  # fmt: skip
        else:
            usable.append(t)
    return usable


@contextlib.asynccontextmanager
async def _connect(spec: McpServerSpec) -> AsyncIterator[Any]:
    from mcp import ClientSession

    async with contextlib.AsyncExitStack() as stack:
        if spec.command:
            from mcp.client.stdio import StdioServerParameters, stdio_client

            params = StdioServerParameters(
                command=spec.command[0], args=spec.command[1:], env=spec.env or None
            )
            read, write = await stack.enter_async_context(stdio_client(params))
        else:
            from mcp.client.streamable_http import streamable_http_client

            read, write = await stack.enter_async_context(streamable_http_client(spec.url))
        session = await stack.enter_async_context(ClientSession(read, write))
        await session.initialize()
        yield session


async def _list_tools(session: Any) -> list[Any]:
    import mcp.types

    tools: list[Any] = []
    cursor: str | None = None
    while True:
        params = mcp.types.PaginatedRequestParams(cursor=cursor) if cursor else None
        page = await session.list_tools(params=params)
        tools.extend(page.tools)
        cursor = page.next_cursor
        if not cursor:
            return tools


async def _watch(session: _Session, worker: Worker) -> None:
    """Ping the server; on a broken session stop the worker (its run returns)."""
    while not session.broken.is_set():
        try:
            await asyncio.wait_for(session.session.send_ping(), timeout=10.0)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            log.error("MCP server stopped answering pings: %s", exc)
            break
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(session.broken.wait(), PING_INTERVAL)
    session.broken.set()
    await worker.stop()


async def serve(mesh: Mesh, spec: McpServerSpec, config: WorkerConfig) -> int:
    """Serve `spec`'s tools on `mesh` until drained (0) or the session breaks (1)."""
    async with _connect(spec) as raw:
        session = _Session(raw)
        tools = _usable(spec, await _list_tools(raw))
        worker = Worker(mesh, actor_class(spec, tools, session), config)
        # Traces and metrics as `actormesh worker` sets them up (OTEL_*, --metrics-port).
        from actormesh.observability import instrument_worker

        obs = await instrument_worker(
            worker, env=os.environ, metrics_port=config.metrics_port, api_spans=True
        )
        try:
            return await _run(spec, tools, session, worker)
        finally:
            await obs.close()


async def _run(spec: McpServerSpec, tools: list[Any], session: _Session, worker: Worker) -> int:
    """Run the worker (its start publishes the tools, as any tool worker's does);
    stop it when the session breaks."""
    run = asyncio.create_task(worker.run())
    watch: asyncio.Task[None] | None = None
    try:
        # (The worker has no "started" event to wait on.)
        while worker.status == "starting" and not run.done():  # noqa: ASYNC110
            await asyncio.sleep(0.01)
        if not run.done():
            log.info("MCP server %s: %d tools as mcp.%s.*", spec.name, len(tools), spec.name)
            watch = asyncio.create_task(_watch(session, worker))
        code = await run
    finally:
        if watch is not None:
            watch.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await watch
        if not run.done():
            await worker.stop()
            await run
    return 1 if session.broken.is_set() else code
