"""Pool: hard bounds (property test), reuse, validation, idle eviction, timeouts, close."""

from __future__ import annotations

import asyncio
import itertools

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from actormesh.patterns import Pool, PoolClosed, PoolConfig, PoolExhausted


class Conn:
    def __init__(self, n: int) -> None:
        self.n = n
        self.healthy = True
        self.closed = False


class Factory:
    def __init__(self) -> None:
        self.ids = itertools.count()
        self.live: set[int] = set()
        self.peak = 0

    async def make(self) -> Conn:
        await asyncio.sleep(0)  # creation takes a while: others run meanwhile
        conn = Conn(next(self.ids))
        self.live.add(conn.n)
        self.peak = max(self.peak, len(self.live))
        return conn

    async def dispose(self, conn: Conn) -> None:
        await asyncio.sleep(0)
        conn.closed = True
        self.live.discard(conn.n)


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


ACTIONS = st.sampled_from(["release", "discard", "break"])


@settings(max_examples=60, deadline=None)
@given(
    max_size=st.integers(1, 4),
    plans=st.lists(
        st.lists(st.tuples(st.integers(0, 3), ACTIONS), min_size=1, max_size=5),
        min_size=1,
        max_size=8,
    ),
)
def test_never_more_than_max_size_objects_alive(
    max_size: int, plans: list[list[tuple[int, str]]]
) -> None:
    async def scenario() -> None:
        factory = Factory()
        pool: Pool[Conn] = Pool(
            factory.make,
            PoolConfig(max_size=max_size, acquire_timeout=None),
            validate=lambda c: c.healthy,
            dispose=factory.dispose,
        )
        in_hand: set[int] = set()

        async def worker(plan: list[tuple[int, str]]) -> None:
            for hold, action in plan:
                conn = await pool.acquire()
                assert not conn.closed
                assert conn.n not in in_hand, "handed to two borrowers at once"
                in_hand.add(conn.n)
                assert pool.size <= max_size
                for _ in range(hold):
                    await asyncio.sleep(0)
                in_hand.discard(conn.n)
                if action == "break":
                    conn.healthy = False
                await pool.release(conn, discard=action == "discard")
                assert pool.size <= max_size

        await asyncio.gather(*(worker(p) for p in plans))
        m = pool.metrics()
        assert factory.peak <= max_size
        assert m.acquired == sum(len(p) for p in plans)
        assert m.size == m.idle == len(factory.live)
        assert m.created - m.destroyed == m.size
        assert m.validation_failures == sum(a == "break" for p in plans for _, a in p)
        await pool.close()
        assert factory.live == set()

    asyncio.run(scenario())


async def test_reuses_the_most_recently_released_object() -> None:
    factory = Factory()
    pool: Pool[Conn] = Pool(factory.make, PoolConfig(max_size=3))
    a, b = await pool.acquire(), await pool.acquire()
    await pool.release(a)
    await pool.release(b)
    assert await pool.acquire() is b
    assert pool.metrics().created == 2


async def test_acquire_timeout_raises_pool_exhausted() -> None:
    pool: Pool[Conn] = Pool(Factory().make, PoolConfig(name="db", max_size=1))
    held = await pool.acquire()
    with pytest.raises(PoolExhausted) as info:
        await pool.acquire(timeout=0.001)
    assert (info.value.name, info.value.max_size) == ("db", 1)
    assert pool.metrics().timeouts == 1
    await pool.release(held)
    assert await pool.acquire(timeout=0) is held


async def test_a_released_object_goes_to_the_longest_waiter() -> None:
    pool: Pool[Conn] = Pool(Factory().make, PoolConfig(max_size=1, acquire_timeout=None))
    held = await pool.acquire()
    order: list[str] = []

    async def borrower(name: str) -> None:
        async with pool.borrow() as conn:
            assert conn is held
            order.append(name)

    waiters = [asyncio.create_task(borrower(n)) for n in ("first", "second")]
    await asyncio.sleep(0)
    await pool.release(held)
    await asyncio.gather(*waiters)
    assert order == ["first", "second"]


