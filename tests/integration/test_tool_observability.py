"""Tool calls in traces, progress events and metrics, on a real broker.

- Nested tool calls (an agent calling tools) are one trace, with `execute_tool
  <tool>` spans carrying the OpenTelemetry GenAI attributes (an SDK
  TracerProvider with an in-memory exporter; the caller and the worker on
  separate connections).
- The caller receives the progress events of the nested calls, in order, while
  it waits.
- The per-tool metrics move: calls, errors by type, denials, approvals pending,
  durations; in Prometheus and in the worker's heartbeats.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import msgspec
import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.trace.v1.trace_pb2 import Span as PbSpan
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind
from prometheus_client import CollectorRegistry
from prometheus_client.exposition import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from actormesh import Heartbeat, Mesh, ToolDenied, ToolFailed, ToolProgress, Worker
from actormesh.observability import TracingConfig, TracingPipeline, WorkerMetrics, instrument
from actormesh.testing import running_worker
from tests.actors_tool_obs import Scout

pytestmark = pytest.mark.integration

T = TypeVar("T")


async def eventually(
    probe: Callable[[], Awaitable[T | None]], *, what: str, within: float = 20.0
) -> T:
    """Poll `probe` until it returns something; the deadline is a safety net only."""
    deadline = time.monotonic() + within
    while True:
        value = await probe()
        if value is not None:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"never happened: {what}")
        await asyncio.sleep(0.05)


async def _granted(mesh: Mesh, worker_mesh: Mesh, principal: str, tool: str) -> None:
    await mesh.tools.grants.grant(principal, tool)

    async def live() -> bool | None:
        return worker_mesh.tools.grants.allowed_now(principal, tool) or None

    await eventually(live, what=f"{principal} granted {tool} in the worker")


async def test_nested_tool_calls_are_one_trace(nats_url: str, mesh_prefix: str) -> None:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    caller = await Mesh.connect(nats_url, prefix=mesh_prefix)
    server = await Mesh.connect(nats_url, prefix=mesh_prefix)
    try:
        instrument(caller, provider)
        instrument(server, provider)
        async with running_worker(server, Scout):
            await _granted(caller, server, "planner", "scout.explore")
            await _granted(caller, server, "scout", "scout.explore")
            got = await caller.tools.call(
                "scout.explore", {"depth": 2}, principal="planner", call_id="call-top"
            )
            assert got == 3  # three calls: the caller's, and two nested ones

            async def all_ended() -> list[ReadableSpan] | None:
                spans = list(exporter.get_finished_spans())
                tools = [s for s in spans if s.name == "execute_tool scout.explore"]
                return spans if len(tools) == 6 else None

            spans = await eventually(all_ended, what="6 execute_tool spans")
    finally:
        await server.close()
        await caller.close()
        provider.shutdown()

    assert len({s.context.trace_id for s in spans}) == 1, "one trace"
    tool_spans = [s for s in spans if s.name == "execute_tool scout.explore"]
    callers = [s for s in tool_spans if s.kind is SpanKind.INTERNAL]
    workers = [s for s in tool_spans if s.kind is SpanKind.CONSUMER]
    assert len(callers) == len(workers) == 3
    by_id = {s.context.span_id: s for s in spans}
    for span in tool_spans:
        attrs = span.attributes or {}
        assert attrs["gen_ai.operation.name"] == "execute_tool"
        assert attrs["gen_ai.tool.name"] == "scout.explore"
        assert attrs["gen_ai.tool.type"] == "function"
        assert str(attrs["gen_ai.tool.description"]).startswith("Explore one level")
        assert attrs["gen_ai.tool.call.id"]
    # The caller's span and the worker's span of one call share its id.
    assert {(s.attributes or {})["gen_ai.tool.call.id"] for s in callers} == {
        (s.attributes or {})["gen_ai.tool.call.id"] for s in workers
    }
    assert "call-top" in {(s.attributes or {})["gen_ai.tool.call.id"] for s in callers}
    # The worker's span keeps the messaging attributes of a consumer span.
    assert all((s.attributes or {})["messaging.operation.type"] == "process" for s in workers)
    # The chain: caller span -> ask -> worker span -> (handler) caller span -> ...
    for worker_span in workers:
        ask = by_id[worker_span.parent.span_id]  # type: ignore[union-attr]
        assert ask.kind is SpanKind.PRODUCER and ask.name.startswith("ask ")
        call = by_id[ask.parent.span_id]  # type: ignore[union-attr]
        assert call.kind is SpanKind.INTERNAL and call.name == "execute_tool scout.explore"
        attrs = call.attributes or {}
        assert attrs["gen_ai.tool.call.id"] == (worker_span.attributes or {})["gen_ai.tool.call.id"]
    roots = [s for s in callers if s.parent is None]
    assert len(roots) == 1 and (roots[0].attributes or {})["gen_ai.tool.call.id"] == "call-top"
    nested = [s for s in callers if s.parent is not None]
    assert all(by_id[s.parent.span_id].kind is SpanKind.CONSUMER for s in nested)  # type: ignore[union-attr]


async def test_nested_tool_calls_with_the_native_tracer(nats_url: str, mesh_prefix: str) -> None:
    """The same spans from actormesh's own tracer (what `actormesh worker` uses)."""
    batches: list[bytes] = []
    pipeline = TracingPipeline(
        TracingConfig(exporters=("otlp",)), service_name="t", exporters=[batches.extend]
    )
    caller = await Mesh.connect(nats_url, prefix=mesh_prefix)
    server = await Mesh.connect(nats_url, prefix=mesh_prefix)
    try:
        instrument(caller, pipeline)
        instrument(server, pipeline)
        async with running_worker(server, Scout):
            await _granted(caller, server, "planner", "scout.explore")
            await _granted(caller, server, "scout", "scout.explore")
            assert await caller.tools.call("scout.explore", {"depth": 1}, principal="planner") == 2

            async def four() -> list[PbSpan] | None:
                assert pipeline.force_flush(5.0)
                req = ExportTraceServiceRequest()
                req.ParseFromString(pipeline.request(batches))
                found = [s for rs in req.resource_spans for ss in rs.scope_spans for s in ss.spans]
                tools = [s for s in found if s.name == "execute_tool scout.explore"]
                return found if len(tools) == 4 else None

            spans = await eventually(four, what="4 execute_tool spans")
    finally:
        await server.close()
        await caller.close()
        pipeline.shutdown()
    assert len({s.trace_id for s in spans}) == 1
    tools = [s for s in spans if s.name == "execute_tool scout.explore"]
    kinds = sorted(s.kind for s in tools)
    assert kinds == sorted([PbSpan.SPAN_KIND_INTERNAL] * 2 + [PbSpan.SPAN_KIND_CONSUMER] * 2)
    for span in tools:
        attrs = {kv.key: kv.value.string_value for kv in span.attributes}
        assert attrs["gen_ai.operation.name"] == "execute_tool"
        assert attrs["gen_ai.tool.name"] == "scout.explore"
        assert attrs["gen_ai.tool.call.id"]


