"""OTLP trace protobuf, written by hand (its transport is `_sender`).

The OpenTelemetry SDK builds a protobuf object tree per span and serialises it
in its export thread: about 100 µs of CPU per span, several times what a whole
message costs in actormesh. Here a span is encoded straight to its bytes once,
when it ends, from parts that are mostly cached (a span's name, kind and the
attributes fixed by its subject). Only the wire format of
`opentelemetry/proto/collector/trace/v1/trace_service.proto` is needed; the
tests decode what this writes with the official generated classes.
"""

from __future__ import annotations

import struct
import traceback
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

__all__ = [
    "KIND_CONSUMER",
    "KIND_INTERNAL",
    "KIND_PRODUCER",
    "attribute",
    "encode_request",
    "exception_attributes",
    "resource_scope",
    "status_error",
    "string_field",
]

# Span.SpanKind values.
KIND_INTERNAL = 1
KIND_PRODUCER = 4
KIND_CONSUMER = 5

_SMALL = [bytes([n]) for n in range(128)]
_DOUBLE = struct.Struct("<d")
_MASK64 = (1 << 64) - 1


def varint(n: int) -> bytes:
    if n < 128:
        return _SMALL[n]
    out = bytearray()
    while n > 127:
        out.append((n & 127) | 128)
        n >>= 7
    out.append(n)
    return bytes(out)


def field(tag: bytes, payload: bytes) -> bytes:
    """A length-delimited field: its tag byte(s), the length, the bytes."""
    return tag + varint(len(payload)) + payload


def string_field(tag: bytes, text: str) -> bytes:
    return field(tag, text.encode("utf-8", "replace"))


def any_value(value: object) -> bytes:
    """common.v1.AnyValue for an attribute value (the types the API allows)."""
    if isinstance(value, str):
        return string_field(b"\x0a", value)
    if isinstance(value, bool):  # before int: bool is an int
        return b"\x10\x01" if value else b"\x10\x00"
    if isinstance(value, int):
        return b"\x18" + varint(value & _MASK64)  # int64, two's complement
    if isinstance(value, float):
        return b"\x21" + _DOUBLE.pack(value)
    if isinstance(value, bytes):
        return field(b"\x3a", value)
    if isinstance(value, Sequence):
        # ArrayValue{repeated AnyValue values = 1}
        return field(b"\x2a", b"".join(field(b"\x0a", any_value(v)) for v in value))
    return string_field(b"\x0a", str(value))


def key_value(key: str, value: object) -> bytes:
    """common.v1.KeyValue, without the enclosing field's tag."""
    return string_field(b"\x0a", key) + field(b"\x12", any_value(value))


def attribute(key: str, value: object, *, tag: bytes = b"\x4a") -> bytes:
    """One `attributes` entry; the default tag is Span.attributes (field 9)."""
    return field(tag, key_value(key, value))


def attributes(items: Mapping[str, object], *, tag: bytes = b"\x4a") -> bytes:
    return b"".join(attribute(k, v, tag=tag) for k, v in items.items())


def status_error(message: str) -> bytes:
    """Span.status (field 15) = Status{message, code: ERROR}."""
    return field(b"\x7a", string_field(b"\x12", message) + b"\x18\x02")


def event(
    name: str, time_ns: int, attrs: Mapping[str, object], *, dropped_attributes: int = 0
) -> bytes:
    """Span.events (field 11) = Event{time_unix_nano, name, attributes,
    dropped_attributes_count}."""
    body = b"\x09" + (time_ns & _MASK64).to_bytes(8, "little") + string_field(b"\x12", name)
    body += attributes(attrs, tag=b"\x1a")
    if dropped_attributes:
        body += b"\x20" + varint(dropped_attributes)
    return field(b"\x5a", body)


def exception_attributes(exc: BaseException) -> dict[str, object]:
    """The attributes of the `exception` span event of the semantic conventions."""
    return {
        "exception.type": type(exc).__qualname__,
        "exception.message": str(exc),
        "exception.stacktrace": "".join(traceback.format_exception(exc)),
        "exception.escaped": False,
    }


def resource_scope(
    resource: Mapping[str, object], scope_name: str, scope_version: str
) -> tuple[bytes, bytes]:
    """The head of a ResourceSpans up to its ScopeSpans: the same for every export."""
    res = attributes(resource, tag=b"\x0a")  # Resource.attributes (field 1)
    scope = string_field(b"\x0a", scope_name) + string_field(b"\x12", scope_version)
    return field(b"\x0a", res), field(b"\x0a", scope)


