"""The OTLP exporter's transport (`HttpSender` over `http.client`), against real
sockets: scripted answers, servers that close or stall, and TLS (with
trustme's throwaway CA)."""

from __future__ import annotations

import socket
import ssl
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import trustme

from actormesh import ConfigError
from actormesh.observability import TracingConfig, TracingPipeline
from actormesh.observability._sender import ExportFailed, HttpSender

OK = b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"

#: An answer: the bytes to send (in these pieces), then whether to close.
Answer = tuple[list[bytes], bool]


class Request:
    def __init__(self, head: bytes, body: bytes, connection: int) -> None:
        lines = head.decode("latin-1").split("\r\n")
        self.line = lines[0]
        self.names = [line.partition(":")[0].lower() for line in lines[1:]]
        self.headers = {}
        for line in lines[1:]:
            name, _, value = line.partition(":")
            self.headers[name.lower()] = value.strip()
        self.body = body
        self.connection = connection


class Server:
    """A TCP (or TLS) server that reads each request whole and answers as scripted:
    `answers` are used in turn, the last one for every request after."""

    def __init__(self, answers: list[Answer], tls: ssl.SSLContext | None = None) -> None:
        self.answers = answers
        self.tls = tls
        self.requests: list[Request] = []
        self.connections = 0
        self.errors: list[BaseException] = []
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return
            self.connections += 1
            threading.Thread(
                target=self._handle, args=(conn, self.connections), daemon=True
            ).start()

    def _handle(self, conn: socket.socket, number: int) -> None:
        try:
            if self.tls is not None:
                conn = self.tls.wrap_socket(conn, server_side=True)
            buf = b""
            while True:
                while b"\r\n\r\n" not in buf:
                    chunk = conn.recv(65536)
                    if not chunk:
                        return
                    buf += chunk
                head, _, buf = buf.partition(b"\r\n\r\n")
                request = Request(head, b"", number)
                length = int(request.headers.get("content-length", "0"))
                while len(buf) < length:
                    chunk = conn.recv(65536)
                    if not chunk:
                        return
                    buf += chunk
                request.body, buf = buf[:length], buf[length:]
                self.requests.append(request)
                index = min(len(self.requests), len(self.answers)) - 1
                pieces, close = self.answers[index]
                for piece in pieces:
                    conn.sendall(piece)
                    if len(pieces) > 1:
                        time.sleep(0.001)
                if close:
                    return
        except (OSError, ssl.SSLError) as exc:
            self.errors.append(exc)
        finally:
            conn.close()

    @property
    def url(self) -> str:
        scheme = "https" if self.tls is not None else "http"
        return f"{scheme}://localhost:{self.port}/v1/traces"

    def close(self) -> None:
        self.listener.close()


@pytest.fixture
def serve() -> Iterator[Callable[..., Server]]:
    made: list[Server] = []

    def factory(answers: list[Answer], tls: ssl.SSLContext | None = None) -> Server:
        made.append(Server(answers, tls))
        return made[-1]

    yield factory
    for server in made:
        server.close()


def sender(
    server: Server, *, timeout: float = 0.3, headers: dict[str, str] | None = None
) -> HttpSender:
    """A sender to `server`; by default it gives up at the first failure (the
    backoff is longer than its timeout)."""
    return HttpSender(server.url, timeout=timeout, headers=headers)


def test_a_request_is_a_post_with_its_headers_and_the_whole_body(
    serve: Callable[..., Server],
) -> None:
    server = serve([([OK], False)])
    client = sender(server, headers={"x-key": ""}, timeout=5.0)
    # Larger than a socket's send buffer: sent in parts.
    body = bytes(range(256)) * 16384
    try:
        client.send(body)
    finally:
        client.close()
    (request,) = server.requests
    assert request.line == "POST /v1/traces HTTP/1.1"
    assert request.headers["host"] == f"localhost:{server.port}"
    assert request.headers["content-type"] == "application/x-protobuf"
    assert request.headers["x-key"] == ""
    assert request.headers["content-length"] == str(len(body))
    assert request.body == body


