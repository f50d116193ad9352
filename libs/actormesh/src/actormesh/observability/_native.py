"""`MeshTracer`: actormesh's own spans, recorded and encoded without the SDK.

The same spans as `OtelTracer` (messaging semantic conventions, W3C trace
context in the NATS headers), at a few microseconds each instead of the
SDK's ~100: ids are kept as bytes, the parts of a span fixed by its subject
(name, kind and most attributes) are encoded once and cached, and a span is
encoded to OTLP protobuf as it ends (`_otlp`) and queued for the export
thread (`_pipeline`).

A span's core (start, current while its handler runs, end, encode, queue) is
the compiled `_speedups.SpanCore` when that extension is built, else `_PyCore`
here, its definition; the spans a message needs most often (a consumer span,
a root producer span, `tell_many`'s) are made whole by the extension too.

It interoperates with the OpenTelemetry API: a consumer span is the current
span (`opentelemetry.trace.get_current_span()`) while the handler runs, so
spans a handler starts with any OpenTelemetry tracer are its children, and
the handler may set attributes and events on it; a tell made inside a span of
another tracer is that span's child.

About 650 lines in one module on purpose: the tracer, its span types and `_PyCore`
are the definition `_speedups.c` mirrors line for line, and are read side by side
with it; the semantic conventions they share with `OtelTracer` live in `_semconv`.
"""

from __future__ import annotations

import random
import re
import struct
import time
from collections import deque
from collections.abc import Callable, Mapping
from contextvars import ContextVar, Token
from typing import TYPE_CHECKING, Any, cast

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.trace import SpanContext, Status, StatusCode, TraceFlags, TraceState
from opentelemetry.util import types

from .._errors import ActorMeshError
from .._hooks import NO_SPAN
from .._wire import Hdr
from . import _otlp
from ._otlp import KIND_CONSUMER, KIND_PRODUCER, attribute, string_field, varint
from ._recorder import speedups

if TYPE_CHECKING:
    from ._config import TracingConfig
    from ._pipeline import TracingPipeline

__all__ = ["MeshTracer"]

from ._semconv import (
    DELIVERY_COUNT,
    DESTINATION,
    ERROR_CODE,
    ERROR_TYPE,
    MESSAGE_ID,
    PROCESS,
    mailbox_parts,
    span_attributes,
    span_name,
)

#: The key the OpenTelemetry API keeps the current span under, found through the
#: public API (the constant itself is private).
(_SPAN_KEY,) = trace.set_span_in_context(trace.INVALID_SPAN, otel_context.Context())


def _context_var() -> ContextVar[otel_context.Context] | None:
    """The ContextVar the OpenTelemetry API keeps its context in: that of the
    default runtime context; None for any other runtime context."""
    try:
        from opentelemetry.context import _RUNTIME_CONTEXT
    except ImportError:  # pragma: no cover  (every API version so far has it)
        return None
    var = getattr(_RUNTIME_CONTEXT, "_current_context", None)
    return var if isinstance(var, ContextVar) else None


def _context_functions(
    var: ContextVar[otel_context.Context] | None,
) -> tuple[
    Callable[[], otel_context.Context],
    Callable[[otel_context.Context], Token[otel_context.Context]],
    Callable[[Token[otel_context.Context]], None],
]:
    """get_current, attach and detach of the OpenTelemetry context.

    With the default runtime context (a ContextVar) these are the variable's own
    methods, a third of the cost of the API functions that wrap them; any other
    runtime context goes through the API.
    """
    if var is not None:
        return var.get, var.set, var.reset
    return otel_context.get_current, otel_context.attach, otel_context.detach


_CONTEXT_VAR = _context_var()
_get_current, _attach, _detach = _context_functions(_CONTEXT_VAR)

_LOW_64 = (1 << 64) - 1
_REPLY = ("reply", "")
_TRACEPARENT = Hdr.TRACEPARENT
_TRACESTATE = Hdr.TRACESTATE
_MSG_ID = Hdr.MSG_ID
_getrandbits = random.getrandbits
_HEADS_MAX = 4096

#: A span's ids, encoded: the trace id field, then for a child the parent span id
#: field (protobuf takes fields in any order), so that a `traceparent` becomes
#: both in one `bytes.fromhex`.
_TRACE_TAG = b"\x0a\x10"
_ROOT_IDS = 18
_CHILD_IDS = 28

