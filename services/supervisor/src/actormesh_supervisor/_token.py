"""The dashboard login token: given, read from a secret file, or generated."""

from __future__ import annotations

import os
import secrets
from pathlib import Path

from ._errors import SupervisorError

__all__ = ["generate_token", "read_token_file"]


def read_token_file(path: str | Path) -> str:
    try:
        token = Path(path).read_text(encoding="utf-8").strip()
    except OSError as exc:
        raise SupervisorError(f"cannot read the dashboard token file {path}: {exc}") from exc
    if len(token) < 16:
        raise SupervisorError(f"the dashboard token in {path} is shorter than 16 characters")
    return token


def generate_token(path: Path) -> str:
    """A fresh random token, written to `path` readable by the owner only."""
    token = secrets.token_urlsafe(32)
    path.parent.mkdir(parents=True, exist_ok=True)
    # Created 0600 from the start: no moment where another user could read it.
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.fchmod(fd, 0o600)
        os.write(fd, (token + "\n").encode())
    finally:
        os.close(fd)
    return token
