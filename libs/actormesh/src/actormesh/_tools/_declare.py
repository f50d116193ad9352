"""Declaring tools: `@tool` on a handler, and the `ToolSpec` every worker publishes.

A tool is a handler any principal with a grant may call by name, with JSON
arguments, through the mesh (an ask through the actor's durable mailbox). Its
name is `<actor_type>.<handler>`; its description is the handler's docstring;
its input schema is the message Struct's JSON Schema (2020-12) with the root
inlined as an object (the `type` tag left out: the bus adds it), plus a `key`
property naming the instance for a keyed actor; its output schema is the reply
type's, wrapped as `{"result": ...}` (MCP's structured content is an object).
"""

from __future__ import annotations

import inspect
import re
from collections.abc import Callable
from typing import Any, TypeVar, overload

import msgspec

from .._errors import ConfigError

__all__ = ["TOOL_ATTR", "KEY_ARG", "ToolOptions", "ToolSpec", "tool", "tool_spec"]

F = TypeVar("F", bound=Callable[..., Any])

#: The attribute `@tool` sets on a handler function.
TOOL_ATTR = "__actormesh_tool__"
#: The argument naming the instance of a keyed actor.
KEY_ARG = "key"
#: Characters MCP allows in a tool name (and at most 128 of them).
_NAME_RE = re.compile(r"^[A-Za-z0-9_.\-]{1,128}$")


class ToolSpec(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """A tool as the registry holds it: everything a caller needs to call it."""

    name: str
    actor_type: str
    handler: str
    #: The message type's tag (`{"type": tag, ...}` on the wire).
    message_type: str
    description: str
    input_schema: dict[str, Any]
    output_schema: dict[str, Any]
    keyed: bool
    needs_approval: bool = False


class ToolOptions(msgspec.Struct, frozen=True, kw_only=True):
    """What `@tool(...)` declares."""

    #: Calls wait for an operator's approval (stored durably) before they run.
    needs_approval: bool = False
    description: str | None = None
    #: The whole spec, given rather than derived from the handler: a tool whose
    #: name and schemas come from elsewhere (an external MCP server's, served by
    #: `actormesh mcp-client`), under the same grants, approvals and metrics.
    spec: ToolSpec | None = None


@overload
def tool(fn: F, /) -> F: ...


@overload
def tool(*, needs_approval: bool = False, description: str | None = None) -> Callable[[F], F]: ...


def tool(
    fn: F | None = None, /, *, needs_approval: bool = False, description: str | None = None
) -> F | Callable[[F], F]:
    """Expose a handler as a tool: `@tool` or `@tool(needs_approval=True)`.

    Exposing puts the handler under grants: every message to it, tool call or
    plain ask, needs a grant for its principal (the default is deny).
    """
    options = ToolOptions(needs_approval=needs_approval, description=description)

    def mark(f: F) -> F:
        setattr(f, TOOL_ATTR, options)
        return f

    return mark(fn) if fn is not None else mark


def tool_options(fn: object) -> ToolOptions | None:
    found = getattr(fn, TOOL_ATTR, None)
    return found if isinstance(found, ToolOptions) else None


def tool_spec(
    *,
    actor_type: str,
    handler: str,
    fn: Callable[..., Any],
    message_type: type[msgspec.Struct],
    tag: str,
    reply_type: Any,
    keyed: bool,
    options: ToolOptions,
) -> ToolSpec:
    if options.spec is not None:
        return options.spec
    name = f"{actor_type}.{handler}"
    if not _NAME_RE.match(name):
        raise ConfigError(f"tool name {name!r} is not a valid MCP tool name")
    fields = {f.encode_name for f in msgspec.structs.fields(message_type)}
    if keyed and KEY_ARG in fields:
        raise ConfigError(
            f"{message_type.__name__} has a field {KEY_ARG!r}, which the tool {name!r} "
            "needs for the actor key: rename the field"
        )
    description = options.description or inspect.getdoc(fn) or f"{name} ({tag})"
    return ToolSpec(
        name=name,
        actor_type=actor_type,
        handler=handler,
        message_type=tag,
        description=description,
        input_schema=input_schema(message_type, keyed=keyed),
        output_schema=output_schema(reply_type),
        keyed=keyed,
        needs_approval=options.needs_approval,
    )


def _inlined(schema: dict[str, Any]) -> dict[str, Any]:
    """`schema` with a root `$ref` replaced by the definition it points to."""
    ref = schema.get("$ref")
    if not isinstance(ref, str):
        return schema
    defs = dict(schema.get("$defs", {}))
    root = dict(defs.pop(ref.rsplit("/", 1)[-1]))
    if defs:
        root["$defs"] = defs
    return root


def input_schema(message_type: type[msgspec.Struct], *, keyed: bool) -> dict[str, Any]:
    schema = _inlined(msgspec.json.schema(message_type))
    props = dict(schema.get("properties", {}))
    props.pop("type", None)  # the tag: the bus sets it
    required = [r for r in schema.get("required", []) if r != "type"]
    if keyed:
        props = {KEY_ARG: {"type": "string", "description": "the actor instance's key"}, **props}
        required = [KEY_ARG, *required]
    schema = {k: v for k, v in schema.items() if k not in ("properties", "required", "title")}
    schema.update(
        {
            "$schema": "https://json-schema.org/draft/2020-12/schema",
            "type": "object",
            "properties": props,
            "additionalProperties": False,
        }
    )
    if required:
        schema["required"] = required
    return schema


def output_schema(reply_type: Any) -> dict[str, Any]:
    if reply_type is None or reply_type is type(None):
        result: dict[str, Any] = {"type": "null"}
        defs: dict[str, Any] = {}
    else:
        try:
            raw = msgspec.json.schema(reply_type)
        except TypeError:
            raw = {}  # Any, or a type msgspec cannot describe: any JSON value
        defs = raw.pop("$defs", {})
        result = raw
    schema: dict[str, Any] = {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "type": "object",
        "properties": {"result": result},
        "required": ["result"],
    }
    if defs:
        schema["$defs"] = defs
    return schema
