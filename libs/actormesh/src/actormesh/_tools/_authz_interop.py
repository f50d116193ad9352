"""What `actormesh authz` knows of the mesh file's interop children.

Besides the `actor = ...` children, a mesh file runs processes whose actor types
are not importable classes: each `[[mcp_servers]]` entry (`mcp-<name>`, whose
tools `mcp.<name>.*` are listed only at run time), the MCP server (a `command`
child running `actormesh mcp`, whose worker is `mcp-server` and which calls tools
as its token principals, named per user in the users file), each `[[agents]]`
host (`agent_host-<name>`, calling its tool as its principal) and the
`[agent_bridge]` (`agent_bridge`, plus one `agent-<name>` type per agent it
serves, whose tool is `agent-<name>.prompt`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import msgspec

from ._authz import ActorFacts, MeshFacts

if TYPE_CHECKING:
    from .._meshfile import ChildSpec, MeshFile

__all__ = ["MCP_SERVER_TYPE", "with_interop"]

#: The MCP server's worker (see `actormesh.mcp._gateway`).
MCP_SERVER_TYPE = "mcp-server"


def _runs_mcp_server(child: ChildSpec) -> bool:
    """A `command` child running `actormesh mcp` (its subcommand after `actormesh`)."""
    argv = child.command
    if "actormesh" not in argv:
        return False
    rest = argv[argv.index("actormesh") + 1 :]
    words = [a for i, a in enumerate(rest) if not a.startswith("-") and
             (i == 0 or not rest[i - 1].startswith("--"))]  # fmt: skip
    return bool(words) and words[0] == "mcp"


def with_interop(facts: MeshFacts, meshfile: MeshFile) -> MeshFacts:
    """`facts` with the MCP client and server children and the agent hosts and bridge."""
    children, actors = dict(facts.children), dict(facts.actors)
    child_types, callers = dict(facts.child_types), dict(facts.callers)
    warnings = list(facts.warnings)
    for server in meshfile.mcp_servers:
        t = f"mcp-{server.name}"
        children[t] = t
        actors[t] = ActorFacts(actor_type=t, keyless=True, tool_prefix=f"mcp.{server.name}.")
    for _, child in meshfile.children():
        if child.command and child.name not in children and _runs_mcp_server(child):
            children[child.name] = MCP_SERVER_TYPE
            actors[MCP_SERVER_TYPE] = ActorFacts(actor_type=MCP_SERVER_TYPE, keyless=True)
    for host in meshfile.agents:
        t = f"agent_host-{host.name}"
        children[f"agent-host-{host.name}"] = t
        actors[t] = ActorFacts(actor_type=t, keyless=True, hosts_agent=host.name)
        callers[f"agent-host-{host.name}"] = (host.principal,)
    bridge = meshfile.agent_bridge
    if bridge is not None:
        children["agent-bridge"] = "agent_bridge"
        actors["agent_bridge"] = ActorFacts(
            actor_type="agent_bridge", keyless=True, prompts_agents=True
        )
        served = tuple(f"agent-{a}" for a in bridge.agents)
        for t in served:
            actors[t] = ActorFacts(actor_type=t, keyless=True, tools=(f"{t}.prompt",))
        child_types["agent-bridge"] = served
        if not bridge.agents:
            warnings.append(
                "[agent_bridge] serves the agents it discovers at run time, which the "
                "broker's permissions cannot name: list them in `agents = [...]`"
            )
    return msgspec.structs.replace(
        facts, children=children, actors=actors, child_types=child_types,
        callers=callers, warnings=tuple(warnings),
    )  # fmt: skip
