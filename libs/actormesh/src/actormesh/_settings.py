"""The one place that reads the environment (the edge: CLI and services)."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass

__all__ = ["Settings"]

DEFAULT_URL = "nats://127.0.0.1:4222"


@dataclass(frozen=True, kw_only=True, slots=True)
class Settings:
    nats_url: str | None
    prefix: str
    creds: str | None
    log_level: str
    log_format: str
    #: Tests only: run the session broker in a container (testcontainers).
    test_docker: bool = False

    @property
    def url(self) -> str:
        return self.nats_url or DEFAULT_URL

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
        )
