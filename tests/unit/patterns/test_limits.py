"""RateLimiter (over aiolimiter) and Bulkhead."""

from __future__ import annotations

import asyncio

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from actormesh.patterns import Bulkhead, BulkheadFull, RateLimited, RateLimiter


async def test_rate_limiter_allows_a_burst_then_refuses_without_waiting() -> None:
    limiter = RateLimiter(3, per=3600, name="api")
    for _ in range(3):
        await limiter.acquire(timeout=0)
    assert not limiter.has_capacity()
    with pytest.raises(RateLimited) as info:
        await limiter.acquire(timeout=0)
    assert (info.value.name, info.value.rate, info.value.per) == ("api", 3, 3600)
    m = limiter.metrics()
    assert (m.acquired, m.delayed, m.rejected) == (3, 1, 1)


async def test_rate_limiter_timeout_while_waiting() -> None:
    limiter = RateLimiter(1, per=3600)
    async with limiter:
        pass
    with pytest.raises(RateLimited):
        await limiter.acquire(timeout=0.001)
    assert limiter.metrics().rejected == 1


async def test_rate_limiter_makes_callers_wait_and_cancellation_propagates() -> None:
    limiter = RateLimiter(1, per=3600)
    await limiter.acquire()
    waiter = asyncio.create_task(limiter.acquire())
    for _ in range(3):
        await asyncio.sleep(0)
    assert not waiter.done()
    waiter.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiter
    m = limiter.metrics()
    assert (m.acquired, m.delayed, m.rejected) == (1, 1, 0)


async def test_rate_limiter_lets_a_waiter_through_once_capacity_leaks_back() -> None:
    limiter = RateLimiter(1, per=0.001)
    await limiter.acquire()
    await limiter.acquire(timeout=60)
    assert limiter.metrics().acquired == 2


def test_rate_limiter_refuses_nonsense() -> None:
    with pytest.raises(ValueError, match="rate > 0"):
        RateLimiter(0)


@settings(max_examples=40, deadline=None)
@given(
    limit=st.integers(1, 5),
    work=st.lists(st.integers(0, 4), min_size=1, max_size=30),
)
def test_bulkhead_bounds_concurrency_and_admits_everyone_eventually(
    limit: int, work: list[int]
) -> None:
    async def scenario() -> None:
        bulkhead = Bulkhead(limit)
        inside = peak = 0

        async def call(n: int) -> None:
            nonlocal inside, peak
            async with bulkhead:
                inside += 1
                peak = max(peak, inside)
                for _ in range(n):
                    await asyncio.sleep(0)
                inside -= 1

        await asyncio.gather(*(call(n) for n in work))
        assert peak <= limit
        m = bulkhead.metrics()
        assert (m.admitted, m.rejected, m.active, m.waiting) == (len(work), 0, 0, 0)

    asyncio.run(scenario())


async def test_bulkhead_without_waiting_refuses_when_full() -> None:
    bulkhead = Bulkhead(1, max_wait=0, name="payments")
    release = asyncio.Event()
    holder = asyncio.create_task(bulkhead.call(release.wait))
    await asyncio.sleep(0)
    with pytest.raises(BulkheadFull) as info:
        await bulkhead.call(asyncio.sleep, 0)
    assert (info.value.name, info.value.max_concurrent, info.value.waited) == ("payments", 1, 0)
    release.set()
    assert await holder is True
    assert await bulkhead.call(asyncio.sleep, 0, "free again") == "free again"


async def test_bulkhead_max_wait_expires() -> None:
    bulkhead = Bulkhead(1, max_wait=0.001)
    release = asyncio.Event()
    holder = asyncio.create_task(bulkhead.call(release.wait))
    await asyncio.sleep(0)
    with pytest.raises(BulkheadFull):
        await bulkhead.acquire()
    release.set()
    await holder
    assert bulkhead.metrics().rejected == 1


async def test_bulkhead_bounds_its_waiting_room() -> None:
    bulkhead = Bulkhead(1, max_waiting=1)
    release = asyncio.Event()
    holder = asyncio.create_task(bulkhead.call(release.wait))
    await asyncio.sleep(0)
    waiter = asyncio.create_task(bulkhead.call(asyncio.sleep, 0, "waited"))
    await asyncio.sleep(0)
    assert bulkhead.metrics().waiting == 1
    with pytest.raises(BulkheadFull):
        await bulkhead.acquire()
    release.set()
    await holder
    assert await waiter == "waited"


async def test_bulkhead_releases_on_error() -> None:
    bulkhead = Bulkhead(1, max_wait=0)

    async def fail() -> None:
        raise OSError("dependency failed")

    with pytest.raises(OSError, match="dependency failed"):
        await bulkhead.call(fail)
    assert bulkhead.metrics().active == 0
    await bulkhead.call(asyncio.sleep, 0)
