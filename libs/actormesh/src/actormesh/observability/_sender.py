"""The OTLP/HTTP transport: POSTs export requests with the standard library's
`http.client`, in the export thread.

What OTLP asks of an exporter is here: retries of what the specification
calls retryable (429, 502-504, connection errors) with exponential backoff,
honouring `Retry-After`, within the export timeout; gzip or deflate bodies;
TLS against the system's CAs or the CA file of OTEL_EXPORTER_OTLP_CERTIFICATE,
and mutual TLS; one kept-alive connection. HTTP itself is `http.client`'s.
"""

from __future__ import annotations

import gzip
import http.client
import re
import ssl
import time
import zlib
from collections.abc import Mapping
from urllib.parse import urlsplit

from .._errors import ConfigError
from .._version import VERSION
from ._config import Compression

__all__ = ["ExportFailed", "HttpSender", "tls_context"]

#: The OTLP/HTTP specification's retryable answers.
_RETRYABLE = frozenset({429, 502, 503, 504})

#: How much of a refusal's body goes into the error message: an OTLP answer is
#: a few bytes, anything longer is not read.
_DETAIL = 64 * 1024

#: An RFC 9110 token: what a header name may be.
_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+").fullmatch

#: What ends a request line or a header: refused in what the configuration
#: puts there, so that a header value cannot inject another header.
_BREAKS = re.compile(r"[\r\n\0]").search


class ExportFailed(Exception):
    def __init__(self, message: str, *, retryable: bool, retry_after: float | None = None):
        super().__init__(message)
        self.retryable = retryable
        self.retry_after = retry_after


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


def _checked_headers(headers: Mapping[str, str]) -> dict[str, str]:
    """`headers`, refused as a `ConfigError` when one would break the request
    (`http.client` would only refuse it at the first export, in the thread)."""
    for name, value in headers.items():
        if not name or _BREAKS(name) or _BREAKS(value):
            raise ConfigError(f"HTTP header {name!r}: {value!r} is empty or holds a line break")
        if _TOKEN(name) is None:
            raise ConfigError(f"HTTP header name {name!r} is not a token")
    return dict(headers)


class HttpSender:
    """POSTs export requests to an OTLP/HTTP endpoint over one kept-alive connection.

    Retries what the specification says is retryable (429, 502-504, connection
    errors) with exponential backoff, honouring Retry-After, within `timeout`
    seconds per export. Blocking: it runs in the exporter's thread. `https`
    verifies the collector against the system's CAs or the CA file
    `certificate`; `client_certificate` (and `client_key`) is for mutual TLS.
    Raises `ConfigError` for an endpoint, header or TLS file it cannot use.
    """

    def __init__(
        self,
        endpoint: str,
        *,
        headers: Mapping[str, str] | None = None,
        timeout: float = 10.0,
        compression: Compression = "none",
        certificate: str | None = None,
        client_certificate: str | None = None,
        client_key: str | None = None,
    ) -> None:
        url = urlsplit(endpoint)
        if url.scheme not in ("http", "https") or not url.hostname:
            raise ConfigError(f"OTLP endpoint {endpoint!r} is not an http(s) URL")
        try:
            port = url.port
        except ValueError as exc:
            raise ConfigError(f"OTLP endpoint {endpoint!r}: {exc}") from None
        self._path = (url.path or "/") + (f"?{url.query}" if url.query else "")
        if any(c in self._path for c in " \t\r\n\0"):
            raise ConfigError(f"OTLP endpoint path {self._path!r} holds a space or line break")
        self._timeout = timeout
        self._compression = compression
        fixed = {"Content-Type": "application/x-protobuf", **_checked_headers(headers or {})}
        if not any(name.lower() == "user-agent" for name in fixed):
            # The OTLP specification asks exporters to name themselves so.
            fixed["User-Agent"] = f"actormesh-OTLP-Exporter-Python/{VERSION}"
        if compression != "none":
            fixed["Content-Encoding"] = compression
        self._headers = fixed
        self._conn: http.client.HTTPConnection
        if url.scheme == "https":
            tls = tls_context(
                certificate=certificate,
                client_certificate=client_certificate,
                client_key=client_key,
            )
            self._conn = http.client.HTTPSConnection(
                url.hostname, port, timeout=timeout, context=tls
            )
        else:
            self._conn = http.client.HTTPConnection(url.hostname, port, timeout=timeout)

    @property
    def connected(self) -> bool:
        """Whether a connection is open (kept alive for the next export)."""
        return self._conn.sock is not None

    def close(self) -> None:
        self._conn.close()

    def _exchange(self, body: bytes) -> tuple[int, str | None, bytes]:
        """One request on the connection, opening it if needed: the status,
        the Retry-After header and the start of the body."""
        conn = self._conn
        try:
            conn.request("POST", self._path, body=body, headers=self._headers)
            resp = conn.getresponse()
            detail = resp.read(_DETAIL)
        except BaseException:
            conn.close()
            raise
        if not resp.isclosed():
            # More body than a collector sends: the rest is not worth reading.
            conn.close()
        return resp.status, resp.getheader("Retry-After"), detail

    def _post(self, body: bytes) -> tuple[int, str | None, bytes]:
        reused = self.connected
        try:
            return self._exchange(body)
        except (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError):
            if not reused:
                raise
        # The collector had closed the idle kept-alive connection, and the
        # request found out: once more, on a new connection, without a backoff.
        return self._exchange(body)

    def _attempt(self, body: bytes) -> None:
        try:
            status, raw_retry_after, detail = self._post(body)
        except ssl.SSLCertVerificationError as exc:
            # Trying again will not make the certificate trusted.
            raise ExportFailed(
                f"the collector's TLS certificate is not trusted ({exc.verify_message}): "
                "set OTEL_EXPORTER_OTLP_CERTIFICATE to the CA file that signed it",
                retryable=False,
            ) from exc
        except (OSError, http.client.HTTPException) as exc:
            raise ExportFailed(f"{type(exc).__name__}: {exc}", retryable=True) from exc
        if 200 <= status < 300:
            return
        retry_after: float | None = None
        raw = (raw_retry_after or "").strip()
        if raw.isdigit():
            retry_after = float(raw)
        raise ExportFailed(
            f"HTTP {status}: {detail[:200]!r}",
            retryable=status in _RETRYABLE,
            retry_after=retry_after,
        )

    def send(self, request: bytes) -> None:
        """Export one request; raises `ExportFailed` when it is given up."""
        if self._compression == "gzip":
            request = gzip.compress(request, compresslevel=6)
        elif self._compression == "deflate":
            request = zlib.compress(request)
        deadline = time.monotonic() + self._timeout
        delay = 0.5
        while True:
            try:
                self._attempt(request)
                return
            except ExportFailed as exc:
                wait = exc.retry_after if exc.retry_after is not None else delay
                if not exc.retryable or time.monotonic() + wait > deadline:
                    raise
                time.sleep(wait)
                delay = min(delay * 2, 8.0)
