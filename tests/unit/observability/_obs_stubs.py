"""A Worker over a stand-in NATS client: its counters, health and mailbox are ours to set."""

from __future__ import annotations

import types
from typing import Any

import pytest

from actormesh import Actor, Mesh, Message, MessageInput, Worker


class Work(Message):
    pass


class Odd(Message, tag="odd-one"):
    pass


class Shop(Actor):
    actor_type = "shop"

    async def work(self, msg: Work) -> None:
        pass

    async def odd(self, msg: Odd) -> None:
        pass


class StubJetStream:
    """Answers stream/consumer info as the broker would, or fails like a lost one."""

    def __init__(self) -> None:
        self.messages = 0
        self.fail = False

    async def stream_info(self, name: str) -> Any:
        if self.fail:
            raise TimeoutError("no broker")
        return types.SimpleNamespace(
            state=types.SimpleNamespace(messages=self.messages, bytes=self.messages * 100)
        )

    async def consumer_info(self, stream: str, durable: str) -> Any:
        if self.fail:
            raise TimeoutError("no broker")
        return types.SimpleNamespace(
            num_pending=self.messages, num_ack_pending=2, num_redelivered=1, num_waiting=1
        )


class StubNats:
    def __init__(self) -> None:
        self.is_connected = True
        self.max_payload = 1024 * 1024
        self.js = StubJetStream()

    def jetstream(self, **_: Any) -> StubJetStream:
        return self.js


@pytest.fixture
def nc() -> StubNats:
    return StubNats()


@pytest.fixture
def worker(nc: StubNats) -> Worker:
    mesh = Mesh(nc, prefix="mesh")  # type: ignore[arg-type]
    return Worker(mesh, Shop)


def fire(
    worker: Worker, outcome: str, *, data: bytes = b"", obj: Any = None, seconds: float = 0.0
) -> None:
    """What the worker does after settling a message."""
    msg: Any = types.SimpleNamespace(data=data, subject="mesh.mbox.shop.k", headers={})
    given = MessageInput(
        actor_type="shop", key="k", subject=msg.subject, headers={}, msg=msg, message=obj
    )
    for interceptor in worker.interceptors:
        interceptor.outcome(
            worker,
            outcome,  # type: ignore[arg-type]
            None if outcome == "restarted" else given,
            seconds,
        )
