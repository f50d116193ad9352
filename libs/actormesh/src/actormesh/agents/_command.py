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
    h.add_argument("--heartbeat-interval", type=int, default=30, help="agent heartbeats (s)")
    _add_supervised(h)

    b = sub.add_parser(
        "agent-bridge", help="serve Agent Protocol agents as tools (agent-<name>.prompt)"
    )
    b.add_argument("--agent", action="append", help="only this agent (repeatable); default all")
    b.add_argument(
        "--rediscover", type=float, default=30.0, help="look for new agents this often (s)"
    )
    _add_supervised(b)

    a = sub.add_parser("agents", help="list the Agent Protocol agents on the broker")
    a.add_argument("--json", action="store_true")


def _add_supervised(p: Any) -> None:
    """Options of a supervised child (see `_supervised`); a `command` child of the
    supervisor gets its worker id and child name from the environment too."""
    p.add_argument("--worker-id", default=None, help="supervised: this process's worker id")
    p.add_argument("--supervisor-child", default="", help="supervised: the child's name")
    p.add_argument(
        "--worker-heartbeat", type=float, default=None, help="supervised: worker heartbeats (s)"
    )


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
    from ._supervised import gateway_class, run_supervised, supervisor_child

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
        subject = host.subjects.subject("prompt")
        print(f"agent {subject} serves tool {args.tool}", flush=True)
        child = supervisor_child(args.supervisor_child)
        if not child:
            await _until_signal(None)
            return 0
        gateway = gateway_class(f"agent_host-{args.name}", "host", lambda: [subject])
        return await run_supervised(
            mesh, gateway, asyncio.Event().wait(), child=child,
            worker_id=args.worker_id, heartbeat_interval=args.worker_heartbeat,
        )  # fmt: skip


async def _bridge(mesh: Any, args: argparse.Namespace) -> int:
    from ._bridge import AgentBridge, tool_name
    from ._supervised import gateway_class, run_supervised, supervisor_child

    only = set(args.agent) if args.agent else None
    async with AgentBridge(mesh) as bridge:
        served: list[str] = []

        async def rediscover() -> None:
            for info in await bridge.add_discovered(only=only):
                served.append(tool_name(info.agent))
                print(f"{tool_name(info.agent)} -> {info.prompt_subject}", flush=True)

        await rediscover()
        child = supervisor_child(args.supervisor_child)
        if not child:
            await _until_signal((args.rediscover, rediscover))
            return 0

        async def loop() -> None:
            while True:
                await asyncio.sleep(args.rediscover)
                await rediscover()

        gateway = gateway_class("agent_bridge", "bridge", lambda: list(served))
        return await run_supervised(
            mesh, gateway, loop(), child=child,
            worker_id=args.worker_id, heartbeat_interval=args.worker_heartbeat,
        )  # fmt: skip


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
