from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def subprocess_env(nats_url: str, mesh_prefix: str) -> dict[str, str]:
    """Environment for worker/CLI subprocesses: this test's broker and prefix, and
    the repository root on the path so `tests.actors` imports."""
    env = dict(os.environ)
    env["NATS_URL"] = nats_url
    env["ACTORMESH_PREFIX"] = mesh_prefix
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    env["PYTHONUNBUFFERED"] = "1"
    return env


@pytest.fixture
def python() -> str:
    return sys.executable
