"""Dashboard access: a login token, server-side sessions in an HttpOnly SameSite
cookie, a CSRF token per session, and a same-origin check on every POST.

Reads may be open without login only when the dashboard is bound to loopback,
and then only for requests whose Host is a loopback name, so a DNS-rebinding
page cannot read them either. API clients may instead send the token as
`Authorization: Bearer ...` (no cookie, so no CSRF exposure).
"""

from __future__ import annotations

import hmac
import ipaddress
import secrets
import time
from collections import deque
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from aiohttp import web

from actormesh import ConfigError

__all__ = ["COOKIE", "CSRF_HEADER", "Auth", "Session"]

COOKIE = "actormesh_session"
CSRF_HEADER = "X-CSRF-Token"


@dataclass(frozen=True, slots=True)
class Session:
    id: str
    csrf: str
    expires: float


@dataclass
class Auth:
    token: str
    #: Reads without login (only sensible when bound to loopback).
    open_reads: bool
    session_ttl: float = 12 * 3600.0
    #: Failed logins allowed per client address per minute.
    max_failures: int = 10
    _sessions: dict[str, Session] = field(default_factory=dict)
    _failures: dict[str, deque[float]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if len(self.token) < 16:
            raise ConfigError("the dashboard token must be at least 16 characters")

    # -- login ------------------------------------------------------------------------

    def token_ok(self, candidate: str) -> bool:
        return hmac.compare_digest(candidate.encode(), self.token.encode())

    def throttled(self, client: str, now: float) -> bool:
        window = self._failures.get(client)
        if window is None:
            return False
        while window and now - window[0] > 60.0:
            window.popleft()
        return len(window) >= self.max_failures

    def failed_login(self, client: str, now: float) -> None:
        self._failures.setdefault(client, deque()).append(now)
        if len(self._failures) > 10_000:
            self._failures.clear()  # bounded memory under a spray of addresses

    def login(self, now: float | None = None) -> Session:
        now = time.time() if now is None else now
        self._expire(now)
        session = Session(
            id=secrets.token_urlsafe(32), csrf=secrets.token_urlsafe(32),
            expires=now + self.session_ttl,
        )  # fmt: skip
        self._sessions[session.id] = session
        return session

    def logout(self, session: Session) -> None:
        self._sessions.pop(session.id, None)

    def _expire(self, now: float) -> None:
        for sid in [k for k, s in self._sessions.items() if s.expires < now]:
            del self._sessions[sid]

    # -- request checks ---------------------------------------------------------------

    def session(self, request: web.Request) -> Session | None:
        sid = request.cookies.get(COOKIE)
        if not sid:
            return None
        session = self._sessions.get(sid)
        if session is None or session.expires < time.time():
            return None
        return session

    def bearer(self, request: web.Request) -> bool:
        header = request.headers.get("Authorization", "")
        scheme, _, value = header.partition(" ")
        return scheme.lower() == "bearer" and bool(value) and self.token_ok(value.strip())

    def can_read(self, request: web.Request) -> bool:
        if self.bearer(request) or self.session(request) is not None:
            return True
        return self.open_reads and loopback_host(request.host)

    def same_origin(self, request: web.Request) -> bool:
        """Origin (or, failing that, Referer) names this very scheme://host:port."""
        expected = f"{request.scheme}://{request.host}".lower()
        origin = request.headers.get("Origin")
        if origin is not None:
            return origin.lower() == expected
        referer = request.headers.get("Referer")
        if referer:
            parts = urlsplit(referer)
            return f"{parts.scheme}://{parts.netloc}".lower() == expected
        return False

    def csrf_ok(self, request: web.Request, session: Session) -> bool:
        sent = request.headers.get(CSRF_HEADER, "")
        return bool(sent) and hmac.compare_digest(sent.encode(), session.csrf.encode())


def loopback_host(host: str) -> bool:
    """Whether a Host header names this machine's loopback: `localhost`, or a
    loopback IP literal (`127.0.0.1`, `[::1]`), with or without a port.

    Parsed, not prefix-matched: `127.attacker.example` is a DNS name anyone can
    point at 127.0.0.1 (which is what DNS rebinding does), so only literals count.
    """
    name = host.strip().lower()
    if name.startswith("["):
        literal, sep, rest = name[1:].partition("]")
        if not sep or (rest and not _port(rest)):
            return False
        return _loopback_ip(literal)
    if name.count(":") == 1:
        name, _, port = name.partition(":")
        if not _port(":" + port):
            return False
    elif ":" in name:
        return _loopback_ip(name)  # a bare IPv6 literal (not valid in Host, but unambiguous)
    return name in ("localhost", "localhost.") or _loopback_ip(name)


def _port(text: str) -> bool:
    return text.startswith(":") and text[1:].isdigit() and len(text) <= 6


def _loopback_ip(text: str) -> bool:
    try:
        return ipaddress.ip_address(text).is_loopback
    except ValueError:
        return False
