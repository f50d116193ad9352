"""Actors for the message-search tests: a keyed inbox (unpartitioned and
partitioned) that records what it handled, so a test can show a search consumed
nothing (the worker still gets every message afterwards)."""

from __future__ import annotations

from typing import ClassVar

from actormesh import Actor, Context, MailboxConfig, Message


class Note(Message):
    text: str


class Poison(Message):
    text: str


class Inbox(Actor):
    actor_type = "searchinbox"
    #: A poison message is dead-lettered at its first failure.
    mailbox: ClassVar[MailboxConfig] = MailboxConfig(max_deliver=1, backoff=(0.0,))
    #: (key, text) of every message handled, in this process.
    seen: ClassVar[list[tuple[str, str]]] = []

    async def note(self, msg: Note, ctx: Context) -> None:
        Inbox.seen.append((ctx.key, msg.text))

    async def poison(self, msg: Poison) -> None:
        raise ValueError(f"cannot take {msg.text}")


class PartitionedInbox(Inbox):
    actor_type = "searchparts"
    mailbox: ClassVar[MailboxConfig] = MailboxConfig(partitions=2, max_deliver=1, backoff=(0.0,))
