"""The Synadia Agent Protocol for NATS (protocol 0.3), our own implementation (the
`synadia-ai-*` packages are not imported): a mesh tool exposed as an agent
(`AgentHost`), and agents called from the mesh as tools (`AgentBridge`, the tool
`agent-<name>.prompt`), on top of `discover_agents` and `prompt_agent`."""

from __future__ import annotations

from ._bridge import AgentBridge, AgentPrompt, agent_actor, tool_name
from ._caller import AgentInfo, discover_agents, prompt_agent
from ._host import AgentHost, AgentHostConfig
from ._protocol import PromptError

__all__ = [
    "AgentBridge",
    "AgentHost",
    "AgentHostConfig",
    "AgentInfo",
    "AgentPrompt",
    "PromptError",
    "agent_actor",
    "discover_agents",
    "prompt_agent",
    "tool_name",
]