@pytest.mark.parametrize(
    "pieces",
    [
        [b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello"],
        [
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
            b"3;ext=1\r\nhel\r\n2\r\nlo\r\n0\r\nX-Trailer: 1\r\n\r\n"
        ],
        [b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"],
        [b"HTTP/1.1 204 No Content\r\n\r\n"],
        # One byte at a time: every boundary falls inside a read.
        [bytes([b]) for b in b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nabc"],
    ],
    ids=["length", "chunked", "continue", "no-content", "byte-by-byte"],
)
def test_answers_are_read_whole_and_the_connection_is_kept(
    serve: Callable[..., Server], pieces: list[bytes]
) -> None:
    server = serve([(pieces, False)])
    client = sender(server)
    try:
        client.send(b"one")
        assert client.connected
        client.send(b"two")
    finally:
        client.close()
    assert [r.body for r in server.requests] == [b"one", b"two"]
    assert server.connections == 1


@pytest.mark.parametrize(
    "answer",
    [
        b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 0\r\n\r\n",
        b"HTTP/1.0 200 OK\r\nContent-Length: 0\r\n\r\n",
        b"HTTP/1.1 200 OK\r\n\r\nuntil the end",
    ],
    ids=["connection-close", "http-1.0", "body-to-the-end"],
)
def test_a_server_that_closes_gets_a_new_connection_per_request(
    serve: Callable[..., Server], answer: bytes
) -> None:
    server = serve([([answer], True)])
    client = sender(server)
    try:
        client.send(b"one")
        assert not client.connected
        client.send(b"two")
    finally:
        client.close()
    assert [r.connection for r in server.requests] == [1, 2]


def test_a_kept_alive_connection_closed_while_idle_is_replaced_without_an_error(
    serve: Callable[..., Server],
) -> None:
    # The server closes after answering but says nothing: the client learns it
    # only when its next request gets no answer.
    server = serve([([OK], True)])
    client = sender(server, timeout=5.0)
    try:
        client.send(b"one")
        assert client.connected
        time.sleep(0.05)
        started = time.monotonic()
        client.send(b"two")
        assert time.monotonic() - started < 0.4  # at once, not after a backoff
    finally:
        client.close()
    assert [(r.body, r.connection) for r in server.requests] == [(b"one", 1), (b"two", 2)]


@pytest.mark.parametrize(
    "pieces",
    [
        [b"SSH-2.0-OpenSSH_9.6\r\n\r\n"],
        [b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n"],
        [b"HTTP/1.1 200 OK\r\nX: " + b"a" * 70000],
        [],
    ],
    ids=["not-http", "bad-chunk", "huge-head", "no-answer"],
)
def test_what_is_not_an_http_answer_is_a_retryable_failure_and_closes(
    serve: Callable[..., Server], pieces: list[bytes]
) -> None:
    server = serve([(pieces, True)])
    client = sender(server)
    try:
        with pytest.raises(ExportFailed) as info:
            client.send(b"payload")
        assert info.value.retryable
        assert not client.connected
    finally:
        client.close()


def test_a_silent_server_times_out(serve: Callable[..., Server]) -> None:
    server = serve([([], False)])
    client = sender(server)
    started = time.monotonic()
    try:
        with pytest.raises(ExportFailed, match="timed out") as info:
            client.send(b"payload")
    finally:
        client.close()
    assert info.value.retryable
    assert time.monotonic() - started < 3.0
    assert not client.connected


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"headers": {"x-evil": "a\r\nInjected: 1"}}, "line break"),
        ({"headers": {"x-evil\n": "v"}}, "line break"),
        ({"headers": {"bad name": "v"}}, "not a token"),
        ({"headers": {"": "v"}}, "empty"),
        ({"endpoint": "http://127.0.0.1:4318/v1/traces x"}, "space"),
        ({"endpoint": "grpc://127.0.0.1:4317"}, "not an http"),
        ({"endpoint": "http://127.0.0.1:99999/v1/traces"}, "out of range"),
    ],
)
def test_a_header_or_endpoint_that_would_break_the_request_is_a_config_error(
    kwargs: dict[str, Any], match: str
) -> None:
    endpoint = kwargs.pop("endpoint", "http://127.0.0.1:4318/v1/traces")
    with pytest.raises(ConfigError, match=match):
        HttpSender(endpoint, **kwargs)


def test_the_sender_names_itself_unless_the_headers_do(serve: Callable[..., Server]) -> None:
    server = serve([([OK], False)])
    for headers in ({}, {"user-agent": "mine/1"}):
        client = HttpSender(server.url, headers=headers)
        try:
            client.send(b"payload")
        finally:
            client.close()
    default, own = server.requests
    assert default.headers["user-agent"].startswith("actormesh-OTLP-Exporter-Python/")
    assert own.headers["user-agent"] == "mine/1"
    assert own.names.count("user-agent") == 1


