"""Observability against a real nats-server and real worker processes.

Worker processes export their spans the production way: OTLP over
http/protobuf, configured only by OTEL_* variables, to a small aiohttp
collector in the test that decodes the protobuf requests. Nothing test-only
runs in the workers.
"""

from __future__ import annotations

import asyncio
import contextlib
import gzip
import json
import os
import signal
import sys
import time
import zlib
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import aiohttp
import msgspec
import pytest
from aiohttp import web
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.common.v1.common_pb2 import AnyValue
from opentelemetry.proto.trace.v1.trace_pb2 import Span as PbSpan
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind
from prometheus_client.parser import text_string_to_metric_families

from actormesh import Actor, Context, Heartbeat, Mesh, Message, Worker
from actormesh._mailbox import ensure_mailbox
from actormesh.observability import TracingConfig, TracingPipeline, WorkerMetrics, instrument
from actormesh.testing import NatsServer
from tests.actors_tracing import Meter, Work

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parent.parent.parent
T = TypeVar("T")


# -- helpers ----------------------------------------------------------------------------


async def eventually(
    probe: Callable[[], Awaitable[T | None]], *, what: str, within: float = 30.0
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


@dataclass
class CollectedSpan:
    service: str
    name: str
    kind: int
    trace_id: str
    span_id: str
    parent_span_id: str
    attributes: dict[str, Any]
    status_code: int


def _value(v: AnyValue) -> Any:
    which = v.WhichOneof("value")
    return getattr(v, which) if which else None


@dataclass
class Collector:
    """An OTLP/HTTP trace receiver: POST /v1/traces with protobuf bodies."""

    url: str = ""
    spans: list[CollectedSpan] = field(default_factory=list)
    requests: int = 0

    async def handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        encoding = request.headers.get("Content-Encoding", "")
        if encoding == "gzip":
            body = gzip.decompress(body)
        elif encoding == "deflate":
            body = zlib.decompress(body)
        req = ExportTraceServiceRequest()
        req.ParseFromString(body)
        self.requests += 1
        for rs in req.resource_spans:
            res = {kv.key: _value(kv.value) for kv in rs.resource.attributes}
            for ss in rs.scope_spans:
                for s in ss.spans:
                    self.spans.append(
                        CollectedSpan(
                            service=str(res.get("service.name", "")),
                            name=s.name,
                            kind=s.kind,
                            trace_id=s.trace_id.hex(),
                            span_id=s.span_id.hex(),
                            parent_span_id=s.parent_span_id.hex(),
                            attributes={kv.key: _value(kv.value) for kv in s.attributes},
                            status_code=s.status.code,
                        )
                    )
        return web.Response(
            body=ExportTraceServiceResponse().SerializeToString(),
            content_type="application/x-protobuf",
        )


@contextlib.asynccontextmanager
async def otlp_collector() -> AsyncIterator[Collector]:
    collector = Collector()
    app = web.Application()
    app.router.add_post("/v1/traces", collector.handle)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = next(a[1] for a in runner.addresses if isinstance(a, tuple))
    collector.url = f"http://127.0.0.1:{port}"
    try:
        yield collector
    finally:
        await runner.cleanup()


def _clean_env(extra: dict[str, str]) -> dict[str, str]:
    # The developer's shell may carry OTEL_* settings; the test decides them.
    env = {
        k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "ACTORMESH_", "NATS_URL"))
    }
    path = env.get("PYTHONPATH", "")
    env["PYTHONPATH"] = str(ROOT) + (os.pathsep + path if path else "")
    env.update(extra)
    return env


@dataclass
class WorkerProcess:
    worker_id: str
    proc: asyncio.subprocess.Process
    log_path: Path

    def log_lines(self) -> list[str]:
        return self.log_path.read_text(errors="replace").splitlines()


