"""Actors for the Agent Protocol tests (importable by worker subprocesses)."""

from __future__ import annotations

from actormesh import Actor, Context, Message, tool


class Shout(Message):
    text: str


class Add(Message):
    a: int
    b: int


class AskAgent(Message):
    prompt: str


class Oracle(Actor):
    """A keyless actor whose handlers are tools an agent host exposes."""

    actor_type = "oracle"
    keyless = True

    @tool
    async def shout(self, msg: Shout, ctx: Context) -> str:
        """The text, shouted."""
        await ctx.tools.progress({"stage": "shouting"})
        return msg.text.upper() + "!"

    @tool
    async def add(self, msg: Add) -> dict[str, int]:
        """The sum of `a` and `b`."""
        return {"sum": msg.a + msg.b}


class Delegate(Actor):
    """An actor that calls an Agent Protocol agent as a tool (`agent-<name>.prompt`)."""

    actor_type = "delegate"
    keyless = True

    @tool
    async def ask(self, msg: AskAgent, ctx: Context) -> str:
        """Ask the `echoer` agent."""
        result = await ctx.tools.call("agent-echoer.prompt", {"prompt": msg.prompt})
        return str(result)