#: A span's fixed-size fields, with the ScopeSpans.spans tag and a two-byte length
#: in front: the ids, span id, start and end time. Packing the whole front at once
#: is what makes a span cheap to encode.
_FRONT = {n: struct.Struct(f"<BBB{n}s2s8sBQBQ").pack for n in (_ROOT_IDS, _CHILD_IDS)}
_FRONT_LEN = {n: struct.calcsize(f"<{n}s2s8sBQBQ") for n in _FRONT}


def _prefixes(key: str, count: int) -> list[bytes]:
    """For string values of 0..count-1 bytes: the encoded attribute up to the value."""
    key_field = string_field(b"\x0a", key)
    out = []
    for n in range(count):
        any_value = b"\x0a" + varint(n)
        kv_len = len(key_field) + 1 + len(varint(n + len(any_value))) + len(any_value) + n
        out.append(
            b"\x4a" + varint(kv_len) + key_field + b"\x12" + varint(len(any_value) + n) + any_value
        )
    return out


_MESSAGE_ID_PREFIX = _prefixes(MESSAGE_ID, 128)


#: A version 00 `traceparent` (the one everybody sends), and any version: later
#: versions may add fields after a dash, and `ff` is invalid. All-zero ids are
#: invalid too.
_IDS = r"-(?!0{32})[0-9a-f]{32}-(?!0{16})[0-9a-f]{16}-[0-9a-f]{2}"
_TRACEPARENT_00 = re.compile("00" + _IDS).fullmatch
_TRACEPARENT_ANY = re.compile(r"(?!ff)[0-9a-f]{2}" + _IDS + "(-.*)?", re.DOTALL).fullmatch
_SAMPLED_FLAGS = frozenset("13579bdf")


def _parse_traceparent(value: str) -> tuple[bytes, bool] | None:
    """(ids, sampled) of a valid W3C `traceparent`, else None. The ids are its
    trace id and parent span id, encoded as a child span's fields (`_TRACE_TAG`)."""
    if _TRACEPARENT_00(value) is None:
        match = _TRACEPARENT_ANY(value)
        if match is None or (value[:2] == "00" and match[1]):
            return None  # version 00 has no more fields
    # The dash between the two ids becomes the parent span id field's tag.
    return bytes.fromhex("0a10" + value[3:52].replace("-", "2208")), value[54] in _SAMPLED_FLAGS


def _message_id(msg_id: str) -> bytes:
    """The encoded message id attribute."""
    data = msg_id.encode("utf-8", "replace")
    if len(data) < 128:
        return _MESSAGE_ID_PREFIX[len(data)] + data
    return attribute(MESSAGE_ID, msg_id)


def _encode(ids: bytes, span_id: bytes, start: int, end: int, rest: bytes) -> bytes:
    """A `ScopeSpans.spans` entry: the ids and the other fixed-size fields in one
    pack, then `rest` (the other fields, encoded; protobuf takes fields in any
    order)."""
    n = len(ids)
    size = len(rest) + _FRONT_LEN[n]
    front = _FRONT[n](
        0x12, size & 127 | 128, size >> 7, ids, b"\x12\x08", span_id, 0x39, start, 0x41, end
    )
    if 128 <= size < 16384:
        return front + rest
    # The two-byte length in front does not fit: write it as long as it is.
    return b"\x12" + varint(size) + front[3:] + rest


def _clip(value: Any, length: int | None) -> Any:
    """`value` with its strings cut to `length` characters (the SDK's rule)."""
    if length is None:
        return value
    if isinstance(value, str):
        return value[:length]
    if isinstance(value, list | tuple):
        return [v[:length] if isinstance(v, str) else v for v in value]
    return value


