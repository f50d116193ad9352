"""A small blocking HTTP/1.1 client: POSTs over one kept-alive connection.

The OTLP exporter's transport, run in the export thread. `http.client` costs
about 100 µs of CPU per request before the body matters (it builds the request
line by line and parses the response headers with the `email` package), and
tracing every message exports a request every few milliseconds from each
process. This client writes a request in one system call and reads the few
response headers an exporter needs, which takes a fraction of that.

What it understands of a response: the status line, `Content-Length`,
chunked bodies, bodies up to the end of the connection, interim 1xx
answers, and `Connection: close` / HTTP/1.0. Anything else that is not HTTP
is a `ProtocolError`.
"""

from __future__ import annotations

import socket
import ssl
from collections.abc import Mapping
from typing import NamedTuple

from .._errors import ConfigError

__all__ = ["Http1Connection", "HttpResponse", "ProtocolError", "tls_context"]

#: Bounds on what a collector may answer: OTLP answers are a few bytes (an empty
#: or partial-success message), so anything near these is not a collector.
MAX_HEAD = 64 * 1024
MAX_BODY = 4 * 1024 * 1024
_RECV = 65536


class ProtocolError(Exception):
    """The answer was not HTTP/1.x, or broke off."""


class _ClosedEarly(ProtocolError):
    """The connection closed before any byte of an answer."""


class HttpResponse(NamedTuple):
    status: int
    #: Names in lower case; a repeated header's values joined with ", ".
    headers: dict[str, str]
    body: bytes


def tls_context(
    *,
    certificate: str | None = None,
    client_certificate: str | None = None,
    client_key: str | None = None,
) -> ssl.SSLContext:
    """A verifying client context: the system's CAs, or the CA file `certificate`;
    with `client_certificate` (and `client_key`, when the key is a file of its
    own) for mutual TLS. A file that cannot be read is a `ConfigError`."""
    if client_key and not client_certificate:
        raise ConfigError("a TLS client key needs its client certificate as well")
    try:
        context = ssl.create_default_context(cafile=certificate)
        if client_certificate:
            context.load_cert_chain(client_certificate, client_key)
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError(f"TLS files for the OTLP exporter: {exc}") from exc
    return context


def _check_text(text: str, what: str, *, empty_ok: bool = False) -> str:
    if any(c in text for c in "\r\n\0") or not (text or empty_ok):
        raise ConfigError(f"HTTP {what} {text!r} is empty or holds a line break")
    return text


