"""TracingPipeline (batching, queue bounds, failures) and the OTLP/HTTP sender."""

from __future__ import annotations

import gzip
import json
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from actormesh import ConfigError
from actormesh.observability import MeshTracer, TracingConfig, TracingPipeline, tracing_from_env
from actormesh.observability._otlp import encode_request, resource_scope, string_field
from actormesh.observability._sender import ExportFailed, HttpSender


def span_bytes(n: int) -> bytes:
    """A minimal encoded span entry: name only (enough for counting)."""
    name = f"s{n}".encode()
    body = b"\x2a" + bytes([len(name)]) + name
    return b"\x12" + bytes([len(body)]) + body


def wait_until(check: Callable[[], bool], what: str, within: float = 5.0) -> None:
    deadline = time.monotonic() + within
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"never happened: {what}")
        time.sleep(0.01)


def make(exporter: Callable[[Sequence[bytes]], None], **config: Any) -> TracingPipeline:
    return TracingPipeline(TracingConfig(exporters=("otlp",), **config), exporters=[exporter])


def test_a_full_batch_goes_at_once_and_the_rest_on_flush() -> None:
    batches: list[int] = []
    pipeline = make(lambda b: batches.append(len(b)), max_export_batch_size=10)
    try:
        for n in range(25):
            pipeline.record(span_bytes(n))
        # The schedule delay is 5 s: full batches must not wait for it.
        wait_until(lambda: sum(batches) >= 20, "two full batches exported")
        assert batches[:2] == [10, 10]
        assert pipeline.force_flush(5.0)
        assert batches == [10, 10, 5]
        assert pipeline.stats().exported == 25
    finally:
        pipeline.shutdown()


def test_the_schedule_delay_exports_a_partial_batch() -> None:
    batches: list[int] = []
    pipeline = make(lambda b: batches.append(len(b)), schedule_delay_ms=50)
    try:
        pipeline.record(span_bytes(1))
        wait_until(lambda: batches == [1], "the lone span exported after the delay")
    finally:
        pipeline.shutdown()


def test_a_full_queue_drops_and_counts(caplog: pytest.LogCaptureFixture) -> None:
    release = threading.Event()
    pipeline = make(lambda b: release.wait(5), max_export_batch_size=5, max_queue_size=5)
    try:
        for n in range(5):
            pipeline.record(span_bytes(n))
        wait_until(lambda: pipeline.stats().queued == 0, "the exporter took the first batch")
        for n in range(12):  # the exporter is stuck: 5 fit in the queue, 7 do not
            pipeline.record(span_bytes(n))
        stats = pipeline.stats()
        assert (stats.queued, stats.dropped) == (5, 7)
        assert "span queue full (5)" in caplog.text
        release.set()
        assert pipeline.force_flush(5.0)
        assert pipeline.stats().exported == 10
    finally:
        release.set()
        pipeline.shutdown()


def test_a_failing_exporter_is_counted_and_export_goes_on(
    caplog: pytest.LogCaptureFixture,
) -> None:
    calls: list[int] = []

    def flaky(batch: Sequence[bytes]) -> None:
        calls.append(len(batch))
        if len(calls) == 1:
            raise ExportFailed("HTTP 400: nope", retryable=False)
        if len(calls) == 2:
            raise RuntimeError("bug in an exporter")

    pipeline = make(flaky, max_export_batch_size=2)
    try:
        for n in range(6):
            pipeline.record(span_bytes(n))
        assert pipeline.force_flush(5.0)
        assert calls == [2, 2, 2]
        stats = pipeline.stats()
        assert (stats.exported, stats.failed) == (2, 4)
        assert "2 spans not exported: HTTP 400: nope" in caplog.text
        assert "span exporter failed" in caplog.text
    finally:
        pipeline.shutdown()


def test_shutdown_exports_what_is_left_then_drops(caplog: pytest.LogCaptureFixture) -> None:
    batches: list[int] = []
    pipeline = make(lambda b: batches.append(len(b)))
    for n in range(3):
        pipeline.record(span_bytes(n))
    pipeline.shutdown()
    assert batches == [3]
    pipeline.record(span_bytes(9))
    assert pipeline.stats().dropped == 1
    assert "after the tracing pipeline was shut down" in caplog.text
    pipeline.shutdown()  # idempotent


def test_the_console_exporter_writes_json_lines_to_stderr(
    capsys: pytest.CaptureFixture[str],
) -> None:
    pipeline = TracingPipeline(TracingConfig(exporters=("console",)), service_name="svc")
    tracer = MeshTracer(pipeline)
    with tracer.producer(destination="am.mbox.counter.k1", headers={}, operation="tell"):
        pass
    pipeline.shutdown()
    out = capsys.readouterr()
    assert out.out == ""
    (line,) = out.err.splitlines()
    span = json.loads(line)
    assert span["name"] == "tell am.mbox.counter.*"
    assert span["kind"] == "PRODUCER"
    assert span["attributes"]["actormesh.key"] == "k1"


def test_tracing_from_env() -> None:
    assert tracing_from_env({}) is None
    assert tracing_from_env({"OTEL_TRACES_EXPORTER": "none"}) is None
    pipeline = tracing_from_env(
        {
            "OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:9",
            "OTEL_RESOURCE_ATTRIBUTES": "service.name=from-attrs,team=core",
            "OTEL_TRACES_SAMPLER": "parentbased_traceidratio",
            "OTEL_TRACES_SAMPLER_ARG": "0.5",
        },
        service_name="fallback",
        instance_id="w-1",
    )
    assert pipeline is not None
    try:
        assert pipeline.resource["service.name"] == "from-attrs"
        assert pipeline.resource["team"] == "core"
        assert pipeline.resource["service.instance.id"] == "w-1"
        assert pipeline.resource["telemetry.sdk.language"] == "python"
        assert pipeline.sampler.parent_based
        assert pipeline.sampler.bound == 1 << 63
    finally:
        pipeline.shutdown(timeout=1.0)


