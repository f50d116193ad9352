"""OtelTracer: W3C inject/extract, span kinds, parents, attributes, errors."""

from __future__ import annotations

import asyncio
import types
from collections.abc import Iterator

import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

from actormesh import AskTimeout
from actormesh.observability import (
    OtelTracer,
    TracingConfig,
    build_tracer_provider,
    instrument,
    uninstrument,
)

MAILBOX = "mesh.mbox.counter.user-42"


@pytest.fixture
def exporter() -> InMemorySpanExporter:
    return InMemorySpanExporter()


@pytest.fixture
def provider(exporter: InMemorySpanExporter) -> Iterator[TracerProvider]:
    p = TracerProvider()
    p.add_span_processor(SimpleSpanProcessor(exporter))
    yield p
    p.shutdown()


@pytest.fixture
def tracer(provider: TracerProvider) -> OtelTracer:
    return OtelTracer(provider)


def only(exporter: InMemorySpanExporter) -> ReadableSpan:
    (span,) = exporter.get_finished_spans()
    return span


def traceparent_of(span: ReadableSpan) -> str:
    ctx = span.context
    return f"00-{ctx.trace_id:032x}-{ctx.span_id:016x}-{int(ctx.trace_flags):02x}"


def test_producer_injects_its_own_context(
    tracer: OtelTracer, exporter: InMemorySpanExporter
) -> None:
    headers = {"Nats-Msg-Id": "m-1"}
    with tracer.producer(destination=MAILBOX, headers=headers, operation="tell"):
        pass
    span = only(exporter)
    assert headers["traceparent"] == traceparent_of(span)
    assert span.kind is SpanKind.PRODUCER
    assert span.parent is None
    assert span.name == "tell mesh.mbox.counter.*"
    assert dict(span.attributes or {}) == {
        "messaging.system": "nats",
        "messaging.destination.name": MAILBOX,
        "messaging.destination.template": "mesh.mbox.counter.*",
        "messaging.operation.type": "send",
        "messaging.operation.name": "tell",
        "messaging.message.id": "m-1",
        "actormesh.actor_type": "counter",
        "actormesh.key": "user-42",
    }
    assert span.status.status_code is StatusCode.UNSET


def test_sent_is_a_whole_producer_span(tracer: OtelTracer, exporter: InMemorySpanExporter) -> None:
    headers = {"Nats-Msg-Id": "m-1"}
    tracer.sent(destination=MAILBOX, headers=headers, operation="tell")
    span = only(exporter)
    assert headers["traceparent"] == traceparent_of(span)
    assert span.kind is SpanKind.PRODUCER
    assert span.name == "tell mesh.mbox.counter.*"
    assert span.end_time is not None


def test_reply_spans_name_no_inbox(tracer: OtelTracer, exporter: InMemorySpanExporter) -> None:
    headers: dict[str, str] = {}
    with tracer.producer(destination="_INBOX.abc.7", headers=headers, operation="reply"):
        pass
    span = only(exporter)
    assert span.name == "reply"
    assert span.attributes is not None
    assert span.attributes["messaging.destination.temporary"] is True
    assert "messaging.message.id" not in span.attributes
    assert "traceparent" in headers


def test_other_subjects_are_named_as_they_are(
    tracer: OtelTracer, exporter: InMemorySpanExporter
) -> None:
    with tracer.producer(destination="mesh.dlq.counter", headers={}, operation="tell"):
        pass
    assert only(exporter).name == "tell mesh.dlq.counter"


