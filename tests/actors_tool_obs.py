"""A tool that calls itself as a tool and reports progress at each level, for the
tool tracing, progress and metrics tests (importable by worker subprocesses)."""

from __future__ import annotations

from actormesh import Actor, Context, Message, tool


class Explore(Message):
    """Explore `depth` more levels below this one."""

    depth: int


class Trip(Message):
    pass


class Scout(Actor):
    """An agent whose tool calls itself, `depth` levels deep."""

    actor_type = "scout"
    keyless = True

    @tool
    async def explore(self, msg: Explore, ctx: Context) -> int:
        """Explore one level, then the ones below it; returns the levels explored.

        Reports progress on the way down and on the way back up."""
        await ctx.tools.progress({"level": msg.depth, "at": "start"})
        below = 0
        if msg.depth > 0:
            below = await ctx.tools.call("scout.explore", {"depth": msg.depth - 1})
        await ctx.tools.progress({"level": msg.depth, "at": "done"})
        return below + 1

    @tool
    async def trip(self, msg: Trip) -> None:
        """Always fails."""
        raise ValueError("tripped")
