"""Actors exposing tools, for the tool tests (importable by worker subprocesses)."""

from __future__ import annotations

import asyncio
from typing import ClassVar

import msgspec

from actormesh import Actor, Context, Message, tool


class Deposit(Message):
    amount: int
    memo: str = ""


class Balance(Message):
    pass


class Boom(Message):
    pass


class Audit(Message):
    pass


class Nap(Message):
    seconds: float


class Account(msgspec.Struct):
    balance: int = 0


class Vault(Actor):
    """A keyed actor whose handlers are tools."""

    actor_type = "vault"
    state: Account

    @tool
    async def deposit(self, msg: Deposit) -> int:
        """Add `amount` to the account; returns the new balance."""
        self.state.balance += msg.amount
        return self.state.balance

    @tool
    async def balance(self, msg: Balance) -> int:
        """The account's balance."""
        return self.state.balance

    @tool
    async def boom(self, msg: Boom) -> None:
        """Always fails."""
        raise ValueError("the vault is on fire")

    @tool
    async def nap(self, msg: Nap) -> None:
        """Sleeps."""
        await asyncio.sleep(msg.seconds)

    async def audit(self, msg: Audit, ctx: Context) -> int:  # not a tool
        return self.state.balance


class Hop(Message):
    """Call the next hop (`depth` more below), napping `nap` at the bottom."""

    depth: int
    nap: float = 0.0


class Relay(Actor):
    """Calls itself as a tool, `depth` levels deep; records what each level saw."""

    actor_type = "relay"
    keyless = True
    seen: ClassVar[list[tuple[int, float | None]]] = []
    ran: ClassVar[list[int]] = []

    @tool
    async def hop(self, msg: Hop, ctx: Context) -> int:
        """One level of a nested call."""
        Relay.ran.append(msg.depth)
        Relay.seen.append((msg.depth, ctx.deadline))
        if msg.depth == 0:
            await asyncio.sleep(msg.nap)
            return 0
        below: int = await ctx.tools.call("relay.hop", {"depth": msg.depth - 1, "nap": msg.nap})
        return below + 1
