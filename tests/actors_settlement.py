"""Actors of the settlement tests (issue 15: no message left unsettled, nothing
stranded), importable by in-process and subprocess workers."""

from __future__ import annotations

import sys
from typing import ClassVar

from actormesh import Actor, HandlerError, MailboxConfig, Message


class Add(Message):
    by: int


class Total(Message):
    pass


class Tally(Actor):
    """A keyed counter: what the fuzz test's valid messages add up to."""

    actor_type = "tally"
    mailbox: ClassVar[MailboxConfig] = MailboxConfig(max_deliver=3, backoff=(0.05,))

    def __init__(self) -> None:
        self.total = 0

    def add(self, msg: Add) -> None:
        self.total += msg.by

    def total_(self, msg: Total) -> int:
        return self.total


class Raise(Message):
    #: What the handler raises: a name in `RAISES`.
    what: str


def _deep(n: int) -> int:
    return _deep(n + 1)


def _raise(what: str) -> None:
    if what == "SystemExit":
        sys.exit(3)
    if what == "KeyboardInterrupt":
        raise KeyboardInterrupt
    if what == "MemoryError":
        raise MemoryError
    if what == "RecursionError":
        _deep(0)
    if what == "CancelledError":
        # Not this task being cancelled: a failure like any other.
        import asyncio

        raise asyncio.CancelledError
    if what == "HandlerError":
        raise HandlerError("failing on purpose", code="nope", retryable=True)
    raise ValueError(what)


class Misbehaving(Actor):
    """Raises what it is told to, including `BaseException`s that are not errors."""

    actor_type = "misbehaving"
    mailbox: ClassVar[MailboxConfig] = MailboxConfig(max_deliver=2, backoff=(0.05,))
    ran: ClassVar[dict[str, int]] = {}

    async def raise_(self, msg: Raise) -> None:
        type(self).ran[msg.what] = type(self).ran.get(msg.what, 0) + 1
        _raise(msg.what)