class _Extras:
    """What a span gathers while it runs, beyond its cached head: attributes (one
    value per key, the last set), events, an error status and a new name, under
    the configured span limits. Made on the first annotation: most spans have none."""

    __slots__ = ("attrs", "dropped_attrs", "dropped_events", "events", "limits", "name", "status")

    def __init__(self, limits: TracingConfig) -> None:
        self.limits = limits
        self.attrs: dict[str, Any] = {}
        self.events: deque[bytes] = deque(maxlen=limits.event_count_limit)
        self.status: bytes | None = None
        self.name: str | None = None
        self.dropped_attrs = 0
        self.dropped_events = 0

    def set(self, key: str, value: Any) -> None:
        attrs, limit = self.attrs, self.limits.attribute_count_limit
        if key in attrs:
            del attrs[key]  # re-set: it becomes the newest
        elif len(attrs) >= limit:
            self.dropped_attrs += 1
            if not limit:
                return
            del attrs[next(iter(attrs))]  # full: the oldest goes, as in the SDK
        attrs[key] = _clip(value, self.limits.attribute_value_length_limit)

    def event(self, name: str, when: int, attributes: Mapping[str, Any]) -> None:
        limits = self.limits
        if not limits.event_count_limit:
            self.dropped_events += 1
            return
        if len(self.events) == self.events.maxlen:
            self.dropped_events += 1  # the deque drops the oldest
        items = list(attributes.items())
        dropped = max(0, len(items) - limits.event_attribute_count_limit)
        kept = {
            k: _clip(v, limits.attribute_value_length_limit)
            for k, v in items[dropped:]  # the newest, as in the SDK
        }
        self.events.append(_otlp.event(name, when, kept, dropped_attributes=dropped))

    def encode(self) -> bytes:
        parts = [attribute(k, v) for k, v in self.attrs.items()]
        parts += self.events
        if self.status is not None:
            parts.append(self.status)
        if self.name is not None:
            # A later field wins in protobuf: this name replaces the cached head's.
            parts.append(string_field(b"\x2a", self.name))
        if self.dropped_attrs:
            parts.append(b"\x50" + varint(self.dropped_attrs))
        if self.dropped_events:
            parts.append(b"\x60" + varint(self.dropped_events))
        return b"".join(parts)


class _SpanApi(trace.Span):
    """What an actormesh span is beyond its core (`_PyCore`, or the compiled
    `SpanCore`): the OpenTelemetry API span that code running while it is current
    sees, and the hooks' `SpanHandle`."""

    # The core's fields. `_recorder` is None for a span that is not sampled
    # (nothing is recorded); `_ids` are the trace id and, for a child, parent span
    # id fields, encoded; `_head` is the name, kind and the attributes known at
    # start but the message id, encoded.
    _recorder: Any
    _ids: bytes
    span_id: bytes
    trace_state: str | None
    _more: _Extras | None
    _span_context: SpanContext | None
    _failed: bool
    _ended: bool

    @property
    def trace_id(self) -> bytes:
        return self._ids[2:18]

    @property
    def parent_id(self) -> bytes:
        return self._ids[20:]

    @property
    def sampled(self) -> bool:
        return self._recorder is not None

    def error(self, exc: BaseException) -> None:
        """Mark the span failed with this exception (once)."""
        more = self._annotations()
        if more is None or self._failed:
            return
        self._failed = True
        more.event("exception", time.time_ns(), _otlp.exception_attributes(exc))
        more.status = _otlp.status_error(f"{type(exc).__name__}: {exc}"[:1000])
        more.set(ERROR_TYPE, type(exc).__qualname__)
        if isinstance(exc, ActorMeshError):
            more.set(ERROR_CODE, exc.code)

    def _annotations(self) -> _Extras | None:
        """Where what the span gathers goes (made on first use); None when nothing
        is recorded: the span is not sampled, or it has ended."""
        recorder = self._recorder
        if recorder is None or self._ended:
            return None
        if self._more is None:
            self._more = _Extras(recorder.config)
        return self._more

    def _uncommon(self) -> bytes:
        """Trace state, and what the handler or a failure added (the core encodes
        the rest)."""
        more = string_field(b"\x1a", self.trace_state) if self.trace_state else b""
        if self._more is not None:
            more += self._more.encode()
        return more

    # -- opentelemetry.trace.Span (`end` is the core's) ---------------------------------

    def get_span_context(self) -> SpanContext:
        if self._span_context is None:
            self._span_context = SpanContext(
                int.from_bytes(self._ids[2:18]),
                int.from_bytes(self.span_id),
                is_remote=False,
                trace_flags=TraceFlags(TraceFlags.SAMPLED if self.sampled else 0),
                trace_state=(
                    TraceState.from_header([self.trace_state]) if self.trace_state else None
                ),
            )
        return self._span_context

    def is_recording(self) -> bool:
        return self._recorder is not None and not self._ended

    def set_attribute(self, key: str, value: types.AttributeValue) -> None:
        if (more := self._annotations()) is not None:
            more.set(key, value)

    def set_attributes(self, attributes: types.Attributes) -> None:
        if attributes and (more := self._annotations()) is not None:
            for key, value in attributes.items():
                more.set(key, value)

    def add_event(
        self, name: str, attributes: types.Attributes = None, timestamp: int | None = None
    ) -> None:
        if (more := self._annotations()) is not None:
            when = timestamp if timestamp is not None else time.time_ns()
            more.event(name, when, attributes or {})

    def update_name(self, name: str) -> None:
        if (more := self._annotations()) is not None:
            more.name = name

    def set_status(self, status: Status | StatusCode, description: str | None = None) -> None:
        code = status.status_code if isinstance(status, Status) else status
        if code is StatusCode.ERROR and (more := self._annotations()) is not None:
            text = description or (status.description if isinstance(status, Status) else None)
            more.status = _otlp.status_error(text or "")
            self._failed = True

    def record_exception(
        self,
        exception: BaseException,
        attributes: types.Attributes = None,
        timestamp: int | None = None,
        escaped: bool = False,
    ) -> None:
        if (more := self._annotations()) is not None:
            when = timestamp if timestamp is not None else time.time_ns()
            attrs = _otlp.exception_attributes(exception)
            if attributes:
                attrs.update(attributes)
            more.event("exception", when, attrs)


