"""A runner never ends holding a message: what `process` leaves unsettled is
settled through `Failed`, past-the-last deliveries are dead-lettered unrun, and a
cancelled runner gives its messages back. No broker: naks to a client-less
message fail, are logged, and release the message all the same."""

from __future__ import annotations

import asyncio

import pytest
from nats.aio.msg import Msg

from actormesh._worker._dispatch import Dispatcher
from actormesh._worker._settle import Settler

BASE = "m.mbox.t."


def a_msg(key: str, n: int, deliveries: int = 1) -> Msg:
    return Msg(
        _client=None,  # type: ignore[arg-type]
        subject=BASE + key,
        reply=f"$JS.ACK.S.C.{deliveries}.{n}.{n}.1.0",
        data=b"",
    )


class Failed:
    def __init__(self, settler: Settler) -> None:
        self.settler = settler
        self.unsettled_: list[tuple[str, BaseException]] = []
        self.exhausted_: list[str] = []

    async def unsettled(self, key: str, msg: Msg, exc: BaseException) -> None:
        self.unsettled_.append((key, exc))
        await self.settler.nak(msg, 0.0)

    async def exhausted(self, key: str, msg: Msg) -> None:
        self.exhausted_.append(key)
        await self.settler.nak(msg, 0.0)


def a_dispatcher(
    process: object, *, with_failed: bool = True
) -> tuple[Dispatcher, Settler, Failed]:
    settler = Settler(ack_sync=False, ack_timeout=1.0, ack_wait=30.0)
    failed = Failed(settler)
    dispatcher = Dispatcher(
        base=BASE,
        keyless=False,
        concurrency=4,
        settler=settler,
        process=process,  # type: ignore[arg-type]
        accepting=lambda: True,
        failed=failed if with_failed else None,
        max_deliver=3,
    )
    return dispatcher, settler, failed


async def idle(settler: Settler) -> None:
    async with asyncio.timeout(5):
        await settler.idle.wait()


@pytest.mark.parametrize(
    "exc",
    [
        RuntimeError("a bug"),
        SystemExit(3),
        KeyboardInterrupt(),
        MemoryError(),
        RecursionError(),
        asyncio.CancelledError(),  # raised by the handler, not a cancellation
    ],
    ids=lambda e: type(e).__name__,
)
async def test_what_process_raises_is_settled_and_the_lane_goes_on(exc: BaseException) -> None:
    ran: list[int] = []
    settler: Settler

    async def process(key: str, msg: Msg) -> None:
        n = int(msg.reply.split(".")[5])
        ran.append(n)
        if n == 0:
            raise exc
        settler._release(msg)

    dispatcher, settler, failed = a_dispatcher(process)
    for n in range(3):
        dispatcher.dispatch(a_msg("k", n))
    await idle(settler)
    assert ran == [0, 1, 2]
    assert failed.unsettled_ == [("k", exc)]
    assert dispatcher._runners == 0 and dispatcher._lanes == {}


async def test_without_failed_the_message_is_naked() -> None:
    async def process(key: str, msg: Msg) -> None:
        raise RuntimeError("a bug")

    dispatcher, settler, _ = a_dispatcher(process, with_failed=False)
    dispatcher.dispatch(a_msg("k", 1))
    await idle(settler)
    assert not settler.held


async def test_past_the_last_delivery_is_dead_lettered_unrun() -> None:
    ran: list[int] = []
    settler: Settler

    async def process(key: str, msg: Msg) -> None:
        ran.append(int(msg.reply.split(".")[5]))
        settler._release(msg)

    dispatcher, settler, failed = a_dispatcher(process)
    dispatcher.dispatch(a_msg("k", 1, deliveries=3))  # the last: it runs
    dispatcher.dispatch(a_msg("k", 2, deliveries=4))  # past it: a failed dead-lettering
    await idle(settler)
    assert ran == [1]
    assert failed.exhausted_ == ["k"]


async def test_a_cancelled_runner_hands_back_its_message_and_lane() -> None:
    gate = asyncio.Event()

    async def process(key: str, msg: Msg) -> None:
        await gate.wait()

    dispatcher, settler, failed = a_dispatcher(process)
    for n in range(3):
        dispatcher.dispatch(a_msg("k", n))
    for _ in range(5):
        await asyncio.sleep(0)
    assert len(settler.held) == 3
    dispatcher.cancel_work()
    await idle(settler)
    assert failed.unsettled_ == []  # a cancellation is not a failure
    assert dispatcher._runners == 0 and dispatcher._lanes == {}
