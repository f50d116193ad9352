"""The MCP server as a supervised child: a small actor beside the HTTP endpoint.

A child of the supervisor is known by its heartbeats, drained by its control
subject, and listed in the dashboard: that is what a worker does. So when
`actormesh mcp --http` runs under a supervisor it also serves this keyless
actor type (`mcp-server`), whose worker carries the heartbeats and the drain,
and whose one handler answers where the endpoint is.
"""

from __future__ import annotations

from typing import ClassVar

import msgspec

from actormesh import Actor, Message

__all__ = ["ACTOR_TYPE", "Endpoint", "EndpointInfo", "McpGateway"]

ACTOR_TYPE = "mcp-server"


class Endpoint(Message):
    """Where the MCP server listens."""


class EndpointInfo(msgspec.Struct, frozen=True, kw_only=True):
    url: str
    transport: str = "streamable-http"


class McpGateway(Actor):
    """The MCP server's worker: heartbeats for the supervisor, and its endpoint."""

    actor_type = ACTOR_TYPE
    keyless = True
    #: Set by the process before its worker starts (one endpoint per process).
    url: ClassVar[str] = ""

    async def endpoint(self, msg: Endpoint) -> EndpointInfo:
        return EndpointInfo(url=McpGateway.url)