class _PyCore:
    """A span's core in Python: the definition of the compiled `SpanCore`."""

    # What few spans change, as class defaults rather than set on every span.
    _attach = False
    _token: Token[otel_context.Context] | None = None
    _more: _Extras | None = None
    _span_context: SpanContext | None = None
    _failed = False
    _ended = False

    def __init__(
        self,
        recorder: Any,
        ids: bytes,
        span_id: bytes,
        trace_state: str | None,
        head: bytes,
        msg_id: str | None,
    ) -> None:
        self._recorder = recorder
        self._ids = ids
        self.span_id = span_id
        self.trace_state = trace_state
        self._head = head
        self._msg_id = msg_id
        self._start = time.time_ns()

    def __enter__(self) -> Any:
        if self._attach:
            current = _get_current()
            self._token = _attach(
                otel_context.Context({**current, _SPAN_KEY: self} if current else {_SPAN_KEY: self})
            )
        return self

    def __exit__(self, exc_type: object, exc: BaseException | None, tb: object) -> None:
        if self._token is not None:
            try:
                _detach(self._token)
            except ValueError:
                pass  # entered in another asyncio task: that context is gone anyway
            self._token = None
        # CancelledError, KeyboardInterrupt, GeneratorExit are not failures.
        if exc is not None and isinstance(exc, Exception) and not self._failed:
            cast(_SpanApi, self).error(exc)
        self.end()

    def end(self, end_time: int | None = None) -> None:
        if self._ended:
            return
        self._ended = True
        recorder = self._recorder
        if recorder is None:
            return
        rest = self._head
        if self._msg_id:
            rest += _message_id(self._msg_id)
        if self.trace_state or self._more is not None:
            rest += cast(_SpanApi, self)._uncommon()
        recorder.record(
            _encode(
                self._ids,
                self.span_id,
                self._start,
                end_time if end_time is not None else time.time_ns(),
                rest,
            )
        )


class _Span(_PyCore, _SpanApi):
    """A span recorded by the Python core."""


class _ConsumerSpan(_Span):
    """A consumer span recorded by the Python core: current while its handler runs."""

    _attach = True


_OURS: tuple[type, ...] = (_Span, _ConsumerSpan)
#: The compiled core, when built and the OpenTelemetry context is a ContextVar
#: (it sets that variable itself).
_COMPILED = False
if speedups is not None and _CONTEXT_VAR is not None:

    class _CSpan(speedups.SpanCore, _SpanApi):
        """A span recorded by the compiled core (a consumer's `_attach` is set)."""

    speedups.init(
        _CONTEXT_VAR,
        otel_context.Context,
        _SPAN_KEY,
        _parse_traceparent,
        _TRACEPARENT,
        _TRACESTATE,
        _MSG_ID,
    )
    _OURS += (_CSpan,)
    _COMPILED = True


