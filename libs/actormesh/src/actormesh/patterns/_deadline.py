"""Awaiting under a deadline of our own, told apart from a TimeoutError raised inside.

`asyncio.timeout` turns its own expiry into TimeoutError, the same type the
awaited code may raise for its own reasons (a socket timeout, an inner
deadline). Only our expiry may become BulkheadFull, LockTimeout, TaskTimeout,
...; an inner TimeoutError is the awaited code's own failure and propagates.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from typing import TypeVar

__all__ = ["DeadlineExpired", "within"]

T = TypeVar("T")


class DeadlineExpired(Exception):
    """Our deadline passed; its `__cause__` is the TimeoutError asyncio raised."""

    def __init__(self, timeout: float) -> None:
        super().__init__(f"deadline of {timeout:g} s expired")
        #: The limit that passed, in seconds (so callers need not re-derive it).
        self.timeout = timeout


async def within(timeout: float | None, aw: Awaitable[T]) -> T:
    """`await aw`, given up after `timeout` seconds (None: no limit) with
    `DeadlineExpired`."""
    if timeout is None:
        return await aw
    deadline = asyncio.timeout(timeout)
    try:
        async with deadline:
            return await aw
    except TimeoutError as exc:
        if not deadline.expired():
            raise
        raise DeadlineExpired(timeout) from exc
