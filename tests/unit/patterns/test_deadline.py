"""`within`: our own deadline told apart from a TimeoutError raised inside."""

from __future__ import annotations

import asyncio

import pytest

from actormesh.patterns._deadline import DeadlineExpired, within


async def test_returns_what_it_awaited() -> None:
    async def answer() -> int:
        await asyncio.sleep(0)
        return 42

    assert await within(1.0, answer()) == 42
    assert await within(None, answer()) == 42


async def test_its_own_expiry_is_deadline_expired() -> None:
    with pytest.raises(DeadlineExpired) as caught:
        await within(0.01, asyncio.sleep(10))
    assert isinstance(caught.value.__cause__, TimeoutError)


async def test_a_timeout_error_from_inside_passes_through() -> None:
    async def upstream() -> None:
        raise TimeoutError("upstream said so")

    with pytest.raises(TimeoutError, match="upstream said so"):
        await within(10.0, upstream())


async def test_being_cancelled_is_not_an_expiry() -> None:
    task = asyncio.create_task(within(10.0, asyncio.sleep(10)))
    await asyncio.sleep(0.01)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


async def test_its_expiry_says_which_limit_passed() -> None:
    with pytest.raises(DeadlineExpired) as caught:
        await within(0.01, asyncio.sleep(10))
    assert caught.value.timeout == 0.01