class MeshTracer:
    """The `actormesh._hooks.Tracer` protocol over a `TracingPipeline`."""

    __slots__ = (
        "_bound",
        "_compiled",
        "_heads",
        "_parent_based",
        "_pipeline",
        "_recorder",
        "_sampler",
        "_span",
    )

    def __init__(self, pipeline: TracingPipeline) -> None:
        self._pipeline = pipeline
        # Either recorder takes any span; the compiled core needs the compiled one.
        self._recorder: Any = pipeline.recorder
        #: Whether the compiled core records the spans (with the pipeline's
        #: compiled recorder), else the Python one.
        self._compiled = pipeline.speedups and _COMPILED
        self._span: Callable[..., _SpanApi] = _CSpan if self._compiled else _Span
        self._sampler = pipeline.sampler
        #: Encoded span heads (name, kind, fixed attributes) by what fixes them.
        self._heads: dict[tuple[str | bool, ...], bytes] = {}
        #: A root is sampled when the low 64 bits of its trace id are below this.
        self._bound = pipeline.sampler.bound
        self._parent_based = pipeline.sampler.parent_based

    @property
    def pipeline(self) -> TracingPipeline:
        return self._pipeline

    def _head(
        self,
        operation: str,
        destination: str,
        message_type: str = "",
        actor: tuple[str, str] = ("", ""),
        deliveries: int = 0,
    ) -> bytes:
        """Build (on a cache miss) the encoded name, kind and fixed attributes."""
        mailbox = mailbox_parts(destination)
        attrs = span_attributes(
            operation,
            destination,
            mailbox,
            actor=actor,
            message_type=message_type,
            deliveries=deliveries,
        )
        if operation == "reply":
            # Reply inboxes are per asker: their destination is added per span.
            del attrs[DESTINATION]
        kind = KIND_CONSUMER if operation == PROCESS else KIND_PRODUCER
        head = string_field(b"\x2a", span_name(operation, destination, mailbox))
        return head + b"\x30" + varint(kind) + _otlp.attributes(attrs)

    def _cached_head(self, cache_key: tuple[str | bool, ...], *how: Any) -> bytes:
        """`_head(*how)`, cached under `cache_key` (what fixes it)."""
        head = self._heads.get(cache_key)
        if head is None:
            if len(self._heads) >= _HEADS_MAX:  # a bound, should keys be unbounded
                self._heads.clear()
            head = self._heads[cache_key] = self._head(*how)
        return head

    def producer(self, *, destination: str, headers: dict[str, str], operation: str) -> Any:
        current = _get_current().get(_SPAN_KEY)
        if operation == "reply":
            # Reply inboxes are per asker: the destination is not part of the head.
            head = self._cached_head(_REPLY, operation, "") + attribute(DESTINATION, destination)
        else:
            head = self._heads.get((operation, destination)) or self._cached_head(
                (operation, destination), operation, destination
            )
            if current is None and self._compiled:
                # A root span to a fixed destination (a tell or an ask from outside
                # any span): the compiled core makes it whole.
                span = speedups.producer(_CSpan, self._recorder, headers, head)
                return NO_SPAN if span is None else span
        trace_state: str | None = None
        if type(current) in _OURS:
            current = cast(_SpanApi, current)
            trace_id, parent_id = current.trace_id, current.span_id
            trace_state = current.trace_state
            sampled = self._sampler.child(current._recorder is not None, trace_id)
            ids = _TRACE_TAG + trace_id + b"\x22\x08" + parent_id
        elif (
            current is not None  # before the (slower) ABC check: the common root case
            and isinstance(current, trace.Span)
            and (parent := current.get_span_context()).is_valid
        ):
            trace_id = parent.trace_id.to_bytes(16)
            trace_state = parent.trace_state.to_header() if parent.trace_state else None
            sampled = self._sampler.child(parent.trace_flags.sampled, trace_id)
            ids = _TRACE_TAG + trace_id + b"\x22\x08" + parent.span_id.to_bytes(8)
        else:
            number = _getrandbits(128) or 1
            trace_id = number.to_bytes(16)
            sampled = number & _LOW_64 < self._bound
            ids = _TRACE_TAG + trace_id
        span_id = (_getrandbits(64) or 1).to_bytes(8)
        if trace_state:
            headers[_TRACESTATE] = trace_state
        headers[_TRACEPARENT] = f"00-{trace_id.hex()}-{span_id.hex()}-{'01' if sampled else '00'}"
        if not sampled:
            return NO_SPAN
        return self._span(self._recorder, ids, span_id, trace_state, head, headers.get(_MSG_ID))

    def internal(self, name: str, attributes: Mapping[str, Any]) -> Any:
        """An INTERNAL span, current while entered (a tool call's `execute_tool`): the
        child of the current span, or a new trace's root."""
        current = _get_current().get(_SPAN_KEY)
        trace_state: str | None = None
        if type(current) in _OURS:
            current = cast(_SpanApi, current)
            trace_id, trace_state = current.trace_id, current.trace_state
            sampled = self._sampler.child(current._recorder is not None, trace_id)
            ids = _TRACE_TAG + trace_id + b"\x22\x08" + current.span_id
        elif (
            current is not None
            and isinstance(current, trace.Span)
            and (parent := current.get_span_context()).is_valid
        ):
            trace_id = parent.trace_id.to_bytes(16)
            trace_state = parent.trace_state.to_header() if parent.trace_state else None
            sampled = self._sampler.child(parent.trace_flags.sampled, trace_id)
            ids = _TRACE_TAG + trace_id + b"\x22\x08" + parent.span_id.to_bytes(8)
        else:
            number = _getrandbits(128) or 1
            ids = _TRACE_TAG + number.to_bytes(16)
            sampled = number & _LOW_64 < self._bound
        span_id = (_getrandbits(64) or 1).to_bytes(8)
        if not sampled:
            # Current all the same: the sends inside continue the trace, unsampled.
            return _ConsumerSpan(None, ids, span_id, trace_state, b"", None)
        head = string_field(b"\x2a", name) + b"\x30" + varint(_otlp.KIND_INTERNAL)
        head += _otlp.attributes(attributes)
        return _ConsumerSpan(self._recorder, ids, span_id, trace_state, head, None)

    def sent(self, *, destination: str, headers: dict[str, str], operation: str) -> None:
        """A producer span of no length, for a message sent without waiting on it."""
        # What follows is `producer` for its commonest case (a root span to a fixed
        # destination) without a span object: `tell_many` sends one per message.
        if operation == "reply" or _get_current().get(_SPAN_KEY) is not None:
            with self.producer(destination=destination, headers=headers, operation=operation):
                return
        rest = self._heads.get((operation, destination)) or self._cached_head(
            (operation, destination), operation, destination
        )
        if self._compiled:
            speedups.sent(self._recorder, headers, rest)
            return
        number = _getrandbits(128) or 1
        trace_id = number.to_bytes(16)
        span_id = (_getrandbits(64) or 1).to_bytes(8)
        sampled = number & _LOW_64 < self._bound
        headers[_TRACEPARENT] = f"00-{trace_id.hex()}-{span_id.hex()}-{'01' if sampled else '00'}"
        if not sampled:
            return
        msg_id = headers.get(_MSG_ID)
        if msg_id:
            rest += _message_id(msg_id)
        now = time.time_ns()
        self._recorder.record(_encode(_TRACE_TAG + trace_id, span_id, now, now, rest))

    def consumer(
        self,
        *,
        destination: str,
        headers: dict[str, str],
        actor_type: str,
        message_type: str,
        key: str,
        deliveries: int,
    ) -> Any:
        # A first delivery's cached head includes its delivery count; a redelivery
        # (rare) adds its count to the head without one.
        first = deliveries == 1
        head = self._heads.get((PROCESS, destination, message_type, first)) or self._cached_head(
            (PROCESS, destination, message_type, first),
            PROCESS,
            destination,
            message_type,
            (actor_type, key),
            1 if first else 0,
        )
        if not first:
            head += attribute(DELIVERY_COUNT, deliveries)
        if self._compiled:
            return speedups.consumer(_CSpan, self._recorder, headers, head)
        raw = headers.get(_TRACEPARENT)
        parent = _parse_traceparent(raw) if raw is not None else None
        if parent is not None:
            ids, sampled = parent
            trace_state = headers.get(_TRACESTATE) or None
            if not self._parent_based:  # `Sampler.child`, inlined on this hot path
                sampled = int.from_bytes(ids[10:18]) < self._bound
        else:
            number = _getrandbits(128) or 1
            ids, trace_state = _TRACE_TAG + number.to_bytes(16), None
            sampled = number & _LOW_64 < self._bound
        span_id = (_getrandbits(64) or 1).to_bytes(8)
        if not sampled:
            # Still current while the handler runs: its sends continue the trace.
            return _ConsumerSpan(None, ids, span_id, trace_state, b"", None)
        return _ConsumerSpan(self._recorder, ids, span_id, trace_state, head, headers.get(_MSG_ID))
