"""serve_worker_http: /metrics and /healthz over real HTTP, on a worker with a stub broker."""

from __future__ import annotations

import socket

import aiohttp
import pytest
from prometheus_client import CollectorRegistry

from actormesh import ConfigError, Worker
from actormesh.observability import ObservabilityError, WorkerMetrics, serve_worker_http
from tests.unit.observability._obs_stubs import StubNats, Work, fire


async def test_metrics_and_health_on_a_free_port(worker: Worker, nc: StubNats) -> None:
    registry = CollectorRegistry()
    metrics = WorkerMetrics(worker, registry)
    async with (
        await serve_worker_http(worker, 0, registry=registry) as server,
        aiohttp.ClientSession() as http,
    ):
        assert server.port > 0
        assert server.url == f"http://127.0.0.1:{server.port}"
        fire(worker, "handled", obj=Work(), seconds=0.001)
        async with http.get(f"{server.url}/metrics") as resp:
            assert resp.status == 200
            assert resp.headers["Content-Type"].startswith("text/plain")
            text = await resp.text()
        assert (
            'actormesh_messages_total{actor_type="shop",message_type="Work",outcome="handled"} 1.0'
        ) in text

        async with http.get(
            f"{server.url}/metrics", headers={"Accept": "application/openmetrics-text"}
        ) as resp:
            assert resp.headers["Content-Type"].startswith("application/openmetrics-text")
            assert (await resp.text()).endswith("# EOF\n")

        # Not started yet: degraded, which still answers 200.
        async with http.get(f"{server.url}/healthz") as resp:
            assert resp.status == 200
            assert resp.headers["Content-Type"].startswith("application/json")
            body = await resp.json()
        assert body["status"] == "degraded"
        assert body["worker"] == worker.id
        assert body["actor_type"] == "shop"

        nc.is_connected = False
        async with http.get(f"{server.url}/healthz") as resp:
            assert resp.status == 503
            body = await resp.json()
        assert body["status"] == "unhealthy"
        assert {c["name"]: c["status"] for c in body["components"]}["broker"] == "unhealthy"
    await metrics.close()


async def test_without_a_registry_it_brings_its_own(worker: Worker) -> None:
    server = await serve_worker_http(worker, 0)
    try:
        assert len(worker.interceptors) == 1
        async with aiohttp.ClientSession() as http, http.get(f"{server.url}/metrics") as resp:
            assert "actormesh_in_flight_messages" in await resp.text()
    finally:
        await server.close()
    assert worker.interceptors == ()


async def test_a_taken_port_is_an_observability_error(worker: Worker) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(ObservabilityError, match=f"127.0.0.1:{port}"):
            await serve_worker_http(worker, port)
    assert worker.interceptors == ()  # nothing left behind


async def test_a_port_out_of_range_is_a_config_error(worker: Worker) -> None:
    with pytest.raises(ConfigError, match="not a TCP port"):
        await serve_worker_http(worker, 70000)
