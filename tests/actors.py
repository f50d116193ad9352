"""Actors used by the tests (imported by in-process workers and subprocess workers)."""

from __future__ import annotations

import asyncio
import os
from typing import ClassVar

from actormesh import (
    Actor,
    Context,
    HandlerError,
    MailboxConfig,
    Message,
    SupervisionPolicy,
)


class Item(Message):
    id: str
    n: int = 0
    sleep: float = 0.0


class Ping(Message):
    pass


class Fail(Message):
    code: str = "nope"
    retryable: bool = True


class Point(Message):
    x: int
    y: int


class Sum(Message):
    a: int
    b: int


class Ledger(Actor):
    """Appends each handled item's id to the file named by $LEDGER_PATH, then returns."""

    actor_type = "ledger"
    mailbox: ClassVar[MailboxConfig] = MailboxConfig(ack_wait=2.0, max_deliver=20, backoff=(0.1,))

    async def item(self, msg: Item) -> None:
        if msg.sleep:
            await asyncio.sleep(msg.sleep)
        path = os.environ["LEDGER_PATH"]
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            os.write(fd, f"{self.key} {msg.id}\n".encode())
        finally:
            os.close(fd)

    async def ping(self, msg: Ping) -> str:
        return "pong"


class Recorder(Actor):
    """Records what it handles in class-level lists (in-process tests only)."""

    actor_type = "recorder"
    mailbox: ClassVar[MailboxConfig] = MailboxConfig(max_deliver=3, backoff=(0.05,))
    log: ClassVar[list[tuple[str, str, int]]] = []
    deliveries: ClassVar[dict[str, int]] = {}
    #: The mailbox sequence each item last ran from (`ctx.seq`).
    seqs: ClassVar[dict[str, int]] = {}
    running: ClassVar[int] = 0
    max_running: ClassVar[int] = 0

    async def item(self, msg: Item, ctx: Context) -> int:
        cls = type(self)
        cls.deliveries[msg.id] = cls.deliveries.get(msg.id, 0) + 1
        cls.seqs[msg.id] = ctx.seq
        cls.running += 1
        cls.max_running = max(cls.max_running, cls.running)
        try:
            if msg.sleep:
                await asyncio.sleep(msg.sleep)
        finally:
            cls.running -= 1
        cls.log.append((self.key, msg.id, msg.n))
        return msg.n

    async def fail(self, msg: Fail) -> None:
        type(self).deliveries[msg.code] = type(self).deliveries.get(msg.code, 0) + 1
        raise HandlerError(
            f"failing on purpose ({msg.code})", code=msg.code, retryable=msg.retryable
        )

    async def point(self, msg: Point) -> Point:
        return Point(x=msg.y, y=msg.x)

    def sum(self, msg: Sum) -> int:
        return msg.a + msg.b

    @classmethod
    def reset(cls) -> None:
        cls.log = []
        cls.deliveries = {}
        cls.seqs = {}
        cls.running = 0
        cls.max_running = 0


class Pool(Recorder):
    """Keyless: all messages run concurrently on one instance."""

    actor_type = "pool"
    keyless = True


class Crashy(Actor):
    """Raises on Fail; counts starts and restarts to check the supervision policy."""

    actor_type = "crashy"
    mailbox: ClassVar[MailboxConfig] = MailboxConfig(max_deliver=100, backoff=(0.02,))
    supervision: ClassVar[SupervisionPolicy] = SupervisionPolicy(
        on_error="restart", max_restarts=3, within=60
    )
    events: ClassVar[list[str]] = []

    def __init__(self) -> None:
        self.handled = 0

    async def on_start(self) -> None:
        type(self).events.append(f"start:{self.key}")

    async def on_stop(self) -> None:
        type(self).events.append(f"stop:{self.key}")

    async def on_restart(self, error: BaseException) -> None:
        type(self).events.append(f"restart:{self.key}:{type(error).__name__}")

    async def ping(self, msg: Ping) -> int:
        self.handled += 1
        return self.handled

    async def fail(self, msg: Fail) -> None:
        raise RuntimeError("crash")


class Resumer(Crashy):
    actor_type = "resumer"
    supervision: ClassVar[SupervisionPolicy] = SupervisionPolicy(on_error="resume")
    events: ClassVar[list[str]] = []
