"""Actors with durable state, for the state tests (importable by worker subprocesses)."""

from __future__ import annotations

from typing import ClassVar

import msgspec

from actormesh import Actor, Context, MailboxConfig, Message, Passivation, SupervisionPolicy


class Tally(msgspec.Struct):
    n: int = 0
    seen: list[str] = msgspec.field(default_factory=list)


class Add(Message):
    by: int = 1
    #: Raise after changing the state (the change must not be committed).
    fail: bool = False


class Total(Message):
    pass


class Forward(Message):
    """Tell `Add(by)` to the `sink` key of `Ledger`, then fail `fail_times` times."""

    by: int = 1
    fail_times: int = 0


class Ledger(Actor):
    """A durable counter."""

    actor_type = "ledger"
    mailbox = MailboxConfig(ack_wait=2.0, backoff=(0.05,), max_deliver=5)
    state: Tally
    starts: ClassVar[list[str]] = []
    stops: ClassVar[list[str]] = []
    runs: ClassVar[dict[str, int]] = {}

    async def on_start(self) -> None:
        Ledger.starts.append(self.key)

    async def on_stop(self) -> None:
        Ledger.stops.append(self.key)

    async def add(self, msg: Add) -> None:
        self.state.n += msg.by
        if msg.fail:
            raise RuntimeError("failed after changing the state")

    async def total(self, msg: Total) -> int:
        return self.state.n

    async def forward(self, msg: Forward, ctx: Context) -> None:
        await ctx.ref(Ledger, "sink").tell(Add(by=msg.by))
        runs = Ledger.runs.get(ctx.msg_id, 0) + 1
        Ledger.runs[ctx.msg_id] = runs
        if runs <= msg.fail_times:
            raise RuntimeError(f"failing run {runs}")


class ResumingLedger(Ledger):
    actor_type = "ledger-resume"
    supervision = SupervisionPolicy(on_error="resume")


class PassiveLedger(Ledger):
    actor_type = "ledger-passive"
    passivation = Passivation(idle_after=0.2, max_instances=3)


class OnceLedger(Ledger):
    """One delivery: a delivery after it is past `max_deliver`."""

    actor_type = "ledger-once"
    mailbox = MailboxConfig(ack_wait=2.0, backoff=(0.05,), max_deliver=1)
