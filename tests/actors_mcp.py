"""A tool actor for the MCP server tests (importable by worker subprocesses)."""

from __future__ import annotations

from actormesh import Actor, Context, Message, tool


class Trace(Message):
    pass


class Probe(Actor):
    """Answers with the trace context its call carried."""

    actor_type = "probe"
    keyless = True

    @tool
    async def trace(self, msg: Trace, ctx: Context) -> str:
        """The `traceparent` header of this call (empty if none)."""
        return ctx.headers.get("traceparent", "")