async def test_progress_of_nested_calls_reaches_the_caller_in_order(mesh: Mesh) -> None:
    seen: list[ToolProgress] = []
    async with running_worker(mesh, Scout):
        await _granted(mesh, mesh, "planner", "scout.explore")
        await _granted(mesh, mesh, "scout", "scout.explore")
        got = await mesh.tools.call(
            "scout.explore", {"depth": 2}, principal="planner", on_progress=seen.append
        )
        assert got == 3
        # Delivered before the call returned: nothing to wait for.
        assert [(e.data["level"], e.data["at"]) for e in seen] == [
            (2, "start"), (1, "start"), (0, "start"), (0, "done"), (1, "done"), (2, "done"),
        ]  # fmt: skip
        assert {e.tool for e in seen} == {"scout.explore"}
        assert len({e.call_id for e in seen}) == 3  # one per nested call

        # An async callback too; and a call without one gets none (and costs none).
        later: list[int] = []

        async def record(event: ToolProgress) -> None:
            await asyncio.sleep(0)
            later.append(event.data["level"])

        await mesh.tools.call(
            "scout.explore", {"depth": 1}, principal="planner", on_progress=record
        )
        assert later == [1, 0, 0, 1]
        assert await mesh.tools.call("scout.explore", {"depth": 0}, principal="planner") == 1


def _samples(registry: CollectorRegistry) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    out = {}
    for family in text_string_to_metric_families(generate_latest(registry).decode()):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


