"""`instrument_worker`: tracing, metrics and the health endpoint for one worker process.

This module imports OpenTelemetry only when the environment turns tracing on,
and prometheus-client/aiohttp only when a metrics port is given: a worker run
without either pays no import and no per-message cost, and the `otel` and
`metrics` extras stay optional.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import TYPE_CHECKING

from .._errors import ConfigError
from ._config import MetricsConfig, TracingConfig
from ._pipeline import run_off_loop

if TYPE_CHECKING:
    from opentelemetry.sdk.trace import TracerProvider

    from .._worker import Worker
    from ._http import WorkerHttpServer
    from ._metrics import WorkerMetrics
    from ._native import MeshTracer
    from ._pipeline import TracingPipeline
    from ._toolmetrics import ToolMetrics

__all__ = ["WorkerInstrumentation", "instrument_worker"]

log = logging.getLogger("actormesh.observability")

#: How long a stopping worker waits for its last spans to be exported.
FLUSH_TIMEOUT = 5.0


class WorkerInstrumentation:
    """What `instrument_worker` set up; `await close()` after the worker stopped."""

    def __init__(
        self,
        worker: Worker,
        *,
        tracer: MeshTracer | None,
        tracing: TracingPipeline | None,
        tracer_provider: TracerProvider | None,
        metrics: WorkerMetrics | None,
        http: WorkerHttpServer | None,
    ) -> None:
        self.worker = worker
        self.tracer = tracer
        #: Records and exports actormesh's own spans.
        self.tracing = tracing
        #: The SDK provider set as the global one for handlers' own spans (`api_spans`).
        self.tracer_provider = tracer_provider
        self.metrics = metrics
        self.http = http
        #: Per-tool figures for heartbeats without /metrics (`_tool_figures`).
        self.tool_metrics: ToolMetrics | None = None

    @property
    def metrics_port(self) -> int | None:
        """The port /metrics and /healthz are served on (None: not served)."""
        return self.http.port if self.http is not None else None

    async def close(self) -> None:
        """Stop serving, stop polling, export the last spans (bounded wait)."""
        try:
            if self.http is not None:
                await self.http.close()
                self.http = None
            if self.metrics is not None:
                await self.metrics.close()
                self.metrics = None
            if self.tool_metrics is not None:
                self.tool_metrics.close()
                self.tool_metrics = None
        finally:
            if self.tracer is not None and self.worker.mesh.tracer is self.tracer:
                from ._interceptor import remove_tracing_interceptor

                self.worker.mesh.tracer = None
                remove_tracing_interceptor(self.worker.mesh)
            tracing, self.tracing = self.tracing, None
            if tracing is not None:
                await tracing.aclose(FLUSH_TIMEOUT)
            provider, self.tracer_provider = self.tracer_provider, None
            if provider is not None:
                await run_off_loop(provider.shutdown, FLUSH_TIMEOUT, what="OpenTelemetry SDK")

    async def __aenter__(self) -> WorkerInstrumentation:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()


async def instrument_worker(
    worker: Worker,
    *,
    env: Mapping[str, str],
    metrics_port: int | None = None,
    api_spans: bool = False,
) -> WorkerInstrumentation:
    """Set up what `env` and `metrics_port` ask for, before `worker.run()`.

    - Tracing when the OTEL_* variables configure an exporter (see
      `TracingConfig.from_env`); the service name defaults to
      `actormesh-<actor type>` and the instance id is the worker id. With
      `api_spans` (the `actormesh worker` command sets it) and no global
      OpenTelemetry TracerProvider yet, an SDK one from the same settings
      becomes global, so spans handlers start themselves are exported too.
    - With `metrics_port` (0 picks a free port): `/metrics` and `/healthz` on
      ACTORMESH_METRICS_HOST (default 127.0.0.1), from a registry of the
      worker's own. The bound port goes into the worker's heartbeats.
    - Without it, a worker that serves tools still counts its tool calls for
      its heartbeats (the supervisor's Tools panel), when prometheus-client is
      installed; with it, those figures are in /metrics too.

    Raises `ConfigError` for bad settings or a missing optional dependency, and
    `ObservabilityError` if the port cannot be bound.
    """
    tracing = TracingConfig.from_env(env)
    metrics_config = MetricsConfig.from_env(env) if metrics_port is not None else None

    setup = WorkerInstrumentation(
        worker, tracer=None, tracing=None, tracer_provider=None, metrics=None, http=None
    )
    if tracing.enabled:
        try:
            from ._instrument import instrument
            from ._native import MeshTracer
            from ._pipeline import TracingPipeline
        except ImportError as exc:
            raise ConfigError(
                f"OTEL_* variables ask for tracing but OpenTelemetry is missing ({exc}): "
                "install actormesh[otel]"
            ) from exc
        service_name = f"actormesh-{worker.actor_type}"
        setup.tracing = TracingPipeline(tracing, service_name=service_name, instance_id=worker.id)
        tracer = instrument(worker.mesh, setup.tracing)
        if not isinstance(tracer, MeshTracer):  # a pipeline always gives a MeshTracer
            raise TypeError(f"instrument() returned {type(tracer).__name__}, not MeshTracer")
        setup.tracer = tracer
        if api_spans:
            setup.tracer_provider = _global_sdk_provider(tracing, service_name, worker.id)
        log.info(
            "tracing on: exporting spans to %s",
            ", ".join(tracing.endpoint if name == "otlp" else name for name in tracing.exporters),
        )

    metrics: WorkerMetrics | None = None
    http: WorkerHttpServer | None = None
    if metrics_port is None or metrics_config is None:
        setup.tool_metrics = _tool_figures(worker)
        return setup
    try:
        try:
            from prometheus_client import (
                GC_COLLECTOR,
                PLATFORM_COLLECTOR,
                PROCESS_COLLECTOR,
                CollectorRegistry,
            )

            from ._http import serve_worker_http
            from ._metrics import WorkerMetrics
        except ImportError as exc:
            raise ConfigError(
                f"--metrics-port needs prometheus-client and aiohttp ({exc}): "
                "install actormesh[metrics]"
            ) from exc
        registry = CollectorRegistry()
        # The process, platform and GC collectors are stateless readers: sharing
        # the default instances with a private registry is what they are for.
        for collector in (PROCESS_COLLECTOR, PLATFORM_COLLECTOR, GC_COLLECTOR):
            registry.register(collector)
        metrics = setup.metrics = WorkerMetrics(
            worker, registry, poll_interval=metrics_config.poll_interval
        )
        http = setup.http = await serve_worker_http(
            worker, metrics_port, metrics_config.host, registry=registry
        )
        await metrics.start()
    except BaseException:
        await setup.close()
        raise
    # With port 0, heartbeats must carry the port actually bound.
    worker.metrics_port = http.port
    log.info("metrics on %s/metrics, health on %s/healthz", http.url, http.url)
    return setup


def _tool_figures(worker: Worker) -> ToolMetrics | None:
    """Per-tool figures for the heartbeats of a worker that serves tools, without
    /metrics; None for a worker without tools, or without prometheus-client."""
    if not worker.spec.tools:
        return None
    try:
        from prometheus_client import CollectorRegistry

        from ._toolmetrics import ToolMetrics
    except ImportError:
        return None
    return ToolMetrics(worker, CollectorRegistry())


def _global_sdk_provider(
    config: TracingConfig, service_name: str, instance_id: str
) -> TracerProvider | None:
    """An SDK provider made the global one, unless the program already set one."""
    from opentelemetry import trace

    if not isinstance(trace.get_tracer_provider(), trace.ProxyTracerProvider):
        return None
    from ._tracing import build_tracer_provider

    provider = build_tracer_provider(config, service_name=service_name, instance_id=instance_id)
    trace.set_tracer_provider(provider)
    return provider
