"""Example: a keyless echo service, with a slow and a failing message type.

`Slow` shows in-progress acks and concurrency; `Fail` shows retries with
backoff and, after `max_deliver` deliveries, the dead-letter stream.
"""

import asyncio
from typing import ClassVar

from actormesh import Actor, Context, MailboxConfig, Message


class Echo(Message):
    text: str


class Slow(Message):
    seconds: float
    text: str = ""


class Fail(Message):
    reason: str = "asked to fail"


class Boom(RuntimeError):
    pass


class EchoReply(Message):
    text: str
    worker: str


class EchoService(Actor):
    actor_type = "echo"
    keyless = True
    mailbox: ClassVar[MailboxConfig] = MailboxConfig(max_deliver=3, backoff=(0.5, 1.0))

    async def echo(self, msg: Echo, ctx: Context) -> EchoReply:
        return EchoReply(text=msg.text, worker=ctx.mesh.name)

    async def slow(self, msg: Slow) -> str:
        await asyncio.sleep(msg.seconds)
        return msg.text

    async def fail(self, msg: Fail) -> None:
        raise Boom(msg.reason)


__all__ = ["Boom", "Echo", "EchoReply", "EchoService", "Fail", "Slow"]
