"""`actormesh mcp-client NAME`: an external MCP server's tools as `mcp.NAME.*`.

A supervised child in mesh.toml::

    [[groups.children]]
    name = "mcp-files"
    command = ["{python}", "-m", "actormesh", "--nats-url", "{nats_url}",
               "--prefix", "{prefix}", "mcp-client",
               "--heartbeat-interval", "{heartbeat_interval}", "files",
               "--", "npx", "-y", "@modelcontextprotocol/server-filesystem", "/srv"]
"""

from __future__ import annotations

import argparse
import logging
import os
from typing import Any

__all__ = ["add_mcp_client_parser", "run_mcp_client"]

log = logging.getLogger("actormesh.mcp.client")


def add_mcp_client_parser(sub: Any) -> None:
    """The `mcp-client` subcommand's arguments (on the CLI's subparsers)."""
    c = sub.add_parser(
        "mcp-client",
        help="serve an external MCP server's tools on the bus as mcp.NAME.TOOL",
        usage="actormesh mcp-client [options] NAME (--url URL | -- COMMAND [ARG...])",
    )
    c.add_argument("name", help="the server's name: its tools are mcp.NAME.*, its actor mcp-NAME")
    c.add_argument("--url", default="", help="a streamable HTTP server's URL")
    c.add_argument(
        "--env", action="append", default=[], metavar="K=V", help="stdio server's environment"
    )
    c.add_argument("--worker-id", default=None)
    c.add_argument("--supervisor-child", default="")
    c.add_argument("--heartbeat-interval", type=float, default=None)
    c.add_argument("--metrics-port", type=int, default=None)
    # REMAINDER: the server's argv is passed through untouched, its options too (so
    # this command's own options come before NAME).
    c.add_argument(
        "server_command", nargs=argparse.REMAINDER, help="after --: the stdio server's argv"
    )


async def run_mcp_client(args: argparse.Namespace, url: str, prefix: str) -> int:
    from actormesh import ConfigError, Mesh, WorkerConfig

    from ._client import McpServerSpec, serve

    env = {}
    for item in args.env:
        k, sep, v = item.partition("=")
        if not sep:
            raise ConfigError(f"--env {item!r}: write it as KEY=VALUE")
        env[k] = v
    argv = list(args.server_command)
    if argv[:1] == ["--"]:
        argv = argv[1:]
    spec = McpServerSpec(name=args.name, command=argv, url=args.url, env=env)
    fields: dict[str, Any] = {
        # A `command` child of the supervisor learns its identity from the environment.
        "worker_id": args.worker_id or os.environ.get("ACTORMESH_WORKER_ID") or None,
        "supervisor_child": args.supervisor_child
        or os.environ.get("ACTORMESH_SUPERVISOR_CHILD", ""),
        "metrics_port": args.metrics_port,
    }
    if args.heartbeat_interval is not None:
        fields["heartbeat_interval"] = args.heartbeat_interval
    mesh = await Mesh.connect(url, prefix=prefix, name=f"mcp-client-{spec.name}")
    try:
        return await serve(mesh, spec, WorkerConfig(**fields))
    except Exception as exc:
        # The session failed (the server would not start, or died): exit non-zero so
        # the supervisor restarts us; the SDK's task groups raise exception groups.
        log.error("MCP server %s: %s", spec.name, exc, exc_info=exc)
        return 1
    finally:
        await mesh.close()
