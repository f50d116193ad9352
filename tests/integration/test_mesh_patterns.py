"""The patterns wired into the mesh: handler policies, ask via breaker/retry,
redelivery backoff from a RetryPolicy."""

from __future__ import annotations

import asyncio
from typing import ClassVar

import pytest

from actormesh import (
    Actor,
    AskTimeout,
    HandlerError,
    MailboxConfig,
    Mesh,
    Message,
    RemoteError,
    RetryPolicy,
)
from actormesh.patterns import BreakerConfig, CircuitBreaker, CircuitOpen, policy
from actormesh.testing import running_worker
from tests.actors import Ping
from tests.integration.test_mesh import eventually

pytestmark = pytest.mark.integration


class Nap(Message):
    seconds: float


class Flaky(Message):
    fail_times: int


class Guarded(Actor):
    actor_type = "guarded"
    attempts: ClassVar[dict[str, int]] = {}

    @policy(timeout=0.2)
    async def nap(self, msg: Nap) -> str:
        await asyncio.sleep(msg.seconds)
        return "rested"

    @policy(retry=RetryPolicy(attempts=4, base=0.01, jitter=0.0))
    async def flaky(self, msg: Flaky) -> int:
        n = type(self).attempts[self.key] = type(self).attempts.get(self.key, 0) + 1
        if n <= msg.fail_times:
            raise HandlerError("transient", retryable=True)
        return n


async def test_handler_timeout_policy(mesh: Mesh) -> None:
    async with running_worker(mesh, Guarded):
        ref = mesh.ref(Guarded, "a")
        assert await ref.ask(Nap(seconds=0.01)) == "rested"
        with pytest.raises(RemoteError) as info:
            await ref.ask(Nap(seconds=2))
        assert info.value.type == "TaskTimeout"


async def test_handler_retry_policy_retries_in_place(mesh: Mesh) -> None:
    Guarded.attempts.clear()
    async with running_worker(mesh, Guarded) as worker:
        assert await mesh.ref(Guarded, "r").ask(Flaky(fail_times=2)) == 3
        assert worker.failed == 0
        with pytest.raises(RemoteError) as info:
            await mesh.ref(Guarded, "x").ask(Flaky(fail_times=10))
        assert info.value.type == "RetryExhausted"
    assert Guarded.attempts == {"r": 3, "x": 4}


class Failing(Actor):
    actor_type = "failing"
    calls: ClassVar[int] = 0

    async def ping(self, msg: Ping) -> str:
        type(self).calls += 1
        raise HandlerError("down", retryable=True)


async def test_ask_through_a_breaker_fails_fast_when_open(mesh: Mesh) -> None:
    now = [0.0]
    breaker = CircuitBreaker(
        "failing", BreakerConfig(failure_threshold=3, open_duration=30), clock=lambda: now[0]
    )
    async with running_worker(mesh, Failing):
        ref = mesh.ref(Failing, "x")
        for _ in range(3):
            with pytest.raises(RemoteError):
                await ref.ask(Ping(), breaker=breaker)
        calls = Failing.calls
        with pytest.raises(CircuitOpen) as info:
            await ref.ask(Ping(), breaker=breaker)
        assert info.value.retry_after == pytest.approx(30)
        assert Failing.calls == calls  # nothing was sent


async def test_ask_with_retry_outlasts_a_late_worker(mesh: Mesh) -> None:
    from actormesh_counter import Counter, Get

    await mesh.declare(Counter)
    ref = mesh.ref(Counter, "late")
    asking = asyncio.create_task(
        ref.ask(Get(), timeout=0.3, retry=RetryPolicy(attempts=30, base=0.05, cap=0.2))
    )
    await asyncio.sleep(0.5)
    assert not asking.done()
    async with running_worker(mesh, Counter):
        assert await asking == 0


async def test_ask_retry_exhausted_is_typed(mesh: Mesh) -> None:
    from actormesh._retry import RetryExhausted
    from actormesh_counter import Counter, Get

    await mesh.declare(Counter)
    with pytest.raises(RetryExhausted) as info:
        await mesh.ref(Counter, "nobody").ask(
            Get(), timeout=0.1, retry=RetryPolicy(attempts=3, base=0.01, jitter=0.0)
        )
    assert isinstance(info.value.__cause__, AskTimeout)


class Retried(Actor):
    actor_type = "retried"
    mailbox: ClassVar[MailboxConfig] = MailboxConfig.from_retry(
        RetryPolicy(attempts=3, base=0.05, multiplier=2.0, cap=1.0)
    )
    seen: ClassVar[int] = 0

    async def ping(self, msg: Ping) -> None:
        type(self).seen += 1
        raise RuntimeError("always")


async def test_redelivery_backoff_from_a_retry_policy(mesh: Mesh) -> None:
    assert Retried.mailbox.max_deliver == 3
    assert Retried.mailbox.backoff == (0.05, 0.1)
    async with running_worker(mesh, Retried) as worker:
        await mesh.ref(Retried, "p").tell(Ping())
        await eventually(lambda: worker.dead_lettered == 1)
    assert Retried.seen == 3
