"""A NATS client for unit tests of what goes on the write buffer, without a broker."""

from __future__ import annotations

import asyncio

from nats.aio.client import Client as NatsClient

from actormesh._nats import Client

__all__ = ["buffering"]


def buffering(cls: type[NatsClient] = Client) -> NatsClient:
    """A client of `cls` that counts as connected and has no socket: what it sends
    stays in `_pending`. Its flusher never runs, so the first send after a flush
    returns (or awaits) what wakes it, and the next ones nothing."""
    nc = cls()
    nc._status = NatsClient.CONNECTED
    nc._flush_queue = asyncio.Queue()
    nc._flusher_task = asyncio.get_running_loop().create_future()  # type: ignore[assignment]
    return nc
