"""Services build on public names only: `actormesh`, `actormesh.lowlevel`,
`actormesh.observability`, `actormesh.patterns`, `actormesh.testing`; never a
private module (`actormesh._x` or `actormesh.<pkg>._x`)."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import actormesh.lowlevel

REPO = Path(__file__).resolve().parents[2]
SERVICES = REPO / "services"


def _private(module: str) -> bool:
    parts = module.split(".")
    return parts[0] == "actormesh" and any(p.startswith("_") for p in parts[1:])


def _private_imports(path: Path) -> list[str]:
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            # `from actormesh import _x` reaches a private module as well.
            names = [node.module, *(f"{node.module}.{a.name}" for a in node.names)]
        else:
            continue
        found += [f"{path.relative_to(REPO)}:{node.lineno}: {n}" for n in names if _private(n)]
    return found


def test_the_scan_sees_private_imports() -> None:
    assert _private("actormesh._mailbox") and _private("actormesh.patterns._policy")
    assert not _private("actormesh.lowlevel") and not _private("actormesh_supervisor._views")


def test_services_import_only_public_actormesh_names() -> None:
    files = sorted(SERVICES.rglob("*.py"))
    assert len(files) > 10, "the scan found no service code"
    offenders = [line for path in files for line in _private_imports(path)]
    assert offenders == [], "\n".join(offenders)


def test_lowlevel_names_are_pinned() -> None:
    assert sorted(actormesh.lowlevel.__all__) == sorted(
        [
            "KEYLESS",
            "BrokerSection",
            "BudgetExhausted",
            "ChildSpec",
            "ComponentHealth",
            "ControlReply",
            "ControlRequest",
            "DeadLetterNotFound",
            "DeadLetters",
            "GroupSpec",
            "Hdr",
            "HealthReport",
            "KeyParked",
            "MeshFile",
            "MeshSection",
            "RetryBudget",
            "RetryExhausted",
            "Settings",
            "Subjects",
            "SupervisorSection",
            "WorkerStats",
            "check_actor_type",
            "check_key",
            "configure_logging",
            "consumer_config",
            "drain_worker",
            "ensure_mailbox",
            "ensure_system_streams",
            "list_parked",
            "load_meshfile",
            "mailbox_stream_config",
            "parked_stream",
            "release_parked",
            "retry",
            # lifecycle control (issue 19)
            "InstanceInfo",
            "NotPausable",
            "PauseState",
            "WorkerUnreachable",
            "list_instances",
            "passivate_instance",
            "pause_actor_type",
            "pause_state",
            "resume_actor_type",
            "type_workers",
        ]
    )
    for name in actormesh.lowlevel.__all__:
        assert hasattr(actormesh.lowlevel, name), name
    assert issubclass(actormesh.lowlevel.DeadLetterNotFound, actormesh.ActorMeshError)


def test_lowlevel_loads_neither_patterns_nor_observability() -> None:
    # Measured against `import actormesh`, which the import of any submodule runs
    # first: lowlevel itself must add no module of those subpackages.
    code = (
        "import sys, actormesh\n"
        "before = set(sys.modules)\n"
        "import actormesh.lowlevel\n"
        "new = sorted(m for m in set(sys.modules) - before\n"
        "             if m.startswith(('actormesh.patterns', 'actormesh.observability',\n"
        "                              'aiolimiter', 'aiorwlock', 'opentelemetry',\n"
        "                              'prometheus_client')))\n"
        "print(','.join(new))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    assert out.stdout.strip() == ""
