"""A small MCP server written with the `mcp` SDK, over stdio: what the MCP client
integration test (`tests/integration/test_mcp_client.py`) declares in its mesh."""

from __future__ import annotations

import os
import sys

from mcp.server.mcpserver import MCPServer

app = MCPServer("calc")


@app.tool()
def add(a: int, b: int) -> int:
    """Add two integers."""
    return a + b


@app.tool()
def pid() -> int:
    """This server process's id (the test kills it by that)."""
    return os.getpid()


@app.tool()
def fail(reason: str) -> str:
    """Fail with `reason`."""
    raise ValueError(reason)


if __name__ == "__main__":
    # `--http PORT`: streamable HTTP on loopback at /mcp; stdio otherwise.
    if sys.argv[1:2] == ["--http"]:
        app.run("streamable-http", host="127.0.0.1", port=int(sys.argv[2]))
    else:
        app.run("stdio")