def test_consumer_continues_the_trace_and_is_current(
    tracer: OtelTracer, exporter: InMemorySpanExporter
) -> None:
    headers = {"Nats-Msg-Id": "m-2", "tracestate": "vendor=abc"}
    with tracer.producer(destination=MAILBOX, headers=headers, operation="ask"):
        pass
    (sent,) = exporter.get_finished_spans()
    assert headers["traceparent"] == traceparent_of(sent)
    headers["tracestate"] = "vendor=abc"  # as another system would have added
    with tracer.consumer(
        destination=MAILBOX,
        headers=headers,
        actor_type="counter",
        message_type="Inc",
        key="user-42",
        deliveries=3,
    ):
        current = trace.get_current_span()
        inner_headers: dict[str, str] = {}
        with tracer.producer(
            destination="mesh.mbox.other.k", headers=inner_headers, operation="tell"
        ):
            pass
    assert not trace.get_current_span().get_span_context().is_valid
    _, inner, processed = exporter.get_finished_spans()
    assert processed.kind is SpanKind.CONSUMER
    assert current.get_span_context() == processed.context
    assert processed.context.trace_id == sent.context.trace_id
    assert processed.parent is not None and processed.parent.span_id == sent.context.span_id
    assert processed.parent.is_remote
    assert processed.context.trace_state.get("vendor") == "abc"
    assert inner.parent is not None and inner.parent.span_id == processed.context.span_id
    assert inner_headers["traceparent"] == traceparent_of(inner)
    assert processed.name == "process mesh.mbox.counter.*"
    assert dict(processed.attributes or {}) == {
        "messaging.system": "nats",
        "messaging.destination.name": MAILBOX,
        "messaging.destination.template": "mesh.mbox.counter.*",
        "messaging.operation.type": "process",
        "messaging.operation.name": "process",
        "messaging.message.id": "m-2",
        "actormesh.actor_type": "counter",
        "actormesh.key": "user-42",
        "actormesh.message_type": "Inc",
        "messaging.nats.delivery_count": 3,
    }


def test_consumer_without_context_starts_a_trace(
    tracer: OtelTracer, exporter: InMemorySpanExporter
) -> None:
    with tracer.consumer(
        destination=MAILBOX,
        headers={"traceparent": "garbage"},
        actor_type="counter",
        message_type="Inc",
        key="k",
        deliveries=1,
    ):
        pass
    span = only(exporter)
    assert span.parent is None
    assert span.context.is_valid


async def test_each_task_sees_its_own_consumer_span(
    tracer: OtelTracer, exporter: InMemorySpanExporter
) -> None:
    seen: dict[str, int] = {}

    async def handle(key: str) -> None:
        with tracer.consumer(
            destination=f"mesh.mbox.c.{key}",
            headers={},
            actor_type="c",
            message_type="M",
            key=key,
            deliveries=1,
        ):
            await asyncio.sleep(0)  # interleave with the other handler
            seen[key] = trace.get_current_span().get_span_context().span_id

    await asyncio.gather(handle("a"), handle("b"))
    spans = {
        s.attributes["actormesh.key"]: s
        for s in exporter.get_finished_spans()
        if s.attributes is not None
    }
    assert seen == {k: s.context.span_id for k, s in spans.items()}


def test_error_marks_the_span(tracer: OtelTracer, exporter: InMemorySpanExporter) -> None:
    with tracer.producer(destination=MAILBOX, headers={}, operation="ask") as span:
        span.error(AskTimeout("counter", "user-42", 1.0))
    s = only(exporter)
    assert s.status.status_code is StatusCode.ERROR
    assert s.attributes is not None
    assert s.attributes["error.type"] == "AskTimeout"
    assert s.attributes["actormesh.error.code"] == "ask_timeout"
    assert [e.name for e in s.events] == ["exception"]


def test_an_escaping_exception_marks_the_span_once(
    tracer: OtelTracer, exporter: InMemorySpanExporter
) -> None:
    exc = ValueError("bad")

    def handle() -> None:
        with tracer.consumer(
            destination=MAILBOX,
            headers={},
            actor_type="counter",
            message_type="Inc",
            key="k",
            deliveries=1,
        ) as span:
            span.error(exc)  # the worker does this, then re-raises
            raise exc

    with pytest.raises(ValueError, match="bad"):
        handle()
    s = only(exporter)
    assert s.status.status_code is StatusCode.ERROR
    assert len(s.events) == 1
    assert not trace.get_current_span().get_span_context().is_valid


def test_cancellation_is_not_a_failure(tracer: OtelTracer, exporter: InMemorySpanExporter) -> None:
    with (
        pytest.raises(asyncio.CancelledError),
        tracer.consumer(
            destination=MAILBOX,
            headers={},
            actor_type="counter",
            message_type="Inc",
            key="k",
            deliveries=1,
        ),
    ):
        raise asyncio.CancelledError
    s = only(exporter)
    assert s.status.status_code is StatusCode.UNSET
    assert s.end_time is not None


