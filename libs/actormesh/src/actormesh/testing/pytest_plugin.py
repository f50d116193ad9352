"""pytest fixtures: `nats_broker` (session), `nats_url`, `mesh_prefix`, `mesh`, and
`nats_cluster` (a 3-node JetStream cluster of this test's own).

Enable with ``-p actormesh.testing.pytest_plugin`` (this repository's
pyproject does) or ``pytest_plugins = ["actormesh.testing.pytest_plugin"]``.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import pytest_asyncio

from .._cluster import NatsCluster
from .._mesh import Mesh
from ._harness import Broker, broker, unique_prefix


@pytest_asyncio.fixture(scope="session", loop_scope="session")
async def nats_broker() -> AsyncIterator[Broker]:
    """One real nats-server for the session (or the one `NATS_URL` names)."""
    async with broker() as b:
        yield b


@pytest_asyncio.fixture
async def nats_cluster(tmp_path: Path) -> AsyncIterator[NatsCluster]:
    """A 3-node JetStream cluster for this test alone (tests kill and pause its
    nodes), its stores under `tmp_path`."""
    async with NatsCluster(nodes=3, store_root=tmp_path / "cluster") as cluster:
        yield cluster


@pytest.fixture
def nats_url(nats_broker: Broker) -> str:
    return nats_broker.url


@pytest.fixture
def mesh_prefix() -> str:
    """A fresh subject prefix: this test's streams are its own."""
    return unique_prefix()


@pytest_asyncio.fixture
async def mesh(nats_url: str, mesh_prefix: str) -> AsyncIterator[Mesh]:
    """A `Mesh` on the session broker with this test's own prefix."""
    m = await Mesh.connect(nats_url, prefix=mesh_prefix, name="test")
    try:
        yield m
    finally:
        await delete_streams(m)
        await m.close()


async def delete_streams(mesh: Mesh) -> None:
    """Remove every stream of this mesh's prefix (tests share one broker)."""
    own = mesh.subjects.prefix.upper() + "_"
    with contextlib.suppress(Exception):
        for info in await mesh.js.streams_info():
            if info.config.name and info.config.name.startswith(own):
                await mesh.js.delete_stream(info.config.name)
