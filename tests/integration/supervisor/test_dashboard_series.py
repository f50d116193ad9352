"""The charts' series through the dashboard's API, from a real worker under load:
handled/s, mailbox depth and handler percentiles arrive, one point a second."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from actormesh import Mesh, WorkerConfig
from actormesh.lowlevel import ensure_mailbox
from actormesh.testing import running_worker
from actormesh_supervisor import Service
from tests.actors_search import Inbox, Note
from tests.actors_supervisor import api_get

pytestmark = pytest.mark.integration


async def _until(predicate: Callable[[], Awaitable[bool]], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not await predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        await asyncio.sleep(0.2)


def _seen(data: dict[str, Any], series: str) -> list[float]:
    values = data["types"].get(Inbox.actor_type, {}).get(series, [])
    return [v for v in values if v]


@pytest.mark.timeout(60)
async def test_series_follow_a_worker_under_load(service: Service, mesh: Mesh) -> None:
    Inbox.seen.clear()
    await ensure_mailbox(mesh.js, mesh.subjects, Inbox.actor_type, Inbox.mailbox)
    ref = mesh.ref(Inbox.actor_type, "k")
    latest: dict[str, Any] = {}
    config = WorkerConfig(heartbeat_interval=0.25)

    async def load() -> None:
        i = 0
        while True:
            await ref.tell_many([Note(text=f"b{i}-{j}") for j in range(20)])
            i += 1
            await asyncio.sleep(0.05)

    async def moving() -> bool:
        latest.update(await api_get(service, "series", seconds=30))
        depth = latest["types"].get(Inbox.actor_type, {}).get("depth", [])
        charted = any(v is not None for v in depth)  # after the supervisor's mailbox poll
        return bool(_seen(latest, "handled")) and bool(_seen(latest, "p99")) and charted

    async with running_worker(mesh, Inbox, config) as worker:
        loader = asyncio.create_task(load())
        try:
            await _until(moving, 30, "handled/s and p99 in the series")
        finally:
            loader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await loader
        data = await api_get(service, "series", seconds=60, actor_type=Inbox.actor_type)
        assert len(data["times"]) == 60 and data["times"][-1] - data["times"][0] == 59
        assert set(data["types"]) == {Inbox.actor_type}
        assert max(_seen(data, "p99")) >= max(_seen(data, "p50"))
        # The mailbox's depth and ack pending are charted too (0 once drained).
        mailbox = data["types"][Inbox.actor_type]
        assert any(v is not None for v in mailbox["depth"])
        assert any(v is not None for v in mailbox["ack_pending"])
        sparkline = data["workers"][worker.id]
        assert sparkline["actor_type"] == Inbox.actor_type
        assert len(sparkline["handled"]) == 60 and any(sparkline["handled"])
    full = await api_get(service, "series")
    assert len(full["times"]) == full["capacity"] == 900
