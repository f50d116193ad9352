"""MeshTracer and its pipeline: spans decoded with the official OTLP protobuf classes."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator, Sequence
from typing import Any

import pytest
from opentelemetry import trace
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue
from opentelemetry.proto.trace.v1.trace_pb2 import Span as PbSpan
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.sdk.trace.sampling import TraceIdRatioBased

from actormesh import ActorMeshError, MailboxFull
from actormesh.observability import MeshTracer, TracingConfig, TracingPipeline
from tests.unit.observability._cores import CORES

MAILBOX = "am.mbox.counter.k1"


class Spans:
    """An exporter that keeps batches, and their decoding; `speedups` says which
    core the pipeline made for it records the spans (compiled or Python)."""

    def __init__(self, *, speedups: bool) -> None:
        self.speedups = speedups
        self.batches: list[list[bytes]] = []
        self.pipeline: TracingPipeline | None = None

    def __call__(self, batch: Sequence[bytes]) -> None:
        self.batches.append(list(batch))

    def request(self) -> ExportTraceServiceRequest:
        assert self.pipeline is not None
        assert self.pipeline.force_flush(5.0)
        req = ExportTraceServiceRequest()
        req.ParseFromString(self.pipeline.request([s for b in self.batches for s in b]))
        return req

    def all(self) -> list[PbSpan]:
        req = self.request()
        return [s for rs in req.resource_spans for ss in rs.scope_spans for s in ss.spans]


def value(v: AnyValue) -> Any:
    which = v.WhichOneof("value")
    if which == "array_value":
        return [value(x) for x in v.array_value.values]
    return getattr(v, which) if which else None


def attrs(span: PbSpan) -> dict[str, Any]:
    keys = [kv.key for kv in span.attributes]
    assert len(keys) == len(set(keys)), f"an attribute twice in {keys}"
    return {kv.key: value(kv.value) for kv in span.attributes}


def pipeline_for(spans: Spans, **config: Any) -> TracingPipeline:
    settings = {"exporters": ("otlp",), **config}
    pipeline = TracingPipeline(
        TracingConfig(**settings),
        service_name="svc",
        instance_id="i-1",
        exporters=[spans],
        speedups=spans.speedups,
    )
    spans.pipeline = pipeline
    return pipeline


@pytest.fixture(params=CORES)
def spans(request: pytest.FixtureRequest) -> Spans:
    # Every test runs on the Python core, and on the compiled one where it is
    # built: that one must do what its Python definition does.
    return Spans(speedups=request.param == "compiled")


@pytest.fixture
def tracer(spans: Spans) -> Iterator[MeshTracer]:
    pipeline = pipeline_for(spans)
    yield MeshTracer(pipeline)
    pipeline.shutdown()


def consume(tracer: MeshTracer, headers: dict[str, str], *, deliveries: int = 1) -> Any:
    return tracer.consumer(
        destination=MAILBOX,
        headers=headers,
        actor_type="counter",
        message_type="Inc",
        key="k1",
        deliveries=deliveries,
    )


def test_producer_span_and_its_traceparent(tracer: MeshTracer, spans: Spans) -> None:
    headers = {"Nats-Msg-Id": "m-1"}
    with tracer.producer(destination=MAILBOX, headers=headers, operation="tell"):
        pass
    req = spans.request()
    (rs,) = req.resource_spans
    resource = {kv.key: value(kv.value) for kv in rs.resource.attributes}
    assert resource["service.name"] == "svc"
    assert resource["service.instance.id"] == "i-1"
    assert resource["telemetry.sdk.name"] == "actormesh"
    assert rs.scope_spans[0].scope.name == "actormesh"
    (span,) = rs.scope_spans[0].spans
    assert span.name == "tell am.mbox.counter.*"
    assert span.kind == PbSpan.SPAN_KIND_PRODUCER
    assert span.parent_span_id == b""
    assert 0 < span.start_time_unix_nano <= span.end_time_unix_nano
    assert attrs(span) == {
        "messaging.system": "nats",
        "messaging.destination.name": MAILBOX,
        "messaging.destination.template": "am.mbox.counter.*",
        "messaging.operation.type": "send",
        "messaging.operation.name": "tell",
        "actormesh.actor_type": "counter",
        "actormesh.key": "k1",
        "messaging.message.id": "m-1",
    }
    assert headers["traceparent"] == f"00-{span.trace_id.hex()}-{span.span_id.hex()}-01"


def test_reply_spans_name_no_inbox(tracer: MeshTracer, spans: Spans) -> None:
    for inbox in ("_INBOX.abc.1", "_INBOX.abc.2"):
        with tracer.producer(destination=inbox, headers={}, operation="reply"):
            pass
    first, second = spans.all()
    assert first.name == second.name == "reply"
    assert attrs(first)["messaging.destination.name"] == "_INBOX.abc.1"
    assert attrs(second)["messaging.destination.name"] == "_INBOX.abc.2"
    assert attrs(first)["messaging.destination.temporary"] is True


def test_other_subjects_are_named_as_they_are(tracer: MeshTracer, spans: Spans) -> None:
    with tracer.producer(destination="orders.created", headers={}, operation="publish"):
        pass
    (span,) = spans.all()
    assert span.name == "publish orders.created"
    assert "actormesh.actor_type" not in attrs(span)


def test_consumer_continues_the_trace_and_is_current(tracer: MeshTracer, spans: Spans) -> None:
    sent = {"Nats-Msg-Id": "m-2"}
    with tracer.producer(destination=MAILBOX, headers=sent, operation="ask"):
        pass
    assert "tracestate" not in sent
    child: dict[str, str] = {}
    with consume(tracer, sent, deliveries=3) as scope:
        current = trace.get_current_span()
        assert current is scope
        assert current.is_recording()
        with tracer.producer(destination="am.mbox.other.k2", headers=child, operation="tell"):
            pass
    assert trace.get_current_span() is trace.INVALID_SPAN
    producer, consumer, inner = sorted(spans.all(), key=lambda s: s.start_time_unix_nano)
    assert consumer.kind == PbSpan.SPAN_KIND_CONSUMER
    assert consumer.name == "process am.mbox.counter.*"
    assert consumer.trace_id == producer.trace_id == inner.trace_id
    assert consumer.parent_span_id == producer.span_id
    assert inner.parent_span_id == consumer.span_id
    assert attrs(consumer) == {
        "messaging.system": "nats",
        "messaging.destination.name": MAILBOX,
        "messaging.destination.template": "am.mbox.counter.*",
        "messaging.operation.type": "process",
        "messaging.operation.name": "process",
        "actormesh.actor_type": "counter",
        "actormesh.key": "k1",
        "actormesh.message_type": "Inc",
        "messaging.nats.delivery_count": 3,
        "messaging.message.id": "m-2",
    }
    assert child["traceparent"].split("-")[1] == consumer.trace_id.hex()


def test_first_deliveries_and_redeliveries_carry_their_own_count(
    tracer: MeshTracer, spans: Spans
) -> None:
    # The head of a first delivery is cached with its count: a redelivery of the
    # same type to the same mailbox must not reuse it, before or after.
    for deliveries in (1, 2, 1, 5):
        with consume(tracer, {}, deliveries=deliveries):
            pass
    counts = [attrs(s)["messaging.nats.delivery_count"] for s in spans.all()]
    assert counts == [1, 2, 1, 5]


def test_sent_is_a_producer_span_of_no_length(tracer: MeshTracer, spans: Spans) -> None:
    headers = {"Nats-Msg-Id": "m-9"}
    tracer.sent(destination=MAILBOX, headers=headers, operation="tell")
    with tracer.producer(destination=MAILBOX, headers={"Nats-Msg-Id": "m-9"}, operation="tell"):
        pass
    sent, scoped = spans.all()
    assert sent.name == scoped.name
    assert sent.kind == PbSpan.SPAN_KIND_PRODUCER
    assert attrs(sent) == attrs(scoped)
    assert 0 < sent.start_time_unix_nano == sent.end_time_unix_nano
    assert headers["traceparent"] == f"00-{sent.trace_id.hex()}-{sent.span_id.hex()}-01"


def test_sent_inside_a_handler_is_its_child(tracer: MeshTracer, spans: Spans) -> None:
    child: dict[str, str] = {}
    with consume(tracer, {}):
        tracer.sent(destination="am.mbox.other.k2", headers=child, operation="tell")
    sent, consumer = sorted(spans.all(), key=lambda s: s.kind)  # producer (4), consumer (5)
    assert consumer.kind == PbSpan.SPAN_KIND_CONSUMER
    assert sent.parent_span_id == consumer.span_id
    assert sent.trace_id == consumer.trace_id
    assert child["traceparent"].split("-")[2] == sent.span_id.hex()


def test_tracestate_travels_with_the_trace(tracer: MeshTracer, spans: Spans) -> None:
    parent = {"traceparent": f"00-{'ab' * 16}-{'cd' * 8}-01", "tracestate": "congo=t61"}
    child: dict[str, str] = {}
    with (
        consume(tracer, parent),
        tracer.producer(destination=MAILBOX, headers=child, operation="tell"),
    ):
        pass
    assert child["tracestate"] == "congo=t61"
    assert {s.trace_state for s in spans.all()} == {"congo=t61"}


@pytest.mark.parametrize(
    "traceparent",
    [
        "garbage",
        f"00-{'0' * 32}-{'cd' * 8}-01",  # all-zero trace id
        f"00-{'ab' * 16}-{'0' * 16}-01",  # all-zero span id
        f"ff-{'ab' * 16}-{'cd' * 8}-01",  # the forbidden version
        f"00-{'zz' * 16}-{'cd' * 8}-01",  # not hex
        f"00-{'ab' * 16}-{'cd' * 8}-01-extra",  # version 00 has no more fields
        f"00-{'AB' * 16}-{'cd' * 8}-01",  # upper case: the ids are lower-case hex
        f"00-{'ab' * 15}a b-{'cd' * 8}-01",  # a space (bytes.fromhex would skip it)
        f"00-{'ab' * 16}-{'cd' * 8}-1",  # flags are two digits
        f"0-{'ab' * 16}-{'cd' * 8}-01",  # so is the version
        f"00-{'ab' * 16}-{'cd' * 8}-0g",  # flags are hex
        f"00-{'ab' * 16}-{'cd' * 8}-0\u00e9",  # not ASCII, of the usual length
        f"00-{'ab' * 16}+{'cd' * 8}-01",  # a dash missing
        f"01-{'0' * 32}-{'cd' * 8}-01",  # all-zero ids in a later version too
        f"01-{'ab' * 16}-{'0' * 16}-01-more",
    ],
)
def test_an_invalid_traceparent_starts_a_new_trace(
    tracer: MeshTracer, spans: Spans, traceparent: str
) -> None:
    with consume(tracer, {"traceparent": traceparent}):
        pass
    (span,) = spans.all()
    assert span.parent_span_id == b""
    assert span.trace_id not in (bytes.fromhex("ab" * 16), bytes(16))


def test_a_later_version_is_read_for_what_version_00_defines(
    tracer: MeshTracer, spans: Spans
) -> None:
    with consume(tracer, {"traceparent": f"01-{'ab' * 16}-{'cd' * 8}-01-more"}):
        pass
    (span,) = spans.all()
    assert span.trace_id.hex() == "ab" * 16
    assert span.parent_span_id.hex() == "cd" * 8


async def test_each_task_sees_its_own_consumer_span(tracer: MeshTracer) -> None:
    seen: dict[str, tuple[int, int]] = {}
    both = asyncio.Barrier(2)

    async def handle(name: str) -> None:
        with consume(tracer, {}) as scope:
            await both.wait()  # both spans are current at once, in their own task
            ctx = trace.get_current_span().get_span_context()
            assert trace.get_current_span() is scope
            seen[name] = (ctx.trace_id, ctx.span_id)

    await asyncio.gather(handle("a"), handle("b"))
    assert seen["a"] != seen["b"]


def test_error_marks_the_span_once(tracer: MeshTracer, spans: Spans) -> None:
    first = MailboxFull("counter", reason="max_msgs")

    def handle() -> None:
        with consume(tracer, {}) as scope:
            scope.error(first)
            raise MailboxFull("counter", reason="max_bytes")

    with pytest.raises(MailboxFull, match="max_bytes"):
        handle()
    (span,) = spans.all()
    assert span.status.code == span.status.STATUS_CODE_ERROR
    assert span.status.message == f"MailboxFull: {first}"
    assert [e.name for e in span.events] == ["exception"]
    event = {kv.key: value(kv.value) for kv in span.events[0].attributes}
    assert event["exception.type"] == "MailboxFull"
    assert event["exception.message"] == str(first)
    assert attrs(span)["error.type"] == "MailboxFull"
    assert attrs(span)["actormesh.error.code"] == MailboxFull.code


def test_an_escaping_exception_marks_the_span(tracer: MeshTracer, spans: Spans) -> None:
    with pytest.raises(ValueError, match="boom"), consume(tracer, {}):
        raise ValueError("boom")
    (span,) = spans.all()
    assert span.status.code == span.status.STATUS_CODE_ERROR
    event = {kv.key: value(kv.value) for kv in span.events[0].attributes}
    assert "ValueError: boom" in event["exception.stacktrace"]
    assert "actormesh.error.code" not in attrs(span)
    assert not isinstance(ValueError("boom"), ActorMeshError)


def test_cancellation_is_not_a_failure(tracer: MeshTracer, spans: Spans) -> None:
    with pytest.raises(asyncio.CancelledError), consume(tracer, {}):
        raise asyncio.CancelledError
    (span,) = spans.all()
    assert span.status.code == span.status.STATUS_CODE_UNSET
    assert not span.events


def test_handlers_annotate_the_span_through_the_api(tracer: MeshTracer, spans: Spans) -> None:
    with consume(tracer, {}):
        span = trace.get_current_span()
        span.set_attribute("order.id", "o-7")
        span.set_attributes({"order.items": 3, "order.total": 9.5, "order.gift": True})
        span.set_attribute("order.tags", ["a", "b"])
        span.set_attribute("order.delta", -2)
        span.add_event("priced", {"currency": "EUR"})
        span.update_name("process order")
    (pb,) = spans.all()
    got = attrs(pb)
    assert got["order.id"] == "o-7"
    assert got["order.items"] == 3
    assert got["order.total"] == 9.5
    assert got["order.gift"] is True
    assert got["order.tags"] == ["a", "b"]
    assert got["order.delta"] == -2
    assert pb.name == "process order"
    (event,) = pb.events
    assert event.name == "priced"
    assert {kv.key: value(kv.value) for kv in event.attributes} == {"currency": "EUR"}


def test_a_key_set_twice_is_one_attribute_with_the_last_value(
    tracer: MeshTracer, spans: Spans
) -> None:
    with consume(tracer, {}):
        span = trace.get_current_span()
        span.set_attribute("order.state", "new")
        span.set_attributes({"order.state": "paid", "order.items": 1})
        span.set_attribute("order.items", 2)
    (pb,) = spans.all()
    got = attrs(pb)  # fails on a key that appears twice
    assert (got["order.state"], got["order.items"]) == ("paid", 2)
    assert pb.dropped_attributes_count == 0


def test_span_limits_drop_the_oldest_and_count_them(spans: Spans) -> None:
    pipeline = pipeline_for(
        spans,
        attribute_count_limit=3,
        attribute_value_length_limit=4,
        event_count_limit=2,
        event_attribute_count_limit=1,
    )
    try:
        with consume(MeshTracer(pipeline), {}):
            span = trace.get_current_span()
            for i in range(5):
                span.set_attribute(f"a{i}", f"value-{i}")
            span.set_attribute("tags", ["abcdef", "xy"])
            for i in range(4):
                span.add_event(f"e{i}", {"first": "x", "second": "long text"})
            raise_and_record(span)
        (pb,) = spans.all()
    finally:
        pipeline.shutdown()
    got = attrs(pb)
    # actormesh's own messaging attributes are kept whatever the limit.
    assert got["messaging.system"] == "nats"
    handler = {k: v for k, v in got.items() if not k.startswith(("messaging.", "actormesh."))}
    assert handler == {"a3": "valu", "a4": "valu", "tags": ["abcd", "xy"]}
    assert pb.dropped_attributes_count == 3
    # Four events and the recorded exception: the newest two are kept.
    assert [e.name for e in pb.events] == ["e3", "exception"]
    assert pb.dropped_events_count == 3
    e3 = pb.events[0]
    assert {kv.key: value(kv.value) for kv in e3.attributes} == {"second": "long"}
    assert e3.dropped_attributes_count == 1


def raise_and_record(span: Any) -> None:
    try:
        raise ValueError("a long message")
    except ValueError as exc:
        span.record_exception(exc)


def test_a_failure_past_the_limits_still_marks_the_span(spans: Spans) -> None:
    pipeline = pipeline_for(spans, attribute_count_limit=0, event_count_limit=0)
    try:
        with pytest.raises(MailboxFull), consume(MeshTracer(pipeline), {}):
            raise MailboxFull("counter", reason="max_msgs")
        (pb,) = spans.all()
    finally:
        pipeline.shutdown()
    assert pb.status.code == pb.status.STATUS_CODE_ERROR
    assert "error.type" not in attrs(pb)
    assert pb.dropped_attributes_count == 2  # error.type and actormesh.error.code
    assert not pb.events
    assert pb.dropped_events_count == 1


def test_sdk_spans_nest_under_and_above_actormesh_spans(tracer: MeshTracer, spans: Spans) -> None:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    sdk = provider.get_tracer("app")
    sent: dict[str, str] = {}
    with (
        consume(tracer, {}),
        sdk.start_as_current_span("inner"),
        tracer.producer(destination=MAILBOX, headers=sent, operation="tell"),
    ):
        pass
    (inner,) = exporter.get_finished_spans()
    consumer, producer = sorted(spans.all(), key=lambda s: s.start_time_unix_nano)
    assert inner.parent is not None
    assert inner.parent.span_id == int.from_bytes(consumer.span_id)
    assert inner.context.trace_id == int.from_bytes(consumer.trace_id)
    assert producer.parent_span_id == inner.context.span_id.to_bytes(8)
    assert producer.trace_id == consumer.trace_id


def test_unsampled_traces_propagate_without_spans(spans: Spans) -> None:
    pipeline = pipeline_for(spans, sampler="parentbased_traceidratio", sampler_arg=0.0)
    tracer = MeshTracer(pipeline)
    try:
        sent: dict[str, str] = {}
        with tracer.producer(destination=MAILBOX, headers=sent, operation="tell"):
            pass
        version, trace_id, span_id, flags = sent["traceparent"].split("-")
        assert (version, flags) == ("00", "00")
        pipelined: dict[str, str] = {}
        tracer.sent(destination=MAILBOX, headers=pipelined, operation="tell")
        assert pipelined["traceparent"].endswith("-00")
        child: dict[str, str] = {}
        with consume(tracer, sent) as scope:
            assert not scope.is_recording()
            assert trace.get_current_span().get_span_context().trace_id == int(trace_id, 16)
            with tracer.producer(destination=MAILBOX, headers=child, operation="ask"):
                pass
        assert child["traceparent"].split("-")[1] == trace_id
        assert child["traceparent"].split("-")[2] != span_id
        assert child["traceparent"].endswith("-00")
        assert spans.all() == []
        # A sampled parent is traced in full: the parent decides (parentbased_*).
        with consume(tracer, {"traceparent": f"00-{trace_id}-{span_id}-01"}):
            pass
        (span,) = spans.all()
        assert span.trace_id.hex() == trace_id
    finally:
        pipeline.shutdown()


@pytest.mark.parametrize("ratio", [0.0, 0.25, 1.0])
def test_root_sampling_is_the_sdks_rule(spans: Spans, ratio: float) -> None:
    pipeline = pipeline_for(spans, sampler="traceidratio", sampler_arg=ratio)
    tracer = MeshTracer(pipeline)
    bound = TraceIdRatioBased.get_bound_for_rate(ratio)
    try:
        sampled_ids = set()
        for _ in range(400):
            headers: dict[str, str] = {}
            with tracer.producer(destination=MAILBOX, headers=headers, operation="tell"):
                pass
            _, trace_id, _, flags = headers["traceparent"].split("-")
            sampled = flags == "01"
            assert sampled == ((int(trace_id, 16) & ((1 << 64) - 1)) < bound)
            if sampled:
                sampled_ids.add(trace_id)
        assert {s.trace_id.hex() for s in spans.all()} == sampled_ids
        if ratio == 0.25:
            assert 40 < len(sampled_ids) < 160
    finally:
        pipeline.shutdown()


def test_non_parent_based_ratio_ignores_the_parents_flag(spans: Spans) -> None:
    pipeline = pipeline_for(spans, sampler="traceidratio", sampler_arg=0.0)
    tracer = MeshTracer(pipeline)
    try:
        with consume(tracer, {"traceparent": f"00-{'ab' * 16}-{'cd' * 8}-01"}):
            pass
        assert spans.all() == []
    finally:
        pipeline.shutdown()
