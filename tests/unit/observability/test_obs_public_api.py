"""The public names of actormesh.observability, and what importing things costs."""

from __future__ import annotations

import subprocess
import sys

import pytest

import actormesh.observability as obs

PUBLIC = [
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


def test_public_names_are_pinned() -> None:
    assert sorted(obs.__all__) == PUBLIC
    assert dir(obs) == PUBLIC
    for name in PUBLIC:
        assert getattr(obs, name) is not None


def test_unknown_names_raise_attribute_error() -> None:
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        _ = obs.nope


def test_importing_the_package_and_the_cli_stays_light() -> None:
    # `actormesh tell` imports the CLI; a worker without OTEL_* or --metrics-port
    # imports the package and instrument_worker: none of that may load the extras
    # (beyond what `import actormesh` loads anyway: nats-py imports aiohttp).
    code = (
        "import sys, actormesh; before = set(sys.modules); "
        "import actormesh._cli, actormesh.observability as o; "
        "o.instrument_worker; o.TracingConfig; "
        "print(sorted({m.split('.')[0] for m in set(sys.modules) - before} & "
        "{'opentelemetry', 'aiohttp', 'prometheus_client', 'google'}))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
