"""Example: a keyless echo service, with a slow and a failing message type.

`Slow` shows in-progress acks and concurrency; `Fail` shows retries with
backoff and, after `max_deliver` deliveries, the dead-letter stream.

`Say` is `Echo` exposed as a tool (`echo.say`), for the assistant example: a
separate message type, so plain asks of `Echo` need no grant.
"""

import asyncio
from typing import ClassVar

from actormesh import Actor, Context, MailboxConfig, Message, tool


class Echo(Message):
    text: str


class Say(Message):
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

    @tool
    async def say(self, msg: Say, ctx: Context) -> EchoReply:
        """Say `text` back, with the name of the worker that said it."""
        return EchoReply(text=msg.text, worker=ctx.mesh.name)

    async def slow(self, msg: Slow) -> str:
        await asyncio.sleep(msg.seconds)
        return msg.text

    async def fail(self, msg: Fail) -> None:
        raise Boom(msg.reason)


__all__ = ["Boom", "Echo", "EchoReply", "EchoService", "Fail", "Say", "Slow"]