# -- TLS --------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


def server_tls(ca: trustme.CA, *, require_client: bool = False) -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("localhost").configure_cert(context)
    if require_client:
        context.verify_mode = ssl.CERT_REQUIRED
        ca.configure_trust(context)
    return context


def test_https_with_the_collectors_ca_from_the_environment(
    serve: Callable[..., Server], ca: trustme.CA, tmp_path: Path
) -> None:
    server = serve([([OK], False)], tls=server_tls(ca))
    ca_file = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    config = TracingConfig.from_env(
        {
            "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": server.url,
            "OTEL_EXPORTER_OTLP_CERTIFICATE": str(ca_file),
        }
    )
    assert config.certificate == str(ca_file)
    pipeline = TracingPipeline(config, service_name="svc")
    try:
        pipeline.record(b"\x12\x00")
        assert pipeline.force_flush(10)
    finally:
        pipeline.shutdown()
    assert pipeline.stats().exported == 1
    assert len(server.requests) == 1
    assert server.requests[0].body.startswith(b"\x0a")  # an ExportTraceServiceRequest


def test_https_to_an_untrusted_collector_fails_at_once_and_says_what_to_set(
    serve: Callable[..., Server], ca: trustme.CA
) -> None:
    server = serve([([OK], False)], tls=server_tls(ca))
    sender = HttpSender(server.url, timeout=5.0)
    started = time.monotonic()
    with pytest.raises(ExportFailed, match="OTEL_EXPORTER_OTLP_CERTIFICATE") as info:
        sender.send(b"payload")
    assert not info.value.retryable
    assert time.monotonic() - started < 2.0  # no backoff: retrying cannot help
    assert server.requests == []


def test_mutual_tls_with_a_client_certificate(
    serve: Callable[..., Server], ca: trustme.CA, tmp_path: Path
) -> None:
    server = serve([([OK], False)], tls=server_tls(ca, require_client=True))
    ca_file, cert_file, key_file = tmp_path / "ca.pem", tmp_path / "c.pem", tmp_path / "k.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    client = ca.issue_cert("client@example.com")
    client.cert_chain_pems[0].write_to_path(str(cert_file))
    client.private_key_pem.write_to_path(str(key_file))
    config = TracingConfig.from_env(
        {
            "OTEL_EXPORTER_OTLP_ENDPOINT": server.url.removesuffix("/v1/traces"),
            "OTEL_EXPORTER_OTLP_TRACES_CERTIFICATE": str(ca_file),
            "OTEL_EXPORTER_OTLP_CERTIFICATE": "/nonexistent/ignored.pem",
            "OTEL_EXPORTER_OTLP_CLIENT_CERTIFICATE": str(cert_file),
            "OTEL_EXPORTER_OTLP_CLIENT_KEY": str(key_file),
        }
    )
    assert config.certificate == str(ca_file)  # TRACES_ wins
    sender = HttpSender(
        config.endpoint,
        certificate=config.certificate,
        client_certificate=config.client_certificate,
        client_key=config.client_key,
    )
    try:
        sender.send(b"payload")
    finally:
        sender.close()
    assert [r.body for r in server.requests] == [b"payload"]

    without = HttpSender(config.endpoint, certificate=config.certificate, timeout=0.5)
    with pytest.raises(ExportFailed):
        without.send(b"refused")
    assert [r.body for r in server.requests] == [b"payload"]


@pytest.mark.parametrize(
    ("env", "match"),
    [
        ({"OTEL_EXPORTER_OTLP_CERTIFICATE": "/nonexistent/ca.pem"}, "TLS files"),
        ({"OTEL_EXPORTER_OTLP_CLIENT_KEY": "/some/key.pem"}, "client key needs"),
    ],
)
def test_unusable_tls_files_are_a_config_error_at_startup(env: dict[str, str], match: str) -> None:
    config = TracingConfig.from_env(
        {"OTEL_EXPORTER_OTLP_ENDPOINT": "https://collector:4318", **env}
    )
    with pytest.raises(ConfigError, match=match):
        TracingPipeline(config, service_name="svc")