@contextlib.asynccontextmanager
async def worker_processes(
    url: str,
    prefix: str,
    targets: list[str],
    tmp_path: Path,
    *,
    env: dict[str, str] | None = None,
    args: tuple[str, ...] = (),
) -> AsyncIterator[dict[str, WorkerProcess]]:
    """Start `actormesh worker` processes; stop them with SIGTERM (a graceful drain)."""
    started: dict[str, WorkerProcess] = {}
    try:
        for target in targets:
            name = target.rsplit(":", 1)[1].lower()
            worker_id = f"{name}-{prefix}"
            log_path = tmp_path / f"{name}.log"
            with log_path.open("wb") as log_file:
                proc = await asyncio.create_subprocess_exec(
                    sys.executable,
                    "-m",
                    "actormesh",
                    "--nats-url",
                    url,
                    "--prefix",
                    prefix,
                    "worker",
                    target,
                    "--worker-id",
                    worker_id,
                    "--drain-grace",
                    "5",
                    *args,
                    env=_clean_env(env or {}),
                    stdout=asyncio.subprocess.DEVNULL,
                    stderr=log_file,
                )
            started[name] = WorkerProcess(worker_id, proc, log_path)
        yield started
    finally:
        for wp in started.values():
            if wp.proc.returncode is None:
                wp.proc.send_signal(signal.SIGTERM)
        for wp in started.values():
            try:
                await asyncio.wait_for(wp.proc.wait(), 20)
            except TimeoutError:
                wp.proc.kill()
                await wp.proc.wait()


async def heartbeats(mesh: Mesh, want: set[str]) -> dict[str, Heartbeat]:
    """Wait for a running heartbeat from each worker id in `want`."""
    seen: dict[str, Heartbeat] = {}
    done = asyncio.Event()
    decoder = msgspec.json.Decoder(Heartbeat)

    async def on_hb(msg: Any) -> None:
        hb = decoder.decode(msg.data)
        if hb.worker in want and hb.status == "running":
            seen[hb.worker] = hb
            if want <= seen.keys():
                done.set()

    sub = await mesh.nc.subscribe(mesh.subjects.heartbeat_all, cb=on_hb)
    try:
        await asyncio.wait_for(done.wait(), 60)
    finally:
        await sub.unsubscribe()
    return seen


