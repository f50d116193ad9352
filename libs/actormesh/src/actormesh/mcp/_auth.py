"""Bearer tokens for the streamable HTTP transport: each maps to a principal.

The tokens file is TOML or JSON (by its suffix: `.json` is JSON, anything else
TOML), one mapping of token to principal under `tokens`:

    [tokens]
    "3f9c0b...long-random..." = "ide-alice"

    {"tokens": {"3f9c0b...long-random...": "ide-alice"}}

A request without `Authorization: Bearer <a known token>` gets 401 before it
reaches the MCP server; an accepted one carries its principal in the ASGI
scope (`PRINCIPAL_SCOPE_KEY`). Tokens are secrets: no message here, nor any
error, ever includes one.
"""

from __future__ import annotations

import hmac
import json
import os
import secrets
import tomllib
from pathlib import Path
from typing import Any

from actormesh import ConfigError

__all__ = ["PRINCIPAL_SCOPE_KEY", "BearerAuth", "init_tokens", "load_tokens"]

#: Where an authenticated request's principal goes in the ASGI scope.
PRINCIPAL_SCOPE_KEY = "actormesh.principal"

_UNAUTHORIZED = json.dumps(
    {"error": "invalid_token", "error_description": "a valid bearer token is required"}
).encode()


def load_tokens(path: Path) -> dict[str, str]:
    """The token → principal mapping in `path` (see the module's docstring)."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"cannot read the MCP tokens file {path}: {exc.strerror}") from None
    try:
        data: Any = json.loads(text) if path.suffix == ".json" else tomllib.loads(text)
    except (json.JSONDecodeError, tomllib.TOMLDecodeError) as exc:
        # The parser's message may quote the file's text: a token. Say only where.
        where = f"line {exc.lineno}" if isinstance(exc, json.JSONDecodeError) else "its syntax"
        raise ConfigError(f"the MCP tokens file {path} does not parse ({where})") from None
    tokens = data.get("tokens") if isinstance(data, dict) else None
    if not isinstance(tokens, dict) or not tokens:
        raise ConfigError(
            f"the MCP tokens file {path} needs a `tokens` table mapping each token to a "
            'principal, e.g. [tokens] "<long random token>" = "ide-alice"'
        )
    bad = [p for t, p in tokens.items() if not (isinstance(p, str) and p and t)]
    if bad:
        raise ConfigError(
            f"the MCP tokens file {path}: every token needs a non-empty principal name "
            f"({len(bad)} do not)"
        )
    return dict(tokens)


def init_tokens(path: Path, principal: str) -> bool:
    """Create `path` with one random token for `principal`, readable by its owner only,
    unless it exists; whether it was created."""
    if path.exists():
        return False
    path.parent.mkdir(parents=True, exist_ok=True)
    token = secrets.token_urlsafe(32)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return False  # another process made it first: use theirs
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write(
            "# actormesh mcp --http: bearer token = principal (grant the principal tools)\n"
            f"[tokens]\n{json.dumps(token)} = {json.dumps(principal)}\n"
        )
    return True


class BearerAuth:
    """ASGI middleware: 401 unless the request bears a known token."""

    def __init__(self, app: Any, tokens: dict[str, str]) -> None:
        self._app = app
        self._tokens = [(t.encode(), p) for t, p in tokens.items()]

    def principal(self, authorization: bytes) -> str | None:
        scheme, _, token = authorization.partition(b" ")
        if scheme.lower() != b"bearer" or not token:
            return None
        found = None
        for known, principal in self._tokens:
            # Constant time, and every token compared: no timing hint of a prefix.
            if hmac.compare_digest(known, token.strip()):
                found = principal
        return found

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            await self._app(scope, receive, send)
            return
        if scope["type"] != "http":  # a websocket: MCP has none, and no token was checked
            await send({"type": "websocket.close", "code": 1008})
            return
        authorization = next((v for k, v in scope["headers"] if k == b"authorization"), b"")
        principal = self.principal(authorization)
        if principal is None:
            await send(
                {
                    "type": "http.response.start",
                    "status": 401,
                    "headers": [
                        (b"content-type", b"application/json"),
                        (b"www-authenticate", b'Bearer error="invalid_token"'),
                    ],
                }
            )
            await send({"type": "http.response.body", "body": _UNAUTHORIZED})
            return
        await self._app({**scope, PRINCIPAL_SCOPE_KEY: principal}, receive, send)