def test_a_bad_endpoint_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="not an http"):
        TracingPipeline(TracingConfig(exporters=("otlp",), endpoint="localhost:4318"))


# -- the OTLP/HTTP sender against a real HTTP server -----------------------------------


class Receiver:
    """An HTTP server answering with the statuses given, one per request."""

    def __init__(self, statuses: list[int], headers: dict[str, str] | None = None) -> None:
        self.statuses = statuses
        self.extra = headers or {}
        self.requests: list[tuple[dict[str, str], bytes]] = []
        #: The client port of each request: one port, one connection.
        self.ports: list[int] = []
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                receiver.requests.append((dict(self.headers), body))
                receiver.ports.append(self.client_address[1])
                status = receiver.statuses.pop(0) if receiver.statuses else 200
                self.send_response(status)
                for key, value in receiver.extra.items():
                    self.send_header(key, value)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/v1/traces"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receiver_factory() -> Iterator[Callable[..., Receiver]]:
    made: list[Receiver] = []

    def factory(statuses: list[int], headers: dict[str, str] | None = None) -> Receiver:
        made.append(Receiver(statuses, headers))
        return made[-1]

    yield factory
    for receiver in made:
        receiver.close()


def test_sender_posts_protobuf_with_headers_on_one_connection(
    receiver_factory: Callable[..., Receiver],
) -> None:
    receiver = receiver_factory([])
    sender = HttpSender(receiver.url, headers={"authorization": "Bearer t"})
    try:
        sender.send(b"one")
        sender.send(b"two")
    finally:
        sender.close()
    (h1, b1), (_, b2) = receiver.requests
    assert (b1, b2) == (b"one", b"two")
    assert len(set(receiver.ports)) == 1
    assert h1["Content-Type"] == "application/x-protobuf"
    assert h1["authorization"] == "Bearer t"
    assert h1["User-Agent"].startswith("actormesh-OTLP-Exporter-Python/")


def test_sender_retries_what_the_spec_says_is_retryable(
    receiver_factory: Callable[..., Receiver],
) -> None:
    receiver = receiver_factory([503, 429], {"Retry-After": "0"})
    sender = HttpSender(receiver.url, timeout=5.0)
    try:
        sender.send(b"payload")
    finally:
        sender.close()
    assert [body for _, body in receiver.requests] == [b"payload"] * 3


def test_sender_gives_up_on_a_refusal(receiver_factory: Callable[..., Receiver]) -> None:
    receiver = receiver_factory([400])
    sender = HttpSender(receiver.url)
    try:
        with pytest.raises(ExportFailed, match="HTTP 400") as info:
            sender.send(b"payload")
    finally:
        sender.close()
    assert not info.value.retryable
    assert len(receiver.requests) == 1


def test_sender_gives_up_on_an_unreachable_collector_within_its_timeout() -> None:
    sender = HttpSender("http://127.0.0.1:9/v1/traces", timeout=0.3)
    started = time.monotonic()
    with pytest.raises(ExportFailed) as info:
        sender.send(b"payload")
    assert info.value.retryable
    assert time.monotonic() - started < 5.0


def test_sender_compresses_with_gzip(receiver_factory: Callable[..., Receiver]) -> None:
    receiver = receiver_factory([])
    sender = HttpSender(receiver.url, compression="gzip")
    try:
        sender.send(b"x" * 1000)
    finally:
        sender.close()
    ((headers, body),) = receiver.requests
    assert headers["Content-Encoding"] == "gzip"
    assert gzip.decompress(body) == b"x" * 1000


def test_pipeline_exports_over_http_end_to_end(
    receiver_factory: Callable[..., Receiver],
) -> None:
    receiver = receiver_factory([])
    pipeline = TracingPipeline(
        TracingConfig(exporters=("otlp",), endpoint=receiver.url), service_name="svc"
    )
    tracer = MeshTracer(pipeline)
    for _ in range(3):
        with tracer.producer(destination="am.mbox.counter.k1", headers={}, operation="tell"):
            pass
    pipeline.shutdown()
    ((_, body),) = receiver.requests
    req = ExportTraceServiceRequest()
    req.ParseFromString(body)
    assert len(req.resource_spans[0].scope_spans[0].spans) == 3
    assert pipeline.stats().exported == 3


@pytest.mark.parametrize("wrap", [list, iter], ids=["list", "iterator"])
def test_an_export_request_holds_every_span(wrap: Callable[[list[bytes]], Any]) -> None:
    # A span entry: the ScopeSpans.spans tag and length around a Span with a name.
    spans = [b"\x12" + bytes([len(name) + 2]) + string_field(b"\x2a", name) for name in "abc"]
    head = resource_scope({"service.name": "svc"}, "actormesh", "1.0")
    req = ExportTraceServiceRequest()
    req.ParseFromString(encode_request(head, wrap(spans)))
    (rs,) = req.resource_spans
    assert rs.resource.attributes[0].value.string_value == "svc"
    assert [s.name for s in rs.scope_spans[0].spans] == ["a", "b", "c"]
