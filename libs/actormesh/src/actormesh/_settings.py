"""The one place that reads the environment (the edge: CLI and services)."""

from __future__ import annotations

import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from urllib.parse import urlsplit

from ._config import Replication
from ._errors import BadServerUrl, ConfigError

__all__ = ["Settings", "redact", "server_list"]

DEFAULT_URL = "nats://127.0.0.1:4222"


@dataclass(frozen=True, kw_only=True, slots=True)
class Settings:
    #: NATS_URL: one server or several, comma-separated (as the nats CLI takes them).
    nats_url: str | None
    prefix: str
    creds: str | None
    log_level: str
    log_format: str
    #: Tests only: run the session broker in a container (testcontainers).
    test_docker: bool = False
    #: ACTORMESH_REPLICAS and ACTORMESH_PLACEMENT_TAGS (comma-separated): the
    #: mesh-wide `Replication` (None: not set, the library's default).
    replication: Replication | None = None

    @property
    def url(self) -> str:
        return self.nats_url or DEFAULT_URL

    @property
    def servers(self) -> list[str]:
        """`url` as a list of server URLs (checked: `BadServerUrl` names a bad one)."""
        return server_list(self.url)

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        e = os.environ if env is None else env
        return cls(
            nats_url=e.get("NATS_URL") or None,
            prefix=e.get("ACTORMESH_PREFIX", "mesh"),
            creds=e.get("NATS_CREDS") or None,
            log_level=e.get("ACTORMESH_LOG_LEVEL", "INFO").upper(),
            log_format=e.get("ACTORMESH_LOG_FORMAT", "console"),
            test_docker=e.get("ACTORMESH_TEST_DOCKER") == "1",
            replication=_replication(e),
        )


def _replication(e: Mapping[str, str]) -> Replication | None:
    replicas, tags = e.get("ACTORMESH_REPLICAS", ""), e.get("ACTORMESH_PLACEMENT_TAGS", "")
    if not replicas and not tags:
        return None
    try:
        n = int(replicas or "1")
    except ValueError:
        raise ConfigError(f"ACTORMESH_REPLICAS must be a number, not {replicas!r}") from None
    return Replication(
        replicas=n, placement_tags=tuple(t.strip() for t in tags.split(",") if t.strip())
    )


_SCHEMES = {"nats", "tls", "ws", "wss"}
#: `[scheme://]user:password@` or `[scheme://]token@` at the start of a URL.
_SECRET = re.compile(r"^(\s*(?:[A-Za-z]+://)?)([^:/@]*)(:[^@/]*)?@")


def server_list(servers: str | Sequence[str]) -> list[str]:
    """The server URLs in `servers`: a comma-separated string (NATS_URL,
    --nats-url) or a list, whose items may hold commas too. Each is checked as
    nats-py would take it (`host`, `host:port`, `nats://user:pw@host:port`, tls,
    ws, wss), so a bad one fails at once with `BadServerUrl` naming it instead
    of inside the client."""
    given = servers if isinstance(servers, str) else ",".join(servers)
    urls = [u.strip() for u in given.split(",") if u.strip()]
    if not urls:
        raise _bad(given, given, "no server given")
    for url in urls:
        _check_url(url, given)
    websocket = {urlsplit(_with_scheme(u)).scheme in ("ws", "wss") for u in urls}
    if len(websocket) > 1:
        raise _bad(given, given, "websocket and nats URLs mixed")
    return urls


def _bad(url: str, given: str, detail: str) -> BadServerUrl:
    return BadServerUrl(redact(url), servers=redact(given), detail=detail)


def _with_scheme(url: str) -> str:
    return url if "://" in url else f"nats://{url}"


def _check_url(url: str, given: str) -> None:
    try:
        parts = urlsplit(_with_scheme(url))
        parts.port  # noqa: B018  (parsing the port raises on a bad one)
    except ValueError as exc:
        raise _bad(url, given, str(exc)) from None
    if parts.scheme not in _SCHEMES:
        raise _bad(url, given, f"unknown scheme {parts.scheme!r}")
    if not parts.hostname:
        raise _bad(url, given, "no host")
    # A websocket server may sit under a path behind a proxy; nats:// has none.
    if parts.scheme in ("nats", "tls") and (parts.path not in ("", "/") or parts.query):
        raise _bad(url, given, "unexpected path or query")


def redact(servers: str) -> str:
    """`servers` with any password in them replaced by `***`, for messages and logs."""
    return ",".join(_SECRET.sub(_hide, url) for url in servers.split(","))


def _hide(m: re.Match[str]) -> str:
    # user:password keeps the user; a lone userinfo is a token, hidden whole.
    return f"{m[1]}{m[2]}:***@" if m[3] else f"{m[1]}***@"
