"""The worker's HTTP endpoint: `/metrics` (Prometheus) and `/healthz` (HealthReport JSON)."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

import msgspec
from aiohttp import web
from prometheus_client import CollectorRegistry
from prometheus_client.exposition import choose_encoder

from .._errors import ConfigError
from ._config import ObservabilityError
from ._metrics import WorkerMetrics

if TYPE_CHECKING:
    from .._worker import Worker

__all__ = ["WorkerHttpServer", "serve_worker_http"]

log = logging.getLogger("actormesh.observability")

_encoder = msgspec.json.Encoder()


class WorkerHttpServer:
    """A running aiohttp server for one worker; `port` is the one actually bound."""

    def __init__(
        self, runner: web.AppRunner, host: str, port: int, owned: WorkerMetrics | None
    ) -> None:
        self._runner = runner
        self.host = host
        self.port = port
        self._owned = owned

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    async def close(self) -> None:
        await self._runner.cleanup()
        if self._owned is not None:
            await self._owned.close()
            self._owned = None

    async def __aenter__(self) -> WorkerHttpServer:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()


async def serve_worker_http(
    worker: Worker,
    port: int,
    host: str = "127.0.0.1",
    *,
    registry: CollectorRegistry | None = None,
) -> WorkerHttpServer:
    """Serve `/metrics` and `/healthz` for `worker` on `host:port` (0 picks a free port).

    `registry` is what `/metrics` exposes; without one, the server makes a
    dedicated registry with `WorkerMetrics` for the worker and owns it.
    """
    if not 0 <= port <= 65535:
        raise ConfigError(f"metrics port {port} is not a TCP port (0 picks a free one)")
    owned: WorkerMetrics | None = None
    if registry is None:
        registry = CollectorRegistry()
        owned = WorkerMetrics(worker, registry)
        await owned.start()
    metrics_registry = registry

    async def metrics(request: web.Request) -> web.Response:
        encode, content_type = choose_encoder(request.headers.get("Accept", ""))
        return web.Response(body=encode(metrics_registry), headers={"Content-Type": content_type})

    async def healthz(request: web.Request) -> web.Response:
        report = worker.health()
        # Degraded still serves: only unhealthy should take the worker out of rotation.
        status = 503 if report.status == "unhealthy" else 200
        return web.Response(
            body=_encoder.encode(report), status=status, content_type="application/json"
        )

    app = web.Application()
    app.router.add_get("/metrics", metrics)
    app.router.add_get("/healthz", healthz)
    # A scrape every few seconds is not worth a log line each.
    runner = web.AppRunner(app, access_log=None, handle_signals=False)
    await runner.setup()
    site = web.TCPSite(runner, host, port)
    try:
        await site.start()
    except OSError as exc:
        await runner.cleanup()
        if owned is not None:
            await owned.close()
        raise ObservabilityError(
            f"cannot serve metrics on {host}:{port}: {exc.strerror or exc}; choose another "
            "--metrics-port (0 picks a free one)"
        ) from exc
    bound = port
    for address in runner.addresses:
        if isinstance(address, tuple) and len(address) >= 2:
            bound = int(address[1])
            break
    return WorkerHttpServer(runner, host, bound, owned)
