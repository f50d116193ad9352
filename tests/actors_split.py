"""Actors for the no-silent-split tests: keyed (unpartitioned and partitioned) and keyless."""

from __future__ import annotations

from typing import ClassVar

from actormesh import Actor, MailboxConfig, Message


class Add(Message):
    by: int = 1


class Total(Message):
    pass


class Tally(Actor):
    """Keyed, on an unpartitioned mailbox: one worker only."""

    actor_type = "splittally"

    def __init__(self) -> None:
        self.total = 0

    async def add(self, msg: Add) -> int:
        self.total += msg.by
        return self.total

    async def get(self, msg: Total) -> int:
        return self.total


class PartitionedTally(Tally):
    """Keyed, on two partitions: two workers, each key in one of them."""

    actor_type = "splitparts"
    mailbox: ClassVar[MailboxConfig] = MailboxConfig(partitions=2)


class KeylessTally(Tally):
    """Keyless: any number of workers."""

    actor_type = "splitkeyless"
    keyless = True
