"""An OTLP/HTTP trace collector stub for the benchmarks: ``python -m bench.otlp_collector``.

It runs in a process of its own, as a real collector would, prints its URL on
stdout, keeps the bodies POSTed to ``/v1/traces`` (HTTP/1.1, keep-alive) and,
on ``GET /counts``, decodes them (off the clock) and answers the spans received
since the last call, by kind, as JSON.

It is a bare asyncio protocol rather than a web framework: it stands in for a
collector on another machine, so the CPU it takes from the two processes being
measured should be as little as receiving the bytes costs.
"""

from __future__ import annotations

import asyncio
import contextlib
import json

_OK = b"HTTP/1.1 200 OK\r\nContent-Type: application/x-protobuf\r\nContent-Length: 0\r\n\r\n"


def count_spans(bodies: list[memoryview | bytearray]) -> dict[str, int]:
    """Spans in these ExportTraceServiceRequest bodies, by kind."""
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
        ExportTraceServiceRequest,
    )
    from opentelemetry.proto.trace.v1.trace_pb2 import Span

    found = {"producer": 0, "consumer": 0, "other": 0, "redelivered": 0}
    for body in bodies:
        req = ExportTraceServiceRequest()
        req.ParseFromString(bytes(body))
        for rs in req.resource_spans:
            for ss in rs.scope_spans:
                for s in ss.spans:
                    if s.kind == Span.SPAN_KIND_PRODUCER:
                        found["producer"] += 1
                    elif s.kind == Span.SPAN_KIND_CONSUMER:
                        found["consumer"] += 1
                        # Redeliveries would mean the worker fell behind its ack wait.
                        found["redelivered"] += any(
                            kv.key == "messaging.nats.delivery_count" and kv.value.int_value > 1
                            for kv in s.attributes
                        )
                    else:
                        found["other"] += 1
    return found


class Bodies:
    """The request bodies received, in one arena allocated (and so paged in) at the
    start, off the clock: receiving a batch then costs the copy out of the socket,
    not a fresh buffer's zeroing and page faults. Bodies that do not fit get
    buffers of their own."""

    def __init__(self, arena_bytes: int) -> None:
        self.arena = bytearray(arena_bytes)
        self.used = 0
        self.kept: list[memoryview | bytearray] = []

    def buffer(self, length: int) -> memoryview | bytearray:
        """Where the next body (`length` bytes) goes; kept once it is filled."""
        if self.used + length <= len(self.arena):
            buf: memoryview | bytearray = memoryview(self.arena)[self.used : self.used + length]
            self.used += length
        else:
            buf = bytearray(length)
        self.kept.append(buf)
        return buf

    def take(self) -> list[memoryview | bytearray]:
        """The bodies so far; the arena is then free for the next ones."""
        out, self.kept = self.kept, []
        self.used = 0
        return out


class _Http(asyncio.BufferedProtocol):
    """HTTP/1.1 with keep-alive, one request at a time (as OTLP exporters send).

    A buffered protocol: the body of a request is received straight into its
    place in `Bodies`, so the stub copies nothing itself.
    """

    def __init__(self, bodies: Bodies) -> None:
        self.bodies = bodies
        self.transport: asyncio.Transport | None = None
        self.head = bytearray(16384)
        self.head_len = 0
        #: The request whose body is being read: method, path, body, bytes in it.
        self.body: memoryview | bytearray | None = None
        self.body_len = 0
        self.method = self.path = ""
        #: Whether that request is an export (its body is kept).
        self.export = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def get_buffer(self, sizehint: int) -> memoryview:
        if self.body is not None:
            return memoryview(self.body)[self.body_len :]
        if self.head_len == len(self.head):
            self.head.extend(bytes(len(self.head)))  # a head longer than usual
        return memoryview(self.head)[self.head_len :]

    def buffer_updated(self, nbytes: int) -> None:
        if self.body is not None:
            self.body_len += nbytes
        else:
            self.head_len += nbytes
            end = self.head.find(b"\r\n\r\n", 0, self.head_len)
            if end < 0:
                return
            lines = bytes(self.head[:end]).decode("latin-1").split("\r\n")
            self.method, self.path, _ = lines[0].split(" ", 2)
            self.export = self.method == "POST" and self.path == "/v1/traces"
            length = 0
            for line in lines[1:]:
                name, _, value = line.partition(":")
                if name.strip().lower() == "content-length":
                    length = int(value)
            extra = self.head[end + 4 : self.head_len]
            self.body = self.bodies.buffer(length) if self.export else bytearray(length)
            self.body[: len(extra)] = extra
            self.body_len = len(extra)
            self.head_len = 0
        if self.body_len >= len(self.body):
            self.body = None
            self._answer()

    def _answer(self) -> None:
        assert self.transport is not None
        if self.export:
            self.transport.write(_OK)
            return
        if self.method == "GET" and self.path == "/counts":
            answer = json.dumps(count_spans(self.bodies.take())).encode()
            status = b"200 OK"
        else:
            answer, status = b"not found", b"404 Not Found"
        self.transport.write(
            b"HTTP/1.1 "
            + status
            + b"\r\nContent-Length: %d\r\nConnection: close\r\n\r\n" % len(answer)
            + answer
        )
        self.transport.close()


#: Room for a unit's spans (two per message, about 400 bytes each) and more.
ARENA_BYTES = 256 * 1024 * 1024


def main() -> None:
    bodies = Bodies(ARENA_BYTES)

    async def serve() -> None:
        loop = asyncio.get_running_loop()
        server = await loop.create_server(lambda: _Http(bodies), "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        print(f"http://127.0.0.1:{port}", flush=True)
        await server.serve_forever()

    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(serve())


if __name__ == "__main__":
    main()
