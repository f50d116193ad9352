"""The core imports neither of the layers built on it, nor their dependencies."""

from __future__ import annotations

import json
import subprocess
import sys

#: Module names (and their submodules) the core must not load.
FORBIDDEN = (
    "actormesh.patterns",
    "actormesh.observability",
    "aiolimiter",
    "aiorwlock",
    "opentelemetry",
    "prometheus_client",
)


def loaded_after(code: str) -> list[str]:
    """The forbidden modules in sys.modules after running `code` in a fresh interpreter."""
    probe = (
        f"{code}\n"
        "import json, sys\n"
        f"forbidden = {FORBIDDEN!r}\n"
        "print(json.dumps(sorted(m for m in sys.modules "
        "if any(m == f or m.startswith(f + '.') for f in forbidden))))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True, timeout=60
    )
    found: list[str] = json.loads(out.stdout.strip().splitlines()[-1])
    return found


def test_import_actormesh_loads_no_layer_above_the_core() -> None:
    assert loaded_after("import actormesh") == []


def test_the_worker_and_its_seam_load_no_layer_above_the_core() -> None:
    code = (
        "import actormesh\n"
        "from actormesh import Worker, WorkerInterceptor, MessageInput, Mesh, Actor\n"
        "import actormesh._worker, actormesh._interceptor, actormesh._errwire\n"
        "from actormesh._worker import _dispatch, _failures, _handling, _replies, "
        "_settle, _status\n"
    )
    assert loaded_after(code) == []


def test_the_probe_sees_a_layer_when_one_is_loaded() -> None:
    # Guards the probe itself: a broken check would pass the tests above.
    assert "actormesh.patterns" in loaded_after("import actormesh.patterns")