async def scrape(
    session: aiohttp.ClientSession, port: int
) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    async with session.get(f"http://127.0.0.1:{port}/metrics") as resp:
        assert resp.status == 200
        text = await resp.text()
    out: dict[tuple[str, tuple[tuple[str, str], ...]], float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            out[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return out


def sample(
    metrics: dict[tuple[str, tuple[tuple[str, str], ...]], float], name: str, **labels: str
) -> float | None:
    return metrics.get((name, tuple(sorted(labels.items()))))


# -- traces -----------------------------------------------------------------------------


async def test_one_trace_across_three_worker_processes(
    nats_url: str, mesh_prefix: str, tmp_path: Path
) -> None:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    async with otlp_collector() as collector:
        env = {
            "OTEL_TRACES_EXPORTER": "otlp",
            "OTEL_EXPORTER_OTLP_ENDPOINT": collector.url,
            "OTEL_BSP_SCHEDULE_DELAY": "50",
            "ACTORMESH_LOG_FORMAT": "json",
        }
        targets = [
            "tests.actors_tracing:Alpha",
            "tests.actors_tracing:Beta",
            "tests.actors_tracing:Gamma",
        ]
        mesh = await Mesh.connect(nats_url, prefix=mesh_prefix, name="trace-test")
        try:
            async with worker_processes(nats_url, mesh_prefix, targets, tmp_path, env=env) as procs:
                await heartbeats(mesh, {p.worker_id for p in procs.values()})
                instrument(mesh, provider)
                reply = await mesh.ref("alpha", "k1").ask(b'{"type":"Hop","note":"n1"}', timeout=30)
                assert reply == ["alpha", "beta", "gamma"]

                # 3 process + 2 nested asks + 3 replies, from three processes.
                def worker_spans() -> list[CollectedSpan] | None:
                    return collector.spans if len(collector.spans) >= 8 else None

                async def probe() -> list[CollectedSpan] | None:
                    return worker_spans()

                remote = await eventually(probe, what="8 spans exported by the workers")
                gamma_log = procs["gamma"].log_lines()
        finally:
            await mesh.close()

    (root,) = exporter.get_finished_spans()
    assert root.kind is SpanKind.PRODUCER
    assert root.parent is None
    trace_id = f"{root.context.trace_id:032x}"
    root_id = f"{root.context.span_id:016x}"
    assert len(remote) == 8
    assert {s.trace_id for s in remote} == {trace_id}

    by_service: dict[str, list[CollectedSpan]] = {}
    for s in remote:
        by_service.setdefault(s.service, []).append(s)
    assert set(by_service) == {"actormesh-alpha", "actormesh-beta", "actormesh-gamma"}

    def one(service: str, kind: int, op: str) -> CollectedSpan:
        (found,) = [
            s
            for s in by_service[service]
            if s.kind == kind and s.attributes["messaging.operation.name"] == op
        ]
        return found

    consumer, producer = PbSpan.SPAN_KIND_CONSUMER, PbSpan.SPAN_KIND_PRODUCER
    a_proc = one("actormesh-alpha", consumer, "process")
    a_ask = one("actormesh-alpha", producer, "ask")
    a_reply = one("actormesh-alpha", producer, "reply")
    b_proc = one("actormesh-beta", consumer, "process")
    b_ask = one("actormesh-beta", producer, "ask")
    b_reply = one("actormesh-beta", producer, "reply")
    g_proc = one("actormesh-gamma", consumer, "process")
    g_reply = one("actormesh-gamma", producer, "reply")
    # The chain of parents: test ask → alpha → its ask → beta → its ask → gamma.
    assert a_proc.parent_span_id == root_id
    assert a_ask.parent_span_id == a_proc.span_id
    assert b_proc.parent_span_id == a_ask.span_id
    assert b_ask.parent_span_id == b_proc.span_id
    assert g_proc.parent_span_id == b_ask.span_id
    for reply_span, proc_span in ((a_reply, a_proc), (b_reply, b_proc), (g_reply, g_proc)):
        assert reply_span.parent_span_id == proc_span.span_id
        assert reply_span.name == "reply"

    assert g_proc.name == f"process {mesh_prefix}.mbox.gamma.*"
    assert g_proc.attributes["messaging.system"] == "nats"
    assert g_proc.attributes["messaging.operation.type"] == "process"
    assert g_proc.attributes["messaging.destination.name"] == f"{mesh_prefix}.mbox.gamma.k1"
    assert g_proc.attributes["actormesh.actor_type"] == "gamma"
    assert g_proc.attributes["actormesh.key"] == "k1"
    assert g_proc.attributes["actormesh.message_type"] == "Hop"
    assert g_proc.attributes["messaging.nats.delivery_count"] == 1
    # On one server, asks carry no Nats-Msg-Id unless the caller gives one (a retry is
    # a new message); on a cluster they do (test_cluster_replication).
    assert "messaging.message.id" not in g_proc.attributes
    assert b_ask.attributes["messaging.operation.type"] == "send"
    assert b_ask.attributes["messaging.destination.name"] == f"{mesh_prefix}.mbox.gamma.k1"
    assert "messaging.message.id" not in b_ask.attributes

    # The handler's log line carries the ids of the span it ran in.
    (line,) = [json.loads(x) for x in gamma_log if '"gamma reached: n1"' in x]
    assert line["trace_id"] == trace_id
    assert line["span_id"] == g_proc.span_id


# An in-process check that tell, ask and reply carry the context over real NATS headers.


class Ping(Message):
    pass


class Seen(Message):
    pass


class Probe(Actor):
    actor_type = "probe"
    #: Shared on purpose: the test reads what the handlers saw.
    headers: list[dict[str, str]] = []

    async def ping(self, msg: Ping, ctx: Context) -> str:
        Probe.headers.append(dict(ctx.headers))
        return "pong"

    async def seen(self, msg: Seen, ctx: Context) -> None:
        Probe.headers.append(dict(ctx.headers))


async def test_tell_and_ask_carry_traceparent_in_process(nats_url: str, mesh_prefix: str) -> None:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    Probe.headers = []
    sender = await Mesh.connect(nats_url, prefix=mesh_prefix)
    server = await Mesh.connect(nats_url, prefix=mesh_prefix)
    worker = Worker(server, Probe)
    try:
        instrument(sender, provider)
        instrument(server, provider)
        await worker.start()
        await sender.ref(Probe, "p").tell(Seen())
        assert await sender.ref(Probe, "p").ask(Ping(), timeout=10) == "pong"

        async def all_ended() -> list[Any] | None:
            spans = exporter.get_finished_spans()
            return list(spans) if len(spans) >= 5 else None

        spans = await eventually(all_ended, what="5 spans")
    finally:
        await worker.drain(0.0)
        await server.close()
        await sender.close()

    tell = next(s for s in spans if s.name.startswith("tell "))
    ask = next(s for s in spans if s.name.startswith("ask "))
    processes = [s for s in spans if s.kind is SpanKind.CONSUMER]
    reply = next(s for s in spans if s.name == "reply")
    assert len(processes) == 2
    tell_proc = next(s for s in processes if s.attributes["actormesh.message_type"] == "Seen")
    ask_proc = next(s for s in processes if s.attributes["actormesh.message_type"] == "Ping")
    assert tell_proc.parent is not None and tell_proc.parent.span_id == tell.context.span_id
    assert ask_proc.parent is not None and ask_proc.parent.span_id == ask.context.span_id
    assert reply.parent is not None and reply.parent.span_id == ask_proc.context.span_id
    assert tell.context.trace_id != ask.context.trace_id  # two independent operations
    # What the handler saw on the wire: the W3C header of the producer span.
    tell_hdrs, ask_hdrs = Probe.headers
    for hdrs, span in ((tell_hdrs, tell), (ask_hdrs, ask)):
        ctx = span.context
        assert hdrs["traceparent"] == (
            f"00-{ctx.trace_id:032x}-{ctx.span_id:016x}-{int(ctx.trace_flags):02x}"
        )


async def test_tell_many_traces_each_message_on_its_own(nats_url: str, mesh_prefix: str) -> None:
    batches: list[bytes] = []
    config = TracingConfig(exporters=("otlp",))
    pipeline = TracingPipeline(config, service_name="t", exporters=[batches.extend])
    Probe.headers = []
    sender = await Mesh.connect(nats_url, prefix=mesh_prefix)
    server = await Mesh.connect(nats_url, prefix=mesh_prefix)
    worker = Worker(server, Probe)
    try:
        instrument(sender, pipeline)
        instrument(server, pipeline)
        await worker.start()
        await sender.ref(Probe, "p").tell_many([Seen(), Seen(), Seen()])

        async def six_spans() -> list[PbSpan] | None:
            assert pipeline.force_flush(5.0)
            req = ExportTraceServiceRequest()
            req.ParseFromString(pipeline.request(batches))
            found = [s for rs in req.resource_spans for ss in rs.scope_spans for s in ss.spans]
            return found if len(found) >= 6 else None

        spans = await eventually(six_spans, what="3 producer and 3 consumer spans")
    finally:
        await worker.drain(0.0)
        await server.close()
        await sender.close()
        pipeline.shutdown()

    sent = {s.span_id: s for s in spans if s.kind == PbSpan.SPAN_KIND_PRODUCER}
    processed = [s for s in spans if s.kind == PbSpan.SPAN_KIND_CONSUMER]
    assert len(sent) == len(processed) == 3
    assert {s.name for s in sent.values()} == {f"tell {mesh_prefix}.mbox.probe.*"}
    for span in processed:
        parent = sent[span.parent_span_id]
        assert span.trace_id == parent.trace_id
    assert len({s.trace_id for s in processed}) == 3  # one trace per message
    # What the handlers saw on the wire: each its own producer span's context.
    wire = {h["traceparent"] for h in Probe.headers}
    assert wire == {f"00-{s.trace_id.hex()}-{s.span_id.hex()}-01" for s in sent.values()}


# -- metrics and health -----------------------------------------------------------------


async def test_metrics_endpoint_counts_messages(
    nats_url: str, mesh_prefix: str, tmp_path: Path
) -> None:
    mesh = await Mesh.connect(nats_url, prefix=mesh_prefix)
    try:
        async with (
            worker_processes(
                nats_url,
                mesh_prefix,
                ["tests.actors_tracing:Meter"],
                tmp_path,
                env={"ACTORMESH_METRICS_POLL_INTERVAL": "0.2"},
                args=("--metrics-port", "0"),
            ) as procs,
            aiohttp.ClientSession() as http,
        ):
            wp = procs["meter"]
            hb = (await heartbeats(mesh, {wp.worker_id}))[wp.worker_id]
            port = hb.metrics_port
            assert port > 0  # the port actually bound, not the 0 we asked for

            before = await scrape(http, port)
            assert (
                sample(
                    before,
                    "actormesh_messages_total",
                    actor_type="meter",
                    message_type="Work",
                    outcome="handled",
                )
                is None
            )
            assert (
                sample(
                    before,
                    "actormesh_worker_info",
                    actor_type="meter",
                    worker=wp.worker_id,
                    version="0.1.0",
                )
                == 1.0
            )

            ref = mesh.ref("meter", "m1")
            for _ in range(7):
                await ref.tell(b'{"type":"Work"}')
            for _ in range(2):
                await ref.tell(b'{"type":"Fail"}')

            async def settled() -> dict[Any, float] | None:
                m = await scrape(http, port)
                dead = sample(m, "actormesh_dead_letters_total", actor_type="meter")
                handled = sample(
                    m,
                    "actormesh_messages_total",
                    actor_type="meter",
                    message_type="Work",
                    outcome="handled",
                )
                return m if handled == 7 and dead == 2 else None

            m = await eventually(settled, what="7 handled and 2 dead letters on /metrics")
            assert (
                sample(
                    m,
                    "actormesh_messages_total",
                    actor_type="meter",
                    message_type="Fail",
                    outcome="failed",
                )
                == 2
            )
            assert (
                sample(
                    m,
                    "actormesh_messages_total",
                    actor_type="meter",
                    message_type="Fail",
                    outcome="dead_lettered",
                )
                == 2
            )
            assert (
                sample(
                    m,
                    "actormesh_handler_duration_seconds_count",
                    actor_type="meter",
                    message_type="Work",
                    outcome="handled",
                )
                == 7
            )
            assert sample(m, "actormesh_restarts_total", actor_type="meter") == 2
            assert sample(m, "actormesh_redeliveries_total", actor_type="meter") == 0
            assert sample(m, "actormesh_in_flight_messages", actor_type="meter") == 0
            assert sample(m, "actormesh_health_status", actor_type="meter", component="broker") == 0
            assert sample(m, "process_resident_memory_bytes") is not None

            async def polled() -> dict[Any, float] | None:
                m = await scrape(http, port)
                ok = (
                    sample(m, "actormesh_mailbox_messages", actor_type="meter") == 0
                    and sample(m, "actormesh_consumer_ack_pending_messages", actor_type="meter")
                    == 0
                )
                return m if ok else None

            await eventually(polled, what="the mailbox gauges show an empty mailbox")

            async with http.get(f"http://127.0.0.1:{port}/healthz") as resp:
                assert resp.status == 200
                report = await resp.json()
            assert report["status"] == "healthy"
            assert report["worker"] == wp.worker_id
            assert {c["name"] for c in report["components"]} >= {"broker", "consumer"}

            # The same report over the control subject.
            ctl = await mesh.nc.request(
                mesh.subjects.control(wp.worker_id), b'{"op":"health"}', timeout=5
            )
            assert json.loads(ctl.data)["health"]["status"] == "healthy"
    finally:
        await mesh.close()


async def test_mailbox_gauges_show_waiting_messages(nats_url: str, mesh_prefix: str) -> None:
    from prometheus_client import CollectorRegistry, generate_latest

    mesh = await Mesh.connect(nats_url, prefix=mesh_prefix)
    try:
        # The mailbox and its consumer, and no worker pulling: the messages wait.
        await ensure_mailbox(mesh.js, mesh.subjects, "meter", Meter.mailbox)
        worker = Worker(mesh, Meter)
        for _ in range(5):
            await mesh.ref(Meter, "w").tell(Work())
        registry = CollectorRegistry()
        metrics = WorkerMetrics(worker, registry, poll_interval=60)
        try:
            assert await metrics.poll_mailbox()
            parsed = {
                (s.name, s.labels.get("actor_type")): s.value
                for f in text_string_to_metric_families(generate_latest(registry).decode())
                for s in f.samples
            }
            assert parsed[("actormesh_mailbox_messages", "meter")] == 5
            assert parsed[("actormesh_consumer_pending_messages", "meter")] == 5
            assert parsed[("actormesh_consumer_ack_pending_messages", "meter")] == 0
            assert parsed[("actormesh_mailbox_bytes", "meter")] > 0
        finally:
            await metrics.close()
    finally:
        await mesh.close()


async def test_health_follows_the_broker(mesh_prefix: str, tmp_path: Path) -> None:
    async with NatsServer() as server, aiohttp.ClientSession() as http:
        mesh = await Mesh.connect(server.url, prefix=mesh_prefix)
        async with worker_processes(
            server.url,
            mesh_prefix,
            ["tests.actors_tracing:Meter"],
            tmp_path,
            args=("--metrics-port", "0"),
        ) as procs:
            wp = procs["meter"]
            port = (await heartbeats(mesh, {wp.worker_id}))[wp.worker_id].metrics_port
            await mesh.close()
            url = f"http://127.0.0.1:{port}/healthz"

            def health_is(code: int, status: str) -> Callable[[], Awaitable[dict[str, Any] | None]]:
                async def probe() -> dict[str, Any] | None:
                    async with http.get(url) as resp:
                        body = await resp.json()
                        return body if resp.status == code and body["status"] == status else None

                return probe

            await eventually(health_is(200, "healthy"), what="healthy with the broker up")
            await server.stop()
            down = await eventually(
                health_is(503, "unhealthy"), what="unhealthy with the broker gone"
            )
            broker = next(c for c in down["components"] if c["name"] == "broker")
            assert broker["status"] == "unhealthy"
            await server.start()
            await eventually(
                health_is(200, "healthy"), what="healthy again after a restart", within=60
            )
