"""Message search: a read-only peek into a mailbox or the dead-letter stream.

Only JetStream's stream message get (`$JS.API.STREAM.MSG.GET`, by sequence or
`next_by_subj`) is used: no consumer is created, so nothing is delivered, acked or
consumed, and it works on work-queue mailboxes too (where a second, unfiltered
consumer would be refused, and an acking one would take the messages away).

Limits, so one search costs a bounded number of broker round trips:

- by sequence: one get;
- by key: the key's subject (`<prefix>.mbox.<type>.<key>`, or `...<type>.*.<key>`
  on a partitioned mailbox) is walked from the oldest message with `next_by_subj`,
  one get per match, at most `SCAN_LIMIT` gets; in the dead-letter stream the key
  is in the `Am-Original-Subject` header, so the newest `SCAN_LIMIT` dead letters
  (of the type) are read;
- by `Nats-Msg-Id` (for a dead letter, its own `<stream>:<seq>` or the sender's,
  kept in `Am-Original-Msg-Id`): there is no index, so the newest `SCAN_LIMIT` (10,000)
  messages of the mailbox (or the type's dead letters) are read and compared;
  an older message is not found, and the answer says the scan was cut short;
- at most `limit` (20 by default, 100 at most) messages are returned, each with
  its headers and the first `PREVIEW_BYTES` (4 KiB) of its payload: text when it
  is UTF-8, otherwise a hex dump (the page shows it as text, never as HTML).
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any, Literal

import msgspec
import nats.errors
import nats.js.errors
from nats.js import JetStreamContext
from nats.js.api import RawStreamMsg

from actormesh import ActorMeshError
from actormesh.lowlevel import Hdr, Subjects, check_actor_type, check_key

__all__ = [
    "PREVIEW_BYTES",
    "SCAN_LIMIT",
    "FoundMessage",
    "SearchError",
    "SearchQuery",
    "SearchResult",
    "preview",
    "search",
    "trace_id_of",
]

#: Stream message gets one search may make.
SCAN_LIMIT = 10_000
#: Payload bytes shown per message.
PREVIEW_BYTES = 4096
MAX_RESULTS = 100

Where = Literal["mailbox", "dlq"]
By = Literal["key", "id", "seq"]

# W3C trace context: version-traceid-parentid-flags; an all-zero trace id is invalid.
_TRACEPARENT = re.compile(r"^[0-9a-f]{2}-([0-9a-f]{32})-[0-9a-f]{16}-[0-9a-f]{2}$")


class SearchError(ActorMeshError):
    """A search that cannot run: a bad query (`status` 400) or no such stream (404)."""

    code = "search_error"

    def __init__(self, message: str, *, status: int = 400) -> None:
        super().__init__(message)
        self.status = status

    def fields(self) -> dict[str, Any]:
        return {**super().fields(), "status": self.status}


@dataclass(frozen=True, kw_only=True, slots=True)
class SearchQuery:
    where: Where
    by: By
    value: str
    #: The actor type: required for a mailbox, optional for the dead letters.
    actor_type: str = ""
    limit: int = 20


class FoundMessage(msgspec.Struct, kw_only=True):
    stream: str
    seq: int
    subject: str
    #: When the broker stored it (unix seconds; 0 when unknown).
    time: float
    size: int
    headers: dict[str, str]
    #: "text" or "hex" (a hex dump of a binary payload).
    encoding: str
    preview: str
    truncated: bool
    msg_id: str = ""
    trace_id: str = ""
    key: str = ""


class SearchResult(msgspec.Struct, kw_only=True):
    stream: str
    messages: list[FoundMessage]
    #: Stream message gets made.
    scanned: int
    #: True when the scan stopped at `SCAN_LIMIT` (or `limit`) before the end.
    incomplete: bool
    scan_limit: int = SCAN_LIMIT
    preview_bytes: int = PREVIEW_BYTES


def trace_id_of(headers: dict[str, str]) -> str:
    """The trace id of a W3C `traceparent` header, or "" when there is none."""
    m = _TRACEPARENT.match(headers.get(Hdr.TRACEPARENT, "").strip().lower())
    if m is None or m.group(1) == "0" * 32:
        return ""
    return m.group(1)


def preview(data: bytes, limit: int = PREVIEW_BYTES) -> tuple[str, str, bool]:
    """(encoding, text, truncated) for the first `limit` bytes of a payload."""
    chunk = data[:limit]
    truncated = len(data) > limit
    try:
        text = chunk.decode("utf-8")
    except UnicodeDecodeError as exc:
        # A cut through the last character is still text; anything else is binary.
        if not (
            truncated and exc.start >= len(chunk) - 3 and exc.reason == "unexpected end of data"
        ):
            return "hex", _hexdump(chunk), truncated
        text = chunk[: exc.start].decode("utf-8")
    if any(ord(c) < 32 and c not in "\t\n\r" for c in text):
        return "hex", _hexdump(chunk), truncated
    return "text", text, truncated


def _hexdump(data: bytes) -> str:
    lines = []
    for off in range(0, len(data), 16):
        row = data[off : off + 16]
        hexes = " ".join(f"{b:02x}" for b in row)
        text = "".join(chr(b) if 32 <= b < 127 else "." for b in row)
        lines.append(f"{off:08x}  {hexes:<47}  |{text}|")
    return "\n".join(lines)


def _found(raw: RawStreamMsg, stream: str, key: str) -> FoundMessage:
    headers = {str(k): str(v) for k, v in (raw.headers or {}).items()}
    data = raw.data or b""
    encoding, text, truncated = preview(data)
    return FoundMessage(
        stream=stream,
        seq=raw.seq or 0,
        subject=raw.subject or "",
        time=raw.time.timestamp() if raw.time is not None else 0.0,
        size=len(data),
        headers=headers,
        encoding=encoding,
        preview=text,
        truncated=truncated,
        msg_id=headers.get(Hdr.ORIGINAL_MSG_ID) or headers.get(Hdr.MSG_ID, ""),
        trace_id=trace_id_of(headers),
        key=key,
    )


class _Scan:
    """Stream message gets over one filter subject, counted against one budget."""

    def __init__(self, js: JetStreamContext, stream: str, budget: int) -> None:
        self.js = js
        self.stream = stream
        self.budget = budget
        self.scanned = 0
        self.cut = False

    async def get(self, seq: int) -> RawStreamMsg | None:
        self.scanned += 1
        try:
            return await self.js.get_msg(self.stream, seq=seq)
        except nats.js.errors.NotFoundError:
            return None

    async def walk(self, subject: str, start: int, last: int) -> AsyncIterator[RawStreamMsg]:
        """Yield the messages on `subject` from `start` on, oldest first."""
        seq = max(1, start)
        while seq <= last:
            if self.scanned >= self.budget:
                self.cut = True
                return
            self.scanned += 1
            try:
                raw = await self.js.get_msg(self.stream, seq=seq, subject=subject, next=True)
            except nats.js.errors.NotFoundError:
                return
            if raw.seq is None:
                return
            yield raw
            seq = raw.seq + 1


async def search(js: JetStreamContext, subjects: Subjects, query: SearchQuery) -> SearchResult:
    """Run one read-only search; `SearchError` for a bad query or a missing stream."""
    q = _checked(query)
    stream = subjects.dlq_stream if q.where == "dlq" else subjects.mailbox_stream(q.actor_type)
    try:
        info = await js.stream_info(stream)
    except nats.js.errors.NotFoundError:
        raise SearchError(f"no stream {stream}", status=404) from None
    except (nats.errors.Error, TimeoutError) as exc:
        raise SearchError(f"broker: {exc!r}", status=503) from None
    first, last = info.state.first_seq, info.state.last_seq
    scan = _Scan(js, stream, SCAN_LIMIT)
    found: list[FoundMessage] = []
    if q.by == "seq":
        raw = await scan.get(int(q.value))
        if raw is not None and _in_scope(raw, q, subjects):
            found.append(_found(raw, stream, _key_of(raw, q, subjects)))
        return SearchResult(stream=stream, messages=found, scanned=scan.scanned, incomplete=False)
    for subject in _filters(q, subjects):
        # By id, and by key in the dead letters, nothing narrows the scan: the newest
        # messages are read. By key in a mailbox, the key's subject is the filter.
        start = first if q.by == "key" and q.where == "mailbox" else last - SCAN_LIMIT + 1
        async for raw in scan.walk(subject, max(first, start), last):
            if _matches(raw, q, subjects):
                found.append(_found(raw, stream, _key_of(raw, q, subjects)))
                if len(found) >= q.limit:
                    scan.cut = True
                    break
        if len(found) >= q.limit:
            break
    found.sort(key=lambda m: m.seq)
    return SearchResult(
        stream=stream, messages=found[: q.limit], scanned=scan.scanned, incomplete=scan.cut
    )


def _checked(q: SearchQuery) -> SearchQuery:
    if q.where not in ("mailbox", "dlq"):
        raise SearchError("where is mailbox or dlq")
    if q.by not in ("key", "id", "seq"):
        raise SearchError("by is key, id or seq")
    value = q.value.strip()
    if not value:
        raise SearchError("give something to search for")
    if q.where == "mailbox" and not q.actor_type:
        raise SearchError("a mailbox search needs the actor type")
    try:
        if q.actor_type:
            check_actor_type(q.actor_type)
        if q.by == "key":
            check_key(value)
    except ActorMeshError as exc:
        raise SearchError(str(exc)) from None
    if q.by == "seq" and not (value.isdigit() and int(value) >= 1):
        raise SearchError("a stream sequence is a whole number from 1")
    limit = max(1, min(MAX_RESULTS, q.limit))
    return SearchQuery(where=q.where, by=q.by, value=value, actor_type=q.actor_type, limit=limit)


def _filters(q: SearchQuery, subjects: Subjects) -> list[str]:
    if q.where == "dlq":
        return [subjects.dlq(q.actor_type) if q.actor_type else f"{subjects.prefix}.dlq.>"]
    base = subjects.mailbox_base(q.actor_type)
    if q.by == "key":
        # Unpartitioned, then partitioned (`<base><partition>.<key>`) mailboxes.
        return [f"{base}{q.value}", f"{base}*.{q.value}"]
    return [f"{base}>"]


def _original_key(headers: dict[str, str]) -> str:
    original = headers.get(Hdr.ORIGINAL_SUBJECT, "")
    return original.rsplit(".", 1)[-1] if original else ""


def _key_of(raw: RawStreamMsg, q: SearchQuery, subjects: Subjects) -> str:
    if q.where == "dlq":
        return _original_key(raw.headers or {})
    subject = raw.subject or ""
    return subject.rsplit(".", 1)[-1] if subject.startswith(f"{subjects.prefix}.mbox.") else ""


def _matches(raw: RawStreamMsg, q: SearchQuery, subjects: Subjects) -> bool:
    headers = raw.headers or {}
    if q.by == "id":
        # A dead letter's own id is `<stream>:<seq>`; the sender's is kept aside.
        return q.value in (headers.get(Hdr.MSG_ID), headers.get(Hdr.ORIGINAL_MSG_ID))
    if q.where == "dlq":
        return _original_key(headers) == q.value
    return True  # the filter subject already names the key


def _in_scope(raw: RawStreamMsg, q: SearchQuery, subjects: Subjects) -> bool:
    """A message got by sequence belongs to the type asked about (dead letters)."""
    if q.where == "dlq" and q.actor_type:
        return (raw.subject or "") == subjects.dlq(q.actor_type)
    return True