async def test_tool_metrics_move(mesh: Mesh) -> None:
    heartbeats: list[Heartbeat] = []
    decoder = msgspec.json.Decoder(Heartbeat)

    async def on_hb(msg: Any) -> None:
        heartbeats.append(decoder.decode(msg.data))

    sub = await mesh.nc.subscribe(mesh.subjects.heartbeat_all, cb=on_hb)
    registry = CollectorRegistry()
    worker = Worker(mesh, Scout)
    metrics = WorkerMetrics(worker, registry)
    await worker.start()
    try:
        await _granted(mesh, mesh, "ops", "scout.*")
        for _ in range(3):
            assert await mesh.tools.call("scout.explore", {"depth": 0}, principal="ops") == 1
        with pytest.raises(ToolFailed):
            await mesh.tools.call("scout.trip", {}, principal="ops")
        with pytest.raises(ToolDenied):
            await mesh.tools.call("scout.explore", {"depth": 0}, principal="stranger")
        mesh.tools.set_approvals_pending("scout.trip", 2)

        got = _samples(registry)
        explore, trip = (("tool", "scout.explore"),), (("tool", "scout.trip"),)
        assert got[("actormesh_tool_calls_total", explore)] == 3
        assert got[("actormesh_tool_calls_total", trip)] == 1
        assert got[("actormesh_tool_errors_total", (("error_type", "ValueError"), *trip))] == 1
        assert got[("actormesh_tool_denials_total", explore)] == 1
        assert got[("actormesh_tool_denials_total", trip)] == 0
        assert got[("actormesh_tool_duration_seconds_count", explore)] == 3
        assert got[("actormesh_tool_approvals_pending", trip)] == 2
        assert got[("actormesh_tool_approvals_pending", explore)] == 0

        # The heartbeat carries the same figures, for the supervisor's dashboard.
        async def reported() -> Heartbeat | None:
            latest = [h for h in heartbeats if h.worker == worker.id and h.tools]
            if latest and {t.tool: t.calls for t in latest[-1].tools}.get("scout.explore") == 3:
                return latest[-1]
            await worker._reporter.publish_heartbeat()
            return None

        hb = await eventually(reported, what="a heartbeat with the tool figures")
        stats = {t.tool: t for t in hb.tools}
        assert (stats["scout.explore"].calls, stats["scout.explore"].denied) == (3, 1)
        assert (stats["scout.trip"].errors, stats["scout.trip"].approvals_pending) == (1, 2)
        assert sum(stats["scout.explore"].buckets) == 3
        assert len(stats["scout.explore"].buckets) == len(stats["scout.explore"].bounds) + 1
    finally:
        await worker.drain(grace=5.0)
        await metrics.close()
        await sub.unsubscribe()
    assert worker.tool_stats is None


async def test_a_tool_worker_reports_tool_figures_without_a_metrics_port(mesh: Mesh) -> None:
    """`actormesh worker` without --metrics-port: the heartbeats still carry the
    tool figures (the dashboard's Tools panel); a worker without tools has none."""
    from actormesh.observability import instrument_worker
    from tests.actors import Recorder

    worker = Worker(mesh, Scout)
    setup = await instrument_worker(worker, env={})
    try:
        assert worker.tool_stats is not None
        assert {s.tool for s in worker.tool_stats()} == {"scout.explore", "scout.trip"}
    finally:
        await setup.close()
    assert worker.tool_stats is None
    plain = Worker(mesh, Recorder)
    async with await instrument_worker(plain, env={}):
        assert plain.tool_stats is None


async def test_tool_metrics_leave_the_other_messages_batched(mesh: Mesh) -> None:
    """An actor with state and tools (the example counter) under its tool metrics, as
    `actormesh worker` runs it: its plain messages still commit in batches, tool
    calls between them are counted and applied in order, and the total is exact."""
    from actormesh.observability._toolmetrics import ToolMetrics
    from actormesh_counter import Counter, Get, Inc

    ref = mesh.ref(Counter, "hot")
    await mesh.declare(Counter)
    await mesh.tools.grants.grant("ops", "counter.add")
    burst: list[Any] = [Inc(by=1) for _ in range(400)]
    await ref.tell_many(burst[:200])  # queued before the worker starts: they batch
    worker = Worker(mesh, Counter)
    metrics = ToolMetrics(worker, CollectorRegistry())
    await worker.start()
    try:
        await eventually(
            lambda: _ready(mesh, "ops", "counter.add"), what="the grant reached the worker"
        )
        added = await mesh.tools.call("counter.add", {"key": "hot", "by": 1000}, principal="ops")
        assert added >= 1000
        await ref.tell_many(burst[200:])
        assert await ref.ask(Get(), timeout=10) == 1400
        store = worker._handling.store
        assert store is not None
        assert store.commits < 300, "plain messages committed in batches"
        assert metrics.figures["counter.add"].calls == 1
    finally:
        await worker.drain(grace=5.0)
        metrics.close()


async def _ready(mesh: Mesh, principal: str, tool: str) -> bool | None:
    return mesh.tools.grants.allowed_now(principal, tool) or None
