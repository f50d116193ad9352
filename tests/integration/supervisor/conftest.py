"""A supervisor with no workers, its dashboard token set: for the read API's tests."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest_asyncio

from actormesh_supervisor import Service
from tests.actors_supervisor import TOKEN, meshfile, options


@pytest_asyncio.fixture
async def service(nats_url: str, mesh_prefix: str, tmp_path: Path) -> AsyncIterator[Service]:
    mf = meshfile(mesh_prefix, [], backend="none")
    async with Service(options(nats_url, mesh_prefix, tmp_path, mf, token=TOKEN)) as svc:
        yield svc
