"""instrument_worker: what the CLI sets up from the environment and --metrics-port."""

from __future__ import annotations

import aiohttp
import pytest

from actormesh import ConfigError, Worker
from actormesh.observability import MeshTracer, instrument_worker
from tests.unit.observability._obs_stubs import StubNats


async def test_nothing_configured_changes_nothing(worker: Worker) -> None:
    setup = await instrument_worker(worker, env={})
    assert worker.mesh.tracer is None
    assert setup.tracer_provider is None
    assert setup.metrics_port is None
    assert worker.interceptors == ()
    await setup.close()


async def test_tracing_from_the_environment(worker: Worker) -> None:
    setup = await instrument_worker(worker, env={"OTEL_TRACES_EXPORTER": "console"})
    assert isinstance(worker.mesh.tracer, MeshTracer)
    assert setup.tracer is worker.mesh.tracer
    pipeline = setup.tracing
    assert pipeline is not None
    assert pipeline.resource["service.name"] == "actormesh-shop"
    assert pipeline.resource["service.instance.id"] == worker.id
    # Without api_spans the global OpenTelemetry provider is left alone.
    assert setup.tracer_provider is None
    await setup.close()
    assert worker.mesh.tracer is None
    assert setup.tracing is None


async def test_api_spans_sets_a_global_sdk_provider_once(
    worker: Worker, monkeypatch: pytest.MonkeyPatch
) -> None:
    from opentelemetry import trace
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.util._once import Once

    # The API allows setting the global provider once per process: give this test
    # a process-fresh state, restored afterwards.
    monkeypatch.setattr(trace, "_TRACER_PROVIDER", None)
    monkeypatch.setattr(trace, "_TRACER_PROVIDER_SET_ONCE", Once())
    setup = await instrument_worker(worker, env={"OTEL_TRACES_EXPORTER": "console"}, api_spans=True)
    provider = setup.tracer_provider
    assert isinstance(provider, TracerProvider)
    assert trace.get_tracer_provider() is provider
    assert provider.resource.attributes["service.name"] == "actormesh-shop"
    # A program that set its own provider keeps it.
    again = await instrument_worker(worker, env={"OTEL_TRACES_EXPORTER": "console"}, api_spans=True)
    assert again.tracer_provider is None
    await again.close()
    await setup.close()


async def test_metrics_port_zero_serves_and_reports_the_bound_port(
    worker: Worker, nc: StubNats
) -> None:
    setup = await instrument_worker(
        worker, env={"ACTORMESH_METRICS_POLL_INTERVAL": "60"}, metrics_port=0
    )
    port = setup.metrics_port
    assert port is not None and port > 0
    # Heartbeats carry the port actually bound.
    assert worker.metrics_port == port
    assert worker.heartbeat().metrics_port == port
    async with aiohttp.ClientSession() as http:
        async with http.get(f"http://127.0.0.1:{port}/metrics") as resp:
            text = await resp.text()
        assert "actormesh_worker_info" in text
        assert "process_cpu_seconds_total" in text or "python_info" in text
        await setup.close()
        with pytest.raises(aiohttp.ClientConnectionError):
            async with http.get(f"http://127.0.0.1:{port}/metrics"):
                pass
    assert worker.interceptors == ()


async def test_bad_settings_fail_before_anything_starts(worker: Worker) -> None:
    with pytest.raises(ConfigError):
        await instrument_worker(worker, env={"OTEL_TRACES_EXPORTER": "zipkin"}, metrics_port=0)
    assert worker.mesh.tracer is None
    assert worker.interceptors == ()
