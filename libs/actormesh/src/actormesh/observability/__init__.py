"""Observability for actormesh: OpenTelemetry traces, Prometheus metrics, health, log ids.

Tracing is opt-in per `Mesh`::

    mesh = await Mesh.connect(url)
    tracing = tracing_from_env(os.environ)   # None when OTEL_* configure no exporter
    if tracing is not None:
        instrument(mesh, tracing)            # actormesh's own spans, OTLP export
    ...
    await tracing.aclose()                   # export what is left

`instrument(mesh, provider)` uses an OpenTelemetry SDK TracerProvider instead
(the global one when None), at the SDK's cost per span.

`actormesh worker` does it all from the environment and `--metrics-port`
(`instrument_worker`). Names load lazily: importing this package costs nothing
until a name is used, and each needs only its own optional dependency
(`actormesh[otel]` for tracing, `actormesh[metrics]` for metrics and HTTP).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ._config import MetricsConfig, ObservabilityError, TracingConfig
    from ._http import WorkerHttpServer, serve_worker_http
    from ._instrument import instrument, uninstrument
    from ._logs import install_log_enricher, trace_log_fields, uninstall_log_enricher
    from ._metrics import WorkerMetrics
    from ._native import MeshTracer
    from ._pipeline import PipelineStats, TracingPipeline, tracing_from_env
    from ._setup import WorkerInstrumentation, instrument_worker
    from ._tracing import OtelTracer, build_tracer_provider

__all__ = [
    "MeshTracer",
    "MetricsConfig",
    "ObservabilityError",
    "OtelTracer",
    "PipelineStats",
    "TracingConfig",
    "TracingPipeline",
    "WorkerHttpServer",
    "WorkerInstrumentation",
    "WorkerMetrics",
    "build_tracer_provider",
    "install_log_enricher",
    "instrument",
    "instrument_worker",
    "serve_worker_http",
    "trace_log_fields",
    "tracing_from_env",
    "uninstall_log_enricher",
    "uninstrument",
]

_WHERE = {
    "MetricsConfig": "._config",
    "ObservabilityError": "._config",
    "TracingConfig": "._config",
    "WorkerHttpServer": "._http",
    "serve_worker_http": "._http",
    "install_log_enricher": "._logs",
    "trace_log_fields": "._logs",
    "uninstall_log_enricher": "._logs",
    "WorkerMetrics": "._metrics",
    "WorkerInstrumentation": "._setup",
    "instrument_worker": "._setup",
    "instrument": "._instrument",
    "uninstrument": "._instrument",
    "MeshTracer": "._native",
    "PipelineStats": "._pipeline",
    "TracingPipeline": "._pipeline",
    "tracing_from_env": "._pipeline",
    "OtelTracer": "._tracing",
    "build_tracer_provider": "._tracing",
}


def __getattr__(name: str) -> Any:
    module = _WHERE.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(module, __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
