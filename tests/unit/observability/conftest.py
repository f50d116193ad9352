"""Fixtures of the observability unit tests (the stand-ins live in `_obs_stubs`)."""

from tests.unit.observability._obs_stubs import nc, worker

__all__ = ["nc", "worker"]
