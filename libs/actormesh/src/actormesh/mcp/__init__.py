"""The mesh as an MCP server: `actormesh mcp` (an add-on: needs `actormesh[mcp]`).

Not imported by `import actormesh`. Importing this package does not import the
`mcp` SDK either (the CLI builds its parser from it): `actormesh.mcp._server`
does, when a server is built.
"""

from __future__ import annotations

from ._auth import BearerAuth, load_tokens
from ._command import add_mcp_parser, run_mcp

__all__ = ["BearerAuth", "add_mcp_parser", "load_tokens", "run_mcp"]
