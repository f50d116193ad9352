"""`OtelTracer`: the `Tracer` hook over an OpenTelemetry SDK TracerProvider.

The same spans as `MeshTracer`, through a TracerProvider of your own (an
in-memory exporter in tests, a setup your application already has), at the
SDK's cost per span. `build_tracer_provider` makes one from `TracingConfig`.

Spans follow the OpenTelemetry messaging semantic conventions: a PRODUCER span
per tell / ask / reply that injects W3C `traceparent`/`tracestate` into the
NATS headers, and a CONSUMER span per handled message, parented on what the
headers carry and current while the handler runs, so a handler's own tells
and asks continue the trace across processes.
"""

from __future__ import annotations

import random
import sys
from contextvars import Token
from typing import Any

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.propagators.textmap import TextMapPropagator
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter, SpanExporter
from opentelemetry.sdk.trace.sampling import (
    ALWAYS_OFF,
    ALWAYS_ON,
    ParentBased,
    ParentBasedTraceIdRatio,
    Sampler,
    TraceIdRatioBased,
)
from opentelemetry.sdk.version import __version__ as _sdk_version
from opentelemetry.trace import Span, SpanContext, SpanKind, Status, StatusCode, TraceFlags
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from .._errors import ActorMeshError
from .._version import VERSION
from .._wire import Hdr
from ._config import TracingConfig
from ._pipeline import SCOPE
from ._semconv import (
    ERROR_CODE,
    ERROR_TYPE,
    MESSAGE_ID,
    PROCESS,
    mailbox_parts,
    span_attributes,
    span_name,
)

__all__ = ["OtelTracer", "build_tracer_provider"]


class _Scope:
    """A started span: the context manager and the `SpanHandle` the hooks get."""

    __slots__ = ("_ctx", "_failed", "_span", "_token")

    def __init__(self, span: Span, ctx: otel_context.Context | None) -> None:
        self._span = span
        #: For consumer spans: the context to make current on enter.
        self._ctx = ctx
        self._token: Token[otel_context.Context] | None = None
        self._failed = False

    def error(self, exc: BaseException) -> None:
        if not self._failed:
            self._failed = True
            _mark_failed(self._span, exc)

    def __enter__(self) -> _Scope:
        if self._ctx is not None:
            self._token = otel_context.attach(self._ctx)
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: object
    ) -> None:
        try:
            # CancelledError, KeyboardInterrupt, GeneratorExit are not failures.
            if isinstance(exc, Exception) and not self._failed:
                self.error(exc)
        finally:
            if self._token is not None:
                otel_context.detach(self._token)
                self._token = None
            self._span.end()


class _Unsampled:
    """The scope of a message whose trace is not sampled: no span, only the context
    (so the handler's own sends continue the trace, unsampled)."""

    __slots__ = ("_ctx", "_token")

    def __init__(self, ctx: otel_context.Context | None) -> None:
        self._ctx = ctx
        self._token: Token[otel_context.Context] | None = None

    def error(self, exc: BaseException) -> None:
        pass

    def __enter__(self) -> _Unsampled:
        if self._ctx is not None:
            self._token = otel_context.attach(self._ctx)
        return self

    def __exit__(self, *exc: object) -> None:
        if self._token is not None:
            otel_context.detach(self._token)
            self._token = None


_NOT_SAMPLED = _Unsampled(None)


def _inject_unsampled(headers: dict[str, str], parent: SpanContext) -> None:
    """W3C trace context for a child of an unsampled span, without the SDK's cost."""
    headers[Hdr.TRACEPARENT] = f"00-{parent.trace_id:032x}-{random.getrandbits(64) or 1:016x}-00"
    if parent.trace_state:
        headers[Hdr.TRACESTATE] = parent.trace_state.to_header()


