"""Agent Protocol agents as mesh tools: one actor type per agent, `agent-<name>`,
whose `prompt` handler is the tool `agent-<name>.prompt` (a tool's name is its
actor type and handler, and the callee's worker checks grants against it, so the
agent's tool gets the same grants, deadlines, approvals and metrics as any other).
The handler forwards the call with our caller side (`prompt_agent`) and reports
each response chunk as tool progress, so a caller listening to progress sees the
agent's stream as it arrives.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any, ClassVar

from .. import Actor, ConfigError, Context, HandlerError, Message, Worker, tool
from ._caller import DEFAULT_INACTIVITY, AgentInfo, discover_agents, prompt_agent
from ._protocol import PromptError, Subjects

if TYPE_CHECKING:
    from .. import Mesh

__all__ = ["AgentBridge", "AgentPrompt", "agent_actor", "tool_name"]

#: An agent's answer when the caller's deadline does not say (seconds).
DEFAULT_TIMEOUT = 300.0


class AgentPrompt(Message):
    """A prompt for an Agent Protocol agent: the tool's one argument."""

    prompt: str


class AgentCaller(Actor):
    """Base of the generated per-agent actor types (see `agent_actor`)."""

    keyless = True
    #: The agent's prompt subject (`agents.prompt.<agent>.<owner>.<session>`).
    prompt_subject: ClassVar[str] = ""

    @tool
    async def prompt(self, msg: AgentPrompt, ctx: Context) -> str:
        """Prompt the agent; its answer, as text."""
        deadline = ctx.deadline
        timeout = DEFAULT_TIMEOUT if deadline is None else max(deadline - time.time(), 0.001)

        async def streamed(text: str) -> None:
            await ctx.tools.progress({"text": text})

        try:
            return await prompt_agent(
                ctx.mesh.nc,
                self.prompt_subject,
                msg.prompt,
                timeout=timeout,
                inactivity=DEFAULT_INACTIVITY,
                on_text=streamed,
            )
        except PromptError as exc:
            # 4xx: the agent refused this prompt; sending it again will not help.
            raise HandlerError(
                f"agent {self.prompt_subject}: {exc}",
                code=f"agent_{exc.code}",
                retryable=not exc.code.startswith("4"),
            ) from None


def tool_name(agent: str) -> str:
    """The tool an agent is called as."""
    return f"agent-{agent}.prompt"


def agent_actor(agent: str, owner: str = "actormesh", session: str = "default") -> type[Actor]:
    """The actor type that calls the agent `agent` (of `owner`, session `session`)."""
    s = Subjects.of(agent, owner, session)
    attrs: dict[str, Any] = {
        "actor_type": f"agent-{agent}",
        "prompt_subject": s.subject("prompt"),
        "__doc__": f"The Agent Protocol agent {agent} ({owner}/{session}) as a tool.",
        "__module__": __name__,
    }
    return type(f"Agent_{agent.replace('-', '_')}", (AgentCaller,), attrs)


class AgentBridge:
    """Serves agents as tools: one worker per agent, in this process."""

    def __init__(self, mesh: Mesh) -> None:
        self._mesh = mesh
        self.workers: dict[str, Worker] = {}

    async def add(self, agent: str, owner: str = "actormesh", session: str = "default") -> str:
        """Serve `agent` as a tool; returns the tool's name."""
        if agent in self.workers:
            raise ConfigError(f"agent {agent!r} is bridged already: one session per agent name")
        worker = Worker(self._mesh, agent_actor(agent, owner, session))
        await worker.start()
        self.workers[agent] = worker
        return tool_name(agent)

    async def add_discovered(self, *, only: set[str] | None = None) -> list[AgentInfo]:
        """Serve every discovered agent (or those named in `only`) not bridged yet,
        the first instance seen of each agent name; returns what was added."""
        added: list[AgentInfo] = []
        for info in await discover_agents(self._mesh.nc):
            if info.agent in self.workers or (only is not None and info.agent not in only):
                continue
            await self.add(info.agent, info.owner, info.session)
            added.append(info)
        return added

    async def stop(self, grace: float = 5.0) -> None:
        for worker in self.workers.values():
            await worker.drain(grace=grace)
        self.workers.clear()

    async def __aenter__(self) -> AgentBridge:
        return self

    async def __aexit__(self, *_: object) -> None:
        await self.stop()
