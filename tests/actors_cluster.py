"""A durable keyed actor for the cluster failover tests (importable by worker processes)."""

from __future__ import annotations

import os

import msgspec

from actormesh import Actor, Context, MailboxConfig, Message

#: Where the worker notes each run of `count` (msg id, delivery): for a failing
#: test to tell a message stored twice from one applied twice.
_LOG = os.environ.get("TALLIER_LOG")


class Seen(msgspec.Struct):
    n: int = 0


class Count(Message):
    """Counted once per distinct message (the state's exactly-once effect)."""


class Poison(Message):
    """Always fails: dead-lettered after `max_deliver` deliveries."""


class HowMany(Message):
    pass


class Tallier(Actor):
    actor_type = "tallier"
    # Replicas come from the mesh (ACTORMESH_REPLICAS / mesh.replication).
    # Deliveries a failover may cost (a lost ack, a commit that met no leader)
    # count too: room for them, and a poison message still goes in about a second.
    mailbox = MailboxConfig(max_deliver=8, backoff=(0.05, 0.1, 0.2), ack_wait=5.0)
    state: Seen

    async def count(self, msg: Count, ctx: Context) -> None:
        self.state.n += 1
        if _LOG:
            with open(_LOG, "a") as f:  # noqa: ASYNC230 - a test's debugging aid
                f.write(f"{ctx.msg_id} {ctx.deliveries} {ctx.seq}\n")

    async def poison(self, msg: Poison) -> None:
        raise ValueError("poison")

    async def how_many(self, msg: HowMany) -> int:
        return self.state.n
