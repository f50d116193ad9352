from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass

from .._actor import Actor
from .._config import WorkerConfig
from .._mesh import Mesh
from .._server import NatsServer, ServerConfig
from .._settings import Settings
from .._worker import Worker


@dataclass(frozen=True, slots=True)
class Broker:
    """Where a test's broker is, and the server object when we run it ourselves."""

    url: str
    server: NatsServer | None


@asynccontextmanager
async def broker(config: ServerConfig | None = None) -> AsyncIterator[Broker]:
    """A broker for tests: `NATS_URL` if set, else a container when asked, else a local server."""
    settings = Settings.from_env()
    url = settings.nats_url
    if url:
        yield Broker(url=url, server=None)
        return
    if settings.test_docker:
        async with _container_broker() as b:
            yield b
        return
    # Many tests share one broker, each with its own streams: leave room for their
    # reservations whatever the disk size.
    async with NatsServer(config or ServerConfig(max_file_store=1 << 40)) as server:
        yield Broker(url=server.url, server=server)


@asynccontextmanager
async def _container_broker() -> AsyncIterator[Broker]:
    # Imported here: testcontainers (and a Docker engine) are optional.
    from testcontainers.core.container import DockerContainer  # type: ignore[import-not-found]

    container = DockerContainer("nats:2.11-alpine").with_command("-js").with_exposed_ports(4222)
    container.start()
    try:
        host = container.get_container_host_ip()
        port = container.get_exposed_port(4222)
        yield Broker(url=f"nats://{host}:{port}", server=None)
    finally:
        container.stop()


@asynccontextmanager
async def running_worker(
    mesh: Mesh, actor: type[Actor], config: WorkerConfig | None = None
) -> AsyncIterator[Worker]:
    """Serve `actor` in this process and event loop; drained and stopped on exit."""
    worker = Worker(mesh, actor, config)
    await worker.start()
    try:
        yield worker
    finally:
        if worker.status != "stopped":
            await worker.drain(grace=5.0)


def unique_prefix() -> str:
    """A subject prefix no other test uses, so tests can share one broker."""
    return "t" + uuid.uuid4().hex[:10]


async def eventually(
    predicate: Callable[[], bool], timeout: float = 15.0, *, what: str = "condition"
) -> None:
    """Wait until `predicate()` holds (checked every 20 ms), or fail after `timeout`
    seconds with an AssertionError naming `what`: for tests that wait on a worker."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} not reached within {timeout:g}s")
        await asyncio.sleep(0.02)
