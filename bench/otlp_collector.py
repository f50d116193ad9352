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


def count_spans(bodies: list[bytes]) -> dict[str, int]:
    """Spans in these ExportTraceServiceRequest bodies, by kind."""
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
        ExportTraceServiceRequest,
    )
    from opentelemetry.proto.trace.v1.trace_pb2 import Span

    found = {"producer": 0, "consumer": 0, "other": 0, "redelivered": 0}
    for body in bodies:
        req = ExportTraceServiceRequest()
        req.ParseFromString(body)
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


class _Http(asyncio.Protocol):
    def __init__(self, bodies: list[bytes]) -> None:
        self.bodies = bodies
        self.buffer = bytearray()
        self.transport: asyncio.Transport | None = None
        #: (method, path, body length) of a request whose head is read, or None.
        self.pending: tuple[str, str, int] | None = None
        #: Where the current body starts in the buffer.
        self.body_at = 0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        while self._one_request():
            pass

    def _one_request(self) -> bool:
        """Answer the first request in the buffer if it is all there."""
        assert self.transport is not None
        if self.pending is None:
            # Only a request's head is searched: a body is hundreds of kilobytes.
            end = self.buffer.find(b"\r\n\r\n", 0, 8192)
            if end < 0:
                return False
            head = bytes(self.buffer[:end]).decode("latin-1").split("\r\n")
            method, path, _ = head[0].split(" ", 2)
            length = 0
            for line in head[1:]:
                name, _, value = line.partition(":")
                if name.strip().lower() == "content-length":
                    length = int(value)
            self.pending, self.body_at = (method, path, length), end + 4
        method, path, length = self.pending
        if len(self.buffer) < self.body_at + length:
            return False
        body = bytes(self.buffer[self.body_at : self.body_at + length])
        del self.buffer[: self.body_at + length]
        self.pending = None
        if method == "POST" and path == "/v1/traces":
            self.bodies.append(body)
            self.transport.write(_OK)
            return True
        if method == "GET" and path == "/counts":
            answer = json.dumps(count_spans(self.bodies)).encode()
            self.bodies.clear()
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
        return False


def main() -> None:
    bodies: list[bytes] = []

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