def _unsampled_parent(traceparent: str) -> SpanContext | None:
    """The span context of a well-formed, unsampled `traceparent`; else None."""
    # version-traceid(32)-spanid(16)-flags(2): sampled is bit 0 of the flags.
    if len(traceparent) != 55 or traceparent[2] != "-" or int(traceparent[53:], 16) & 1:
        return None
    try:
        trace_id, span_id = int(traceparent[3:35], 16), int(traceparent[36:52], 16)
    except ValueError:
        return None
    if not trace_id or not span_id:
        return None
    return SpanContext(trace_id, span_id, is_remote=True, trace_flags=TraceFlags(0))


def _mark_failed(span: Span, exc: BaseException) -> None:
    if not span.is_recording():
        return
    span.record_exception(exc)
    span.set_status(Status(StatusCode.ERROR, f"{type(exc).__name__}: {exc}"[:1000]))
    span.set_attribute(ERROR_TYPE, type(exc).__qualname__)
    if isinstance(exc, ActorMeshError):
        span.set_attribute(ERROR_CODE, exc.code)


class OtelTracer:
    """The `actormesh._hooks.Tracer` protocol over an OpenTelemetry TracerProvider.

    `tracer_provider=None` uses the global provider (as set with
    `opentelemetry.trace.set_tracer_provider`, possibly later). The propagator
    defaults to W3C Trace Context, the format DESIGN.md puts on the wire.
    """

    __slots__ = ("_names", "_propagator", "_tracer")

    def __init__(
        self,
        tracer_provider: trace.TracerProvider | None = None,
        *,
        propagator: TextMapPropagator | None = None,
    ) -> None:
        self._tracer = trace.get_tracer(SCOPE, VERSION, tracer_provider=tracer_provider)
        self._propagator = propagator or TraceContextTextMapPropagator()
        # Per mailbox base subject: (template, actor type); saves re-splitting hot subjects.
        self._names: dict[str, tuple[str, str]] = {}

    def _mailbox(self, destination: str) -> tuple[str, str, str] | None:
        """(template, actor type, key) of a mailbox subject `<prefix>.mbox.<type>.<key>`."""
        base, _, key = destination.rpartition(".")
        known = self._names.get(base)
        if known is None:
            parsed = mailbox_parts(destination)
            if parsed is None:
                return None
            known = self._names[base] = parsed[:2]
            if len(self._names) > 4096:  # a bound, should someone trace arbitrary subjects
                self._names.clear()
        return known[0], known[1], key

    def sent(self, *, destination: str, headers: dict[str, str], operation: str) -> None:
        with self.producer(destination=destination, headers=headers, operation=operation):
            pass

    def producer(
        self, *, destination: str, headers: dict[str, str], operation: str
    ) -> _Scope | _Unsampled:
        current = trace.get_current_span().get_span_context()
        if current.is_valid and not current.trace_flags.sampled:
            # Inside an unsampled trace (the usual case under head sampling): its
            # children are not sampled either, so skip the SDK and only propagate.
            _inject_unsampled(headers, current)
            return _NOT_SAMPLED
        mailbox = self._mailbox(destination)
        span = self._tracer.start_span(
            span_name(operation, destination, mailbox),
            kind=SpanKind.PRODUCER,
            record_exception=False,
            set_status_on_exception=False,
        )
        if not span.is_recording():
            ctx = span.get_span_context()
            if ctx.is_valid:  # an SDK decision not to sample; no-op providers give none
                _inject_unsampled(headers, ctx)
            span.end()
            return _NOT_SAMPLED
        # Attributes only for spans that are kept: building them is most of the cost.
        attrs = span_attributes(operation, destination, mailbox)
        msg_id = headers.get(Hdr.MSG_ID)
        if msg_id:
            attrs[MESSAGE_ID] = msg_id
        span.set_attributes(attrs)
        self._propagator.inject(headers, context=trace.set_span_in_context(span))
        return _Scope(span, None)

    def internal(self, name: str, attributes: dict[str, Any]) -> _Scope:
        """An INTERNAL span, current while entered (a tool call's `execute_tool`)."""
        span = self._tracer.start_span(
            name,
            kind=SpanKind.INTERNAL,
            attributes=attributes,
            record_exception=False,
            set_status_on_exception=False,
        )
        return _Scope(span, trace.set_span_in_context(span))

    def consumer(
        self,
        *,
        destination: str,
        headers: dict[str, str],
        actor_type: str,
        message_type: str,
        key: str,
        deliveries: int,
    ) -> _Scope | _Unsampled:
        traceparent = headers.get(Hdr.TRACEPARENT)
        if traceparent is not None:
            unsampled = _unsampled_parent(traceparent)
            if unsampled is not None:
                parent_span = trace.NonRecordingSpan(unsampled)
                return _Unsampled(trace.set_span_in_context(parent_span))
        parent = self._propagator.extract(headers)
        mailbox = self._mailbox(destination)
        span = self._tracer.start_span(
            span_name(PROCESS, destination, mailbox),
            context=parent,
            kind=SpanKind.CONSUMER,
            record_exception=False,
            set_status_on_exception=False,
        )
        if span.is_recording():
            attrs = span_attributes(
                PROCESS,
                destination,
                mailbox,
                actor=(actor_type, key),
                message_type=message_type,
                deliveries=deliveries,
            )
            msg_id = headers.get(Hdr.MSG_ID)
            if msg_id:
                attrs[MESSAGE_ID] = msg_id
            span.set_attributes(attrs)
        return _Scope(span, trace.set_span_in_context(span, parent))


