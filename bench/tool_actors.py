"""The actor `bench/bench_tools.py` calls: one handler, exposed as a tool.

Run as ``python -m actormesh worker bench.tool_actors:Adder``. The handler does
no work beyond adding one: what is measured is the mesh, not the handler.
"""

from __future__ import annotations

from actormesh import Actor, Message, tool


class Add(Message):
    """Reply `n + 1`."""

    n: int = 0


class Adder(Actor):
    actor_type = "adder"
    keyless = True

    @tool
    async def add(self, msg: Add) -> int:
        """Returns `n + 1`."""
        return msg.n + 1
