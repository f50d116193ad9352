"""RWLock (over aiorwlock), CountdownLatch, ordered locks."""

from __future__ import annotations

import asyncio

import pytest

from actormesh.patterns import (
    CountdownLatch,
    LockOrderViolation,
    LockTimeout,
    OrderedLock,
    RWLock,
    acquire_ordered,
)


async def test_readers_share_and_writers_exclude() -> None:
    lock = RWLock("cfg")
    readers_in = 0
    peak_readers = 0
    writer_saw_readers: list[int] = []
    all_in = asyncio.Event()

    async def reader() -> None:
        nonlocal readers_in, peak_readers
        async with lock.read():
            readers_in += 1
            peak_readers = max(peak_readers, readers_in)
            if readers_in == 3:
                all_in.set()
            await all_in.wait()
            readers_in -= 1

    async def writer() -> None:
        await all_in.wait()
        async with lock.write():
            writer_saw_readers.append(readers_in)
            assert lock.write_locked

    await asyncio.gather(reader(), reader(), reader(), writer())
    assert peak_readers == 3
    assert writer_saw_readers == [0]
    assert not lock.read_locked and not lock.write_locked


async def test_rwlock_acquire_timeout() -> None:
    lock = RWLock("cfg", timeout=0.001)
    release = asyncio.Event()

    async def hold_write() -> None:
        async with lock.write(timeout=None):
            await release.wait()

    holder = asyncio.create_task(hold_write())
    await asyncio.sleep(0.0)
    await asyncio.sleep(0.0)
    with pytest.raises(LockTimeout) as info:
        async with lock.read():
            pytest.fail("must not get the read side while a writer holds the lock")
    assert info.value.name == "cfg:read"
    assert isinstance(info.value, TimeoutError)
    release.set()
    await holder
    async with lock.read():  # a timed-out waiter left no trace
        assert lock.read_locked


async def test_countdown_latch_opens_at_zero() -> None:
    latch = CountdownLatch(3)
    opened = asyncio.create_task(latch.wait())
    latch.count_down()
    latch.count_down()
    await asyncio.sleep(0)
    assert not opened.done()
    latch.count_down(5)
    await opened
    assert latch.count == 0
    latch.count_down()  # stays open
    await latch.wait()
    await CountdownLatch(0).wait()
    with pytest.raises(ValueError, match="n must be"):
        latch.count_down(0)


async def test_ordered_locks_in_order_are_fine_out_of_order_is_refused() -> None:
    accounts = OrderedLock("accounts", 1)
    ledger = OrderedLock("ledger", 2)
    async with accounts, ledger:
        assert accounts.locked() and ledger.locked()
    async with ledger:
        with pytest.raises(LockOrderViolation) as info:
            await accounts.acquire()
    v = info.value
    assert (v.name, v.order, v.held, v.held_order) == ("accounts", 1, "ledger", 2)
    assert not accounts.locked()
    # After release the task holds nothing: any order is fine again.
    async with accounts:
        pass


async def test_reacquiring_a_held_ordered_lock_is_a_violation_not_a_deadlock() -> None:
    lock = OrderedLock("a", 1)
    async with lock:
        with pytest.raises(LockOrderViolation):
            await lock.acquire()


async def test_ordered_lock_timeout() -> None:
    lock = OrderedLock("db", 1, timeout=0.001)
    release = asyncio.Event()

    async def hold() -> None:
        async with lock:
            await release.wait()

    holder = asyncio.create_task(hold())
    await asyncio.sleep(0)
    with pytest.raises(LockTimeout) as info:
        await lock.acquire()
    assert (info.value.name, info.value.timeout) == ("db", 0.001)
    release.set()
    await holder


async def test_a_child_task_does_not_inherit_held_locks() -> None:
    low, high = OrderedLock("low", 1), OrderedLock("high", 2)
    async with high:

        async def child() -> None:
            async with low:
                pass

        await asyncio.create_task(child())


async def test_acquire_ordered_sorts_and_releases_in_reverse() -> None:
    a, b, c = OrderedLock("a", 10), OrderedLock("b", 20), OrderedLock("c", 30)
    async with acquire_ordered(c, a, b):
        assert all(lock.locked() for lock in (a, b, c))
        with pytest.raises(LockOrderViolation):
            await OrderedLock("early", 5).acquire()
    assert not any(lock.locked() for lock in (a, b, c))
    with pytest.raises(ValueError, match="twice"):
        async with acquire_ordered(a, a):
            pass
    with pytest.raises(ValueError, match="share order"):
        async with acquire_ordered(a, OrderedLock("a2", 10)):
            pass


async def test_acquire_ordered_times_out_and_releases_what_it_took() -> None:
    a, b = OrderedLock("a", 1), OrderedLock("b", 2)
    release = asyncio.Event()

    async def hold_b() -> None:
        async with b:
            await release.wait()

    holder = asyncio.create_task(hold_b())
    await asyncio.sleep(0)
    with pytest.raises(LockTimeout):
        async with acquire_ordered(a, b, timeout=0.001):
            pytest.fail("b is held elsewhere")
    assert not a.locked()
    release.set()
    await holder
