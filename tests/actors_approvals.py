"""An actor whose tools wait for an operator, for the approval tests (importable by
worker subprocesses; `SAFE_LEDGER` names a file each run is appended to)."""

from __future__ import annotations

import os
from typing import ClassVar

from actormesh import Actor, MailboxConfig, Message, tool


class Open(Message):
    door: str


class Peek(Message):
    door: str


class Safe(Actor):
    """Keyless: a tool call needs no key. A small `max_deliver`, so that waiting for
    an operator outlasts it (held messages must not be dead-lettered for that)."""

    actor_type = "safe"
    keyless = True
    mailbox = MailboxConfig(ack_wait=5.0, backoff=(0.05,), max_deliver=2)
    ran: ClassVar[list[str]] = []

    @tool(needs_approval=True)
    async def open(self, msg: Open) -> str:
        """Open a door: every call waits for an operator's approval."""
        _record(msg.door)
        return f"opened {msg.door}"

    @tool
    async def peek(self, msg: Peek) -> str:
        """Look at a door (needs approval only where a grant says so)."""
        _record(msg.door)
        return f"peeked {msg.door}"


def _record(door: str) -> None:
    Safe.ran.append(door)
    path = os.environ.get("SAFE_LEDGER")
    if path:
        with open(path, "a", encoding="utf-8") as f:
            f.write(door + "\n")


def ledger(path: str | os.PathLike[str]) -> list[str]:
    try:
        with open(path, encoding="utf-8") as f:
            return f.read().split()
    except FileNotFoundError:
        return []