class Http1Connection:
    """One connection to `host:port` (by default 80, or 443 with `tls`), opened on
    first use and kept alive.

    `post` sends one request and reads its answer. A kept-alive connection the
    server closed while idle is noticed when the answer does not come, and the
    request is sent once more on a new connection; any other failure closes the
    connection and raises `OSError` (timeouts and TLS errors included) or
    `ProtocolError`.
    """

    def __init__(
        self,
        host: str,
        port: int | None,
        *,
        timeout: float,
        tls: ssl.SSLContext | None = None,
        path: str = "/",
        headers: Mapping[str, str] | None = None,
    ) -> None:
        default_port = 443 if tls is not None else 80
        self._address = (host, default_port if port is None else port)
        self._timeout = timeout
        self._tls = tls
        authority = f"[{host}]" if ":" in host else host
        if port not in (None, default_port):
            authority += f":{port}"
        if " " in path:
            raise ConfigError(f"HTTP path {path!r} holds a space")
        lines = [f"POST {_check_text(path, 'path')} HTTP/1.1", f"Host: {authority}"]
        for name, value in (headers or {}).items():
            if ":" in name or " " in name:
                raise ConfigError(f"HTTP header name {name!r} is not a token")
            _check_text(name, "header name")
            lines.append(f"{name}: {_check_text(value, 'header value', empty_ok=True)}")
        #: Everything of a request's head but its length: the same for every request.
        self._head = ("\r\n".join(lines) + "\r\nContent-Length: ").encode("latin-1")
        self._sock: socket.socket | None = None
        self._buf = bytearray()

    @property
    def connected(self) -> bool:
        return self._sock is not None

    def close(self) -> None:
        sock, self._sock = self._sock, None
        self._buf.clear()
        if sock is not None:
            sock.close()

    def post(self, body: bytes) -> HttpResponse:
        reused = self._sock is not None
        try:
            return self._exchange(body)
        except (_ClosedEarly, ConnectionError):
            self.close()
            if not reused:
                raise
        except BaseException:
            self.close()
            raise
        # The server had closed the idle connection (an empty read or a reset):
        # one more try, on a new connection.
        try:
            return self._exchange(body)
        except BaseException:
            self.close()
            raise

    # -- one request and its answer ---------------------------------------------------

    def _connect(self) -> socket.socket:
        sock = socket.create_connection(self._address, timeout=self._timeout)
        try:
            # The head and body go in one write, and the answer must not wait on
            # Nagle's algorithm for the next request.
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            if self._tls is not None:
                sock = self._tls.wrap_socket(sock, server_hostname=self._address[0])
        except BaseException:
            sock.close()
            raise
        return sock

    def _exchange(self, body: bytes) -> HttpResponse:
        sock = self._sock
        if sock is None:
            sock = self._sock = self._connect()
        head = self._head + b"%d\r\n\r\n" % len(body)
        if self._tls is None:
            # A large body may go in parts: the send buffer takes what it can.
            sent = sock.sendmsg([head, body])
            if sent < len(head):
                sock.sendall(head[sent:])
                sock.sendall(body)
            elif sent < len(head) + len(body):
                sock.sendall(memoryview(body)[sent - len(head) :])
        else:
            # TLS sockets have no sendmsg; a body is sent as it is, not copied.
            sock.sendall(head)
            sock.sendall(body)
        while True:
            status, headers, version = self._read_head(sock)
            if status >= 200:
                break
            if status == 101:
                raise ProtocolError("the server switched protocols")
        keep = version == "HTTP/1.1"
        connection = headers.get("connection", "").lower()
        if "close" in connection:
            keep = False
        elif "keep-alive" in connection:
            keep = True
        if status in (204, 304):
            body_out = b""
        elif "chunked" in headers.get("transfer-encoding", "").lower():
            body_out = self._read_chunked(sock)
        elif "content-length" in headers:
            try:
                length = int(headers["content-length"])
            except ValueError:
                raise ProtocolError(f"Content-Length {headers['content-length']!r}") from None
            if not 0 <= length <= MAX_BODY:
                raise ProtocolError(f"a body of {length} bytes")
            body_out = self._read_exactly(sock, length)
        else:
            body_out = self._read_to_end(sock)
            keep = False
        if not keep or self._buf:
            # Bytes past the answer (nothing was asked for them) or a server
            # that closes: this connection is not used again.
            self.close()
        return HttpResponse(status, headers, body_out)

    def _fill(self, sock: socket.socket) -> bool:
        chunk = sock.recv(_RECV)
        if not chunk:
            return False
        self._buf += chunk
        return True

    def _read_head(self, sock: socket.socket) -> tuple[int, dict[str, str], str]:
        first = not self._buf
        while (end := self._buf.find(b"\r\n\r\n")) < 0:
            if len(self._buf) > MAX_HEAD:
                raise ProtocolError(f"a response head over {MAX_HEAD} bytes")
            if not self._fill(sock):
                if first and not self._buf:
                    raise _ClosedEarly("the connection closed before an answer")
                raise ProtocolError("the connection closed in the middle of an answer")
        raw = bytes(self._buf[:end]).decode("latin-1")
        del self._buf[: end + 4]
        status_line, *lines = raw.split("\r\n")
        version, _, rest = status_line.partition(" ")
        code = rest[:3]
        if not version.startswith("HTTP/1.") or not code.isdigit() or rest[3:4] not in ("", " "):
            raise ProtocolError(f"not an HTTP/1.x answer: {status_line[:80]!r}")
        headers: dict[str, str] = {}
        for line in lines:
            name, colon, value = line.partition(":")
            if not colon:
                raise ProtocolError(f"a response header without a colon: {line[:80]!r}")
            name = name.strip().lower()
            value = value.strip()
            headers[name] = f"{headers[name]}, {value}" if name in headers else value
        return int(code), headers, version

    def _read_exactly(self, sock: socket.socket, n: int) -> bytes:
        while len(self._buf) < n:
            if not self._fill(sock):
                raise ProtocolError("the connection closed in the middle of an answer")
        out = bytes(self._buf[:n])
        del self._buf[:n]
        return out

    def _read_line(self, sock: socket.socket) -> bytes:
        while (end := self._buf.find(b"\r\n")) < 0:
            if len(self._buf) > MAX_HEAD:
                raise ProtocolError("a chunk line too long")
            if not self._fill(sock):
                raise ProtocolError("the connection closed in the middle of an answer")
        line = bytes(self._buf[:end])
        del self._buf[: end + 2]
        return line

    def _read_chunked(self, sock: socket.socket) -> bytes:
        parts: list[bytes] = []
        total = 0
        while True:
            size_text = self._read_line(sock).split(b";", 1)[0].strip()
            try:
                size = int(size_text, 16)
            except ValueError:
                raise ProtocolError(f"a chunk size {size_text[:20]!r}") from None
            if size == 0:
                while self._read_line(sock):  # trailers, up to an empty line
                    pass
                return b"".join(parts)
            total += size
            if total > MAX_BODY:
                raise ProtocolError(f"a chunked body over {MAX_BODY} bytes")
            parts.append(self._read_exactly(sock, size))
            if self._read_exactly(sock, 2) != b"\r\n":
                raise ProtocolError("a chunk not followed by CRLF")

    def _read_to_end(self, sock: socket.socket) -> bytes:
        while self._fill(sock):
            if len(self._buf) > MAX_BODY:
                raise ProtocolError(f"a body over {MAX_BODY} bytes")
        out = bytes(self._buf)
        self._buf.clear()
        return out
