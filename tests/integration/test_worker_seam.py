"""The worker's interceptor seam, and input no decoder can take, against a real broker."""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any, ClassVar

import nats
import pytest

from actormesh import (
    Actor,
    CallHandler,
    HandleMessage,
    Mesh,
    Message,
    MessageInput,
    Outcome,
    RemoteError,
    Worker,
    WorkerInterceptor,
)
from actormesh._dlq import DeadLetters
from actormesh.patterns import policy
from actormesh.testing import running_worker
from actormesh_counter import Counter, Get, Inc

pytestmark = pytest.mark.integration


async def eventually(predicate: Any, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached in time")
        await asyncio.sleep(0.02)


# -- input the decoder chokes on --------------------------------------------------------

BAD_UTF8 = b'{"type":"Inc\x80"}'
TOO_DEEP = b'{"a":' * 10_000 + b"1" + b"}" * 10_000


async def test_undecodable_input_is_dead_lettered_at_once(nats_url: str, mesh: Mesh) -> None:
    async with running_worker(mesh, Counter) as worker:
        raw = await nats.connect(nats_url)
        try:
            js = raw.jetstream()
            for i, payload in enumerate((BAD_UTF8, TOO_DEEP)):
                await js.publish(mesh.subjects.mailbox("counter", f"bad{i}"), payload)
        finally:
            await raw.close()
        await eventually(lambda: worker.dead_lettered == 2)
        # An ask gets the reason back at once.
        with pytest.raises(RemoteError) as info:
            await mesh.ref("counter", "asked").ask(BAD_UTF8, timeout=5)
        assert info.value.code == "bad_message"
        assert "utf-8" in info.value.remote_message.lower()
        await eventually(lambda: worker.dead_lettered == 3)
        # The worker kept going.
        await mesh.ref("counter", "ok").tell(Inc(by=2))
        assert await mesh.ref("counter", "ok").ask(Get()) == 2
        stream = mesh.subjects.mailbox_stream("counter")
        ci = await mesh.js.consumer_info(stream, mesh.subjects.consumer("counter"))
        assert ci.num_pending == 0
        assert ci.num_ack_pending == 0
    letters = await DeadLetters(mesh).list("counter")
    assert sorted(d.error_code for d in letters) == ["bad_message"] * 3
    reasons = " ".join(d.error_message for d in letters).lower()
    assert "utf-8" in reasons and "recursion" in reasons


# -- the seam ---------------------------------------------------------------------------


class Work(Message):
    n: int = 0


class Boom(Message):
    pass


class Seen:
    log: ClassVar[list[str]] = []


class Traced(Actor):
    actor_type = "traced"

    async def work(self, msg: Work) -> int:
        Seen.log.append("handler")
        return msg.n * 2

    @policy(timeout=5.0)
    async def boom(self, msg: Boom) -> None:
        Seen.log.append("handler")
        raise ValueError("boom")


class Recording(WorkerInterceptor):
    def __init__(self, name: str) -> None:
        self.name = name
        self.outcomes: list[tuple[Outcome, str]] = []
        self.step_results: list[str] = []

    def intercept_message(self, next: HandleMessage) -> HandleMessage:
        async def step(input: MessageInput) -> BaseException | None:
            Seen.log.append(f"{self.name}:message")
            error = await next(input)
            self.step_results.append(type(error).__name__)
            return error

        return step

    def intercept_handler(self, next: CallHandler) -> CallHandler:
        async def call(input: MessageInput) -> Any:
            Seen.log.append(f"{self.name}:handler")
            return await next(input)

        return call

    def outcome(
        self, worker: Worker, outcome: Outcome, input: MessageInput | None, seconds: float
    ) -> None:
        kind = type(input.message).__name__ if input is not None else "-"
        self.outcomes.append((outcome, kind))


class Broken(WorkerInterceptor):
    def outcome(
        self, worker: Worker, outcome: Outcome, input: MessageInput | None, seconds: float
    ) -> None:
        raise RuntimeError("counter broke")


async def test_interceptors_wrap_in_order_and_see_outcomes(
    mesh: Mesh, caplog: pytest.LogCaptureFixture
) -> None:
    Seen.log = []
    outer, inner = Recording("mesh"), Recording("worker")
    mesh.interceptors = (outer,)
    worker = Worker(mesh, Traced, interceptors=(inner, Broken()))
    await worker.start()
    try:
        with caplog.at_level(logging.DEBUG, logger="actormesh.worker"):
            assert await mesh.ref(Traced, "a").ask(Work(n=21), timeout=5) == 42
            with pytest.raises(RemoteError):
                await mesh.ref(Traced, "a").ask(Boom(), timeout=5)
            await eventually(lambda: worker.handled == 1 and worker.failed == 1)
    finally:
        await worker.drain(1.0)
        mesh.interceptors = ()
    # Mesh-wide first, the worker's own next; handler chains inside message chains.
    expected = ["mesh:message", "worker:message", "mesh:handler", "worker:handler", "handler"]
    assert Seen.log == expected * 2
    assert inner.step_results == ["NoneType", "ValueError"]
    assert ("handled", "Work") in inner.outcomes
    assert ("failed", "Boom") in inner.outcomes
    assert inner.outcomes == outer.outcomes
    broken = [r for r in caplog.records if "Broken" in r.getMessage()]
    # Logged with its name, in full once; the messages went on regardless.
    assert [r.levelno for r in broken][:1] == [logging.ERROR]
    assert all(r.levelno == logging.DEBUG for r in broken[1:])


async def test_an_interceptor_added_while_running_takes_effect(mesh: Mesh) -> None:
    async with running_worker(mesh, Traced) as worker:
        assert await mesh.ref(Traced, "b").ask(Work(n=1), timeout=5) == 2
        late = Recording("late")
        worker.add_interceptor(late)
        assert await mesh.ref(Traced, "b").ask(Work(n=2), timeout=5) == 4
        await eventually(lambda: ("handled", "Work") in late.outcomes)
        worker.remove_interceptor(late)
        assert worker.interceptors == ()
        assert await mesh.ref(Traced, "b").ask(Work(n=3), timeout=5) == 6
    assert late.outcomes == [("handled", "Work")]


# -- many keys --------------------------------------------------------------------------


async def test_after_many_keys_only_their_instances_remain(mesh: Mesh) -> None:
    async with running_worker(mesh, Counter) as worker:
        keys = [f"k{i}" for i in range(1000)]
        for start in range(0, len(keys), 100):
            await asyncio.gather(
                *(mesh.ref(Counter, k).tell(Inc()) for k in keys[start : start + 100])
            )
        await eventually(lambda: worker.handled == 1000 and not worker._held)
        assert await mesh.ref(Counter, "k7").ask(Get(), timeout=5) == 1
        await eventually(lambda: worker._dispatcher._runners == 0)
        # Per key: the instance, and nothing else (no lane, no queued entry, no hold).
        assert set(worker._instances) == set(keys)
        assert worker._dispatcher._lanes == {}
        assert not worker._dispatcher._ready
        assert not worker._held
