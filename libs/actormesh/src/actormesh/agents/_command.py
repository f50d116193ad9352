"""`actormesh agent-host`, `actormesh agent-bridge` and `actormesh agents`: the Agent
Protocol from the command line. Light to import: the work loads when a command runs."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import signal
from collections.abc import Awaitable, Callable
from typing import Any

__all__ = ["COMMANDS", "add_agent_parsers", "run_agent_command"]

COMMANDS = ("agent-host", "agent-bridge", "agents")


def add_agent_parsers(sub: Any) -> None:
    h = sub.add_parser("agent-host", help="serve a tool as an Agent Protocol agent")
    h.add_argument("--tool", required=True, help="the tool that answers prompts")
    h.add_argument("--principal", required=True, help="who calls the tool (needs a grant)")
    h.add_argument("--name", required=True, help="the agent's name (lowercase, digits, '-')")
    h.add_argument("--owner", default="actormesh")
    h.add_argument("--session", default="default")
    h.add_argument("--description", default="")
    h.add_argument("--prompt-arg", help="the tool argument the prompt text goes into")
    h.add_argument("--timeout", type=float, default=30.0, help="each tool call's timeout (s)")
    h.add_argument("--heartbeat-interval", type=int, default=30)

    b = sub.add_parser(
        "agent-bridge", help="serve Agent Protocol agents as tools (agent-<name>.prompt)"
    )
    b.add_argument("--agent", action="append", help="only this agent (repeatable); default all")
    b.add_argument(
        "--rediscover", type=float, default=30.0, help="look for new agents this often (s)"
    )

    a = sub.add_parser("agents", help="list the Agent Protocol agents on the broker")
    a.add_argument("--json", action="store_true")


async def run_agent_command(args: argparse.Namespace, url: str, prefix: str) -> int:
    from .. import Mesh

    mesh = await Mesh.connect(url, prefix=prefix, name=f"actormesh-{args.command}")
    try:
        if args.command == "agents":
            return await _list(mesh, as_json=args.json)
        if args.command == "agent-host":
            return await _host(mesh, args)
        return await _bridge(mesh, args)
    finally:
        await mesh.close()


async def _list(mesh: Any, *, as_json: bool) -> int:
    from ._caller import discover_agents

    found = await discover_agents(mesh.nc)
    if as_json:
        import msgspec

        print(json.dumps(msgspec.to_builtins(found), indent=2))
        return 0
    for a in found:
        print(f"{a.agent}\t{a.owner}\t{a.session}\t{a.prompt_subject}\t{a.instance_id}")
    return 0


async def _host(mesh: Any, args: argparse.Namespace) -> int:
    from ._host import AgentHost, AgentHostConfig

    config = AgentHostConfig(
        tool=args.tool,
        principal=args.principal,
        agent=args.name,
        owner=args.owner,
        session=args.session,
        description=args.description,
        prompt_arg=args.prompt_arg,
        timeout=args.timeout,
        heartbeat_interval_s=args.heartbeat_interval,
    )
    async with AgentHost(mesh, config) as host:
        print(f"agent {host.subjects.subject('prompt')} serves tool {args.tool}", flush=True)
        await _until_signal(None)
    return 0


async def _bridge(mesh: Any, args: argparse.Namespace) -> int:
    from ._bridge import AgentBridge, tool_name

    only = set(args.agent) if args.agent else None
    async with AgentBridge(mesh) as bridge:

        async def rediscover() -> None:
            for info in await bridge.add_discovered(only=only):
                print(f"{tool_name(info.agent)} -> {info.prompt_subject}", flush=True)

        await rediscover()
        await _until_signal((args.rediscover, rediscover))
    return 0


async def _until_signal(every: tuple[float, Callable[[], Awaitable[None]]] | None) -> None:
    """Until SIGINT or SIGTERM; `every` = (seconds, coroutine function) runs meanwhile."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    while not stop.is_set():
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), timeout=every[0] if every else None)
        if every is not None and not stop.is_set():
            await every[1]()