def encode_request(head: tuple[bytes, bytes], spans: Iterable[bytes]) -> bytes:
    """ExportTraceServiceRequest with one resource and one scope.

    `spans` are already `ScopeSpans.spans` entries (tag, length, Span).
    """
    # One join of all the parts: a batch is hundreds of kilobytes, and nesting
    # `field` calls would copy it once per level.
    resource, scope = head
    parts = [b"", resource, b"", scope, *spans]
    scope_spans_len = sum(len(part) for part in parts[3:])  # `spans` may be an iterator
    parts[2] = b"\x12" + varint(scope_spans_len)
    parts[0] = b"\x0a" + varint(len(resource) + len(parts[2]) + scope_spans_len)
    return b"".join(parts)


def describe(spans: Sequence[bytes]) -> list[dict[str, Any]]:
    """Decode our own span encodings back to dicts, for the `console` exporter.

    Reads only the fields this module writes.
    """
    return [_decode_span(_unwrap(s)) for s in spans]


def _read_varint(buf: bytes, i: int) -> tuple[int, int]:
    shift = result = 0
    while True:
        b = buf[i]
        i += 1
        result |= (b & 127) << shift
        if b < 128:
            return result, i
        shift += 7


def _fields(buf: bytes) -> Iterable[tuple[int, int | bytes]]:
    i = 0
    while i < len(buf):
        key, i = _read_varint(buf, i)
        number, wire = key >> 3, key & 7
        if wire == 0:
            value, i = _read_varint(buf, i)
            yield number, value
        elif wire == 1:
            yield number, int.from_bytes(buf[i : i + 8], "little")
            i += 8
        elif wire == 2:
            n, i = _read_varint(buf, i)
            yield number, buf[i : i + n]
            i += n
        elif wire == 5:
            yield number, int.from_bytes(buf[i : i + 4], "little")
            i += 4
        else:
            raise ValueError(f"wire type {wire}")


def _unwrap(entry: bytes) -> bytes:
    (_, span), *_ = _fields(entry)
    if not isinstance(span, bytes):
        raise ValueError("not a ScopeSpans.spans entry")
    return span


def _decode_any(buf: bytes) -> object:
    for number, value in _fields(buf):
        if number == 1 and isinstance(value, bytes):
            return value.decode("utf-8", "replace")
        if number == 2:
            return bool(value)
        if number == 3 and isinstance(value, int):
            return value - (1 << 64) if value >> 63 else value
        if number == 4 and isinstance(value, bytes):
            return _DOUBLE.unpack(value)[0]
        if number == 5 and isinstance(value, bytes):
            return [_decode_any(v) for _, v in _fields(value) if isinstance(v, bytes)]
        if number == 7:
            return value
    return None


def _decode_kv(buf: bytes) -> tuple[str, object]:
    key, value = "", None
    for number, raw in _fields(buf):
        if number == 1 and isinstance(raw, bytes):
            key = raw.decode()
        elif number == 2 and isinstance(raw, bytes):
            value = _decode_any(raw)
    return key, value


_KINDS = {1: "INTERNAL", 2: "SERVER", 3: "CLIENT", 4: "PRODUCER", 5: "CONSUMER"}


#: Span fields that are ids, shown in hex.
_IDS = {1: "trace_id", 2: "span_id", 4: "parent_span_id"}
#: Span fields that are numbers: the kind, the start and end times.
_NUMBERS = {6: "kind", 7: "start_time_unix_nano", 8: "end_time_unix_nano"}


def _decode_event(buf: bytes) -> dict[str, Any]:
    event: dict[str, Any] = {}
    for number, value in _fields(buf):
        if number == 2 and isinstance(value, bytes):
            event["name"] = value.decode()
        elif number == 3 and isinstance(value, bytes):
            key, item = _decode_kv(value)
            event[key] = item
    return event


def _decode_message(out: dict[str, Any], number: int, value: bytes) -> None:
    """A length-delimited field of a Span into `out`."""
    if number in _IDS:
        out[_IDS[number]] = value.hex()
    elif number == 5:
        out["name"] = value.decode()
    elif number == 9:
        key, item = _decode_kv(value)
        out["attributes"][key] = item
    elif number == 11:
        out.setdefault("events", []).append(_decode_event(value))
    elif number == 15:
        out["status"] = {
            ("message" if n == 2 else "code"): (v.decode() if isinstance(v, bytes) else v)
            for n, v in _fields(value)
        }


def _decode_span(buf: bytes) -> dict[str, Any]:
    out: dict[str, Any] = {"attributes": {}}
    for number, value in _fields(buf):
        if isinstance(value, bytes):
            _decode_message(out, number, value)
        elif number in _NUMBERS:
            out[_NUMBERS[number]] = _KINDS.get(value, str(value)) if number == 6 else value
    return out