async def test_a_cancelled_waiter_passes_the_object_on() -> None:
    pool: Pool[Conn] = Pool(Factory().make, PoolConfig(max_size=1, acquire_timeout=None))
    held = await pool.acquire()
    first = asyncio.create_task(pool.acquire())
    second = asyncio.create_task(pool.acquire())
    await asyncio.sleep(0)
    await pool.release(held)  # handed to `first` ...
    first.cancel()  # ... which is cancelled before it runs
    with pytest.raises(asyncio.CancelledError):
        await first
    assert await second is held
    assert pool.metrics().in_use == 1


async def test_validation_failure_disposes_and_frees_the_slot_for_a_waiter() -> None:
    factory = Factory()
    pool: Pool[Conn] = Pool(
        factory.make,
        PoolConfig(max_size=1, acquire_timeout=None),
        validate=lambda c: c.healthy,
        dispose=factory.dispose,
    )
    conn = await pool.acquire()
    waiter = asyncio.create_task(pool.acquire())
    await asyncio.sleep(0)
    conn.healthy = False
    await pool.release(conn)
    fresh = await waiter
    assert fresh is not conn and conn.closed
    assert pool.metrics().validation_failures == 1


async def test_async_validate_and_a_raising_validate(caplog: pytest.LogCaptureFixture) -> None:
    async def check(conn: Conn) -> bool:
        if conn.n == 1:
            raise RuntimeError("ping failed")
        return True

    pool: Pool[Conn] = Pool(Factory().make, validate=check)
    a, b = await pool.acquire(), await pool.acquire()
    await pool.release(a)
    await pool.release(b)
    assert pool.metrics().idle == 1
    assert "validate raised" in caplog.text


async def test_idle_objects_are_evicted_with_a_fake_clock() -> None:
    clock = FakeClock()
    factory = Factory()
    pool: Pool[Conn] = Pool(
        factory.make, PoolConfig(idle_timeout=60), dispose=factory.dispose, clock=clock
    )
    a, b = await pool.acquire(), await pool.acquire()
    await pool.release(a)
    clock.now = 30
    await pool.release(b)
    clock.now = 70
    assert await pool.evict_idle() == 1
    assert (a.closed, b.closed) == (True, False)
    clock.now = 200
    fresh = await pool.acquire()  # b is stale too: passed over and disposed
    assert fresh is not b
    assert b.closed
    assert pool.metrics().evicted == 2


async def test_the_reaper_evicts_in_the_background() -> None:
    factory = Factory()
    disposed = asyncio.Event()

    async def dispose(conn: Conn) -> None:
        await factory.dispose(conn)
        disposed.set()

    async with Pool(factory.make, PoolConfig(idle_timeout=0.001), dispose=dispose) as pool:
        conn = await pool.acquire()
        await pool.release(conn)
        await disposed.wait()
        assert pool.metrics().evicted == 1
    assert pool.closed


async def test_a_failing_factory_frees_its_slot() -> None:
    calls = 0

    async def flaky() -> Conn:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise ConnectionError("refused")
        return Conn(calls)

    pool: Pool[Conn] = Pool(flaky, PoolConfig(max_size=1))
    with pytest.raises(ConnectionError):
        await pool.acquire()
    assert pool.size == 0
    assert (await pool.acquire(timeout=0)).n == 2


async def test_close_fails_waiters_and_disposes_everything() -> None:
    factory = Factory()
    pool: Pool[Conn] = Pool(
        factory.make, PoolConfig(max_size=2, acquire_timeout=None), dispose=factory.dispose
    )
    a, b = await pool.acquire(), await pool.acquire()
    await pool.release(a)
    a = await pool.acquire()
    waiter = asyncio.create_task(pool.acquire())
    await asyncio.sleep(0)
    await pool.release(a)  # goes to the waiter
    held = await waiter
    waiter2 = asyncio.create_task(pool.acquire())
    await asyncio.sleep(0)
    await pool.close()
    with pytest.raises(PoolClosed):
        await waiter2
    with pytest.raises(PoolClosed):
        await pool.acquire()
    await pool.release(held)
    await pool.release(b)
    assert factory.live == set()
    assert pool.size == 0


async def test_releasing_a_stranger_is_an_error() -> None:
    pool: Pool[Conn] = Pool(Factory().make)
    with pytest.raises(ValueError, match="not in use"):
        await pool.release(Conn(99))