def test_unsampled_traces_still_propagate(exporter: InMemorySpanExporter) -> None:
    config = TracingConfig(exporters=("otlp",), sampler="always_off")
    provider = build_tracer_provider(config, exporters=[exporter])
    headers: dict[str, str] = {}
    with OtelTracer(provider).producer(destination=MAILBOX, headers=headers, operation="tell"):
        pass
    provider.shutdown()
    assert exporter.get_finished_spans() == ()
    assert int(headers["traceparent"][-2:], 16) & 0x01 == 0  # the sampled flag is off


def test_the_global_provider_by_default() -> None:
    if not isinstance(trace.get_tracer_provider(), trace.ProxyTracerProvider):
        pytest.skip("another test installed a global TracerProvider")
    # Nothing installed globally: spans are no-ops, nothing is injected.
    headers: dict[str, str] = {}
    with OtelTracer().producer(destination=MAILBOX, headers=headers, operation="tell") as s:
        s.error(RuntimeError("ignored"))
    assert "traceparent" not in headers


def test_instrument_sets_and_clears_the_mesh_tracer(provider: TracerProvider) -> None:
    mesh = types.SimpleNamespace(tracer=None)
    tracer = instrument(mesh, provider)  # type: ignore[arg-type]
    assert mesh.tracer is tracer
    uninstrument(mesh)  # type: ignore[arg-type]
    assert mesh.tracer is None


@pytest.mark.parametrize(
    ("env", "name"),
    [
        ({}, "fallback"),
        (
            {
                "OTEL_SERVICE_NAME": "explicit",
                "OTEL_RESOURCE_ATTRIBUTES": "service.name=from-attrs",
            },
            "explicit",
        ),
    ],
)
def test_service_name_precedence(
    env: dict[str, str], name: str, exporter: InMemorySpanExporter
) -> None:
    config = TracingConfig.from_env({"OTEL_TRACES_EXPORTER": "console", **env})
    provider = build_tracer_provider(config, service_name="fallback", exporters=[exporter])
    try:
        assert provider.resource.attributes["service.name"] == name
    finally:
        provider.shutdown()


def test_unsampled_traces_propagate_without_spans() -> None:
    """Under head sampling, unsampled messages cost no span but keep the trace id."""
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
    from opentelemetry.sdk.trace.sampling import ALWAYS_OFF, ParentBased

    exporter = InMemorySpanExporter()
    provider = TracerProvider(sampler=ParentBased(ALWAYS_OFF))
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracer = OtelTracer(provider)
    sent: dict[str, str] = {}
    with tracer.producer(destination=MAILBOX, headers=sent, operation="tell"):
        pass
    version, trace_id, span_id, flags = sent["traceparent"].split("-")
    assert (version, flags) == ("00", "00")
    assert int(trace_id, 16) and int(span_id, 16)
    # The worker continues the unsampled trace: its own sends carry the same trace id.
    child: dict[str, str] = {}
    with (
        tracer.consumer(
            destination=MAILBOX,
            headers=sent,
            actor_type="counter",
            message_type="Inc",
            key="k",
            deliveries=1,
        ),
        tracer.producer(destination=MAILBOX, headers=child, operation="ask"),
    ):
        pass
    assert child["traceparent"].split("-")[1] == trace_id
    assert child["traceparent"].split("-")[2] != span_id
    assert child["traceparent"].endswith("-00")
    assert exporter.get_finished_spans() == ()
    # A sampled parent is still traced in full.
    sampled = {"traceparent": f"00-{trace_id}-{span_id}-01"}
    with tracer.consumer(
        destination=MAILBOX,
        headers=sampled,
        actor_type="counter",
        message_type="Inc",
        key="k",
        deliveries=1,
    ):
        pass
    (span,) = exporter.get_finished_spans()
    assert format(span.context.trace_id, "032x") == trace_id
    assert span.attributes is not None and span.attributes["actormesh.key"] == "k"