def build_tracer_provider(
    config: TracingConfig,
    *,
    service_name: str | None = None,
    instance_id: str | None = None,
    exporters: list[SpanExporter] | None = None,
) -> TracerProvider:
    """A TracerProvider for `config`; `exporters` replaces the ones it names (tests).

    `MeshTracer` does not need one: this is for `OtelTracer`, and for the spans
    handlers make themselves with the OpenTelemetry API.
    """
    attributes = config.resource(
        service_name=service_name, instance_id=instance_id, sdk=("opentelemetry", _sdk_version)
    )
    provider = TracerProvider(sampler=_sampler(config), resource=Resource(attributes))
    for exporter in exporters if exporters is not None else _exporters(config):
        provider.add_span_processor(
            BatchSpanProcessor(
                exporter,
                max_queue_size=config.max_queue_size,
                schedule_delay_millis=config.schedule_delay_ms,
                max_export_batch_size=config.max_export_batch_size,
                export_timeout_millis=config.export_timeout_ms,
            )
        )
    return provider


def _sampler(config: TracingConfig) -> Sampler:
    name, arg = config.sampler, config.sampler_arg
    if name == "always_on":
        return ALWAYS_ON
    if name == "always_off":
        return ALWAYS_OFF
    if name == "traceidratio":
        return TraceIdRatioBased(arg)
    if name == "parentbased_always_off":
        return ParentBased(ALWAYS_OFF)
    if name == "parentbased_traceidratio":
        return ParentBasedTraceIdRatio(arg)
    return ParentBased(ALWAYS_ON)


def _exporters(config: TracingConfig) -> list[SpanExporter]:
    out: list[SpanExporter] = []
    for name in config.exporters:
        if name == "otlp":
            from opentelemetry.exporter.otlp.proto.http import Compression
            from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

            out.append(
                OTLPSpanExporter(
                    endpoint=config.endpoint,
                    headers=dict(config.headers),
                    timeout=config.timeout,
                    compression=Compression(config.compression),
                    certificate_file=config.certificate,
                    client_certificate_file=config.client_certificate,
                    client_key_file=config.client_key,
                )
            )
        elif name == "console":
            # stdout belongs to the program (`actormesh ask` prints replies there).
            out.append(ConsoleSpanExporter(out=sys.stderr))
    return out
