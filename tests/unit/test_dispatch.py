"""The worker's lanes and runners, without a broker: per-key order, the
concurrency bound, and nothing per key kept once a key is idle."""

from __future__ import annotations

import asyncio
from typing import Any

from nats.aio.msg import Msg

from actormesh._worker._dispatch import Dispatcher
from actormesh._worker._settle import Settler

BASE = "m.mbox.t."


def a_msg(key: str, n: int) -> Msg:
    return Msg(_client=None, subject=BASE + key, reply=f"$JS.ACK.S.C.1.{n}.{n}.1.0", data=b"")  # type: ignore[arg-type]


class Recorder:
    """A `process` that records what ran, blocking while `gate` is clear."""

    def __init__(self, settler: Settler) -> None:
        self.settler = settler
        self.ran: list[tuple[str, int]] = []
        self.running = 0
        self.most = 0
        self.gate = asyncio.Event()
        self.gate.set()

    async def __call__(self, key: str, msg: Msg) -> None:
        self.running += 1
        self.most = max(self.most, self.running)
        try:
            await self.gate.wait()
            self.ran.append((key, int(msg.reply.split(".")[5])))
        finally:
            self.running -= 1
        self.settler._release(msg)


def a_dispatcher(*, keyless: bool, concurrency: int) -> tuple[Dispatcher, Recorder, Settler]:
    settler = Settler(ack_sync=False, ack_timeout=1.0, ack_wait=30.0)
    recorder = Recorder(settler)
    dispatcher = Dispatcher(
        base=BASE,
        keyless=keyless,
        concurrency=concurrency,
        settler=settler,
        process=recorder,
        accepting=lambda: True,
    )
    return dispatcher, recorder, settler


async def settled(settler: Settler) -> None:
    async with asyncio.timeout(5):
        await settler.idle.wait()


async def test_a_key_runs_in_order_and_keys_run_side_by_side() -> None:
    dispatcher, recorder, settler = a_dispatcher(keyless=False, concurrency=8)
    recorder.gate.clear()
    for n in range(40):
        dispatcher.dispatch(a_msg(f"k{n % 4}", n))
    for _ in range(20):
        await asyncio.sleep(0)
    assert recorder.running == 4  # one per key, the rest queued in their lanes
    recorder.gate.set()
    await settled(settler)
    for key in ("k0", "k1", "k2", "k3"):
        assert [n for k, n in recorder.ran if k == key] == sorted(
            n for n in range(40) if f"k{n % 4}" == key
        )
    assert dispatcher._lanes == {} and not dispatcher._ready


async def test_the_concurrency_bound_holds_for_keyless_and_keyed() -> None:
    for keyless in (True, False):
        dispatcher, recorder, settler = a_dispatcher(keyless=keyless, concurrency=3)
        recorder.gate.clear()
        for n in range(30):
            dispatcher.dispatch(a_msg(f"k{n}", n))
        for _ in range(20):
            await asyncio.sleep(0)
        assert recorder.running == 3
        recorder.gate.set()
        await settled(settler)
        assert recorder.most == 3
        assert sorted(n for _, n in recorder.ran) == list(range(30))


async def test_idle_keys_leave_no_lane_and_no_runner() -> None:
    dispatcher, recorder, settler = a_dispatcher(keyless=False, concurrency=64)
    for n in range(1000):
        dispatcher.dispatch(a_msg(f"key{n}", n))
    await settled(settler)
    await asyncio.sleep(0)
    assert len(recorder.ran) == 1000
    assert dispatcher._lanes == {} and not dispatcher._ready
    assert dispatcher._runners == 0 and not settler.held


async def test_a_failing_process_does_not_stop_its_runner(caplog: Any) -> None:
    dispatcher, _, settler = a_dispatcher(keyless=False, concurrency=1)
    calls: list[int] = []

    async def process(key: str, msg: Msg) -> None:
        calls.append(int(msg.reply.split(".")[5]))
        if len(calls) == 1:
            raise RuntimeError("a bug")
        settler._release(msg)

    dispatcher._process = process
    for n in range(3):
        dispatcher.dispatch(a_msg("k", n))
    for _ in range(20):
        await asyncio.sleep(0)
    assert calls == [0, 1, 2]
    assert "a bug" in caplog.text
    assert dispatcher._lanes == {} and dispatcher._runners == 0


async def test_a_runner_cancelled_before_it_ran_is_counted_out() -> None:
    dispatcher, recorder, settler = a_dispatcher(keyless=True, concurrency=1)
    dispatcher.dispatch(a_msg("k", 0))
    dispatcher.cancel_work()  # before the runner's first step
    await asyncio.sleep(0)
    await asyncio.sleep(0)
    assert dispatcher._runners == 0 and dispatcher._starting is None
    settler.held.clear()
    dispatcher._ready.clear()
    dispatcher.dispatch(a_msg("k", 1))  # a new runner can start
    await settled(settler)
    assert recorder.ran == [("k", 1)]
