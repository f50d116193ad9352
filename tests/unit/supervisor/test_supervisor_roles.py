"""The supervisor's roles without a broker: what a backend says it can do, what a
failure leads to (the verdict), config errors, and the webhook's retries."""

from __future__ import annotations

import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import msgspec
import pytest
import pytest_asyncio
from aiohttp import web

from actormesh import ConfigError, Event, RetryPolicy
from actormesh.lowlevel import MeshFile
from actormesh_supervisor import (
    DockerBackend,
    NoneBackend,
    ProcessBackend,
    Supervisor,
    SupervisorConfigError,
    SupervisorOptions,
    _escalation,
)
from actormesh_supervisor._restarts import Verdict
from actormesh_supervisor._state import Failure


def _opts(tmp_path: Path, groups: list[dict[str, Any]] | None = None, **sup: Any) -> Any:
    mf = msgspec.convert({"supervisor": sup, "groups": groups or []}, MeshFile)
    return SupervisorOptions(meshfile=mf, nats_url="nats://127.0.0.1:1", prefix="mesh",
                             runtime_dir=tmp_path, python=sys.executable)  # fmt: skip


def test_backends_say_what_they_can_do(tmp_path: Path) -> None:
    process = ProcessBackend(_opts(tmp_path))
    docker = DockerBackend("/nonexistent.sock", prefix="mesh")
    none = NoneBackend()
    caps = [(b.name, b.can_restart, b.fixed_slots, b.spawns_processes, b.adopts_by_heartbeat)
            for b in (process, docker, none)]  # fmt: skip
    assert caps == [
        ("process", True, True, True, False),
        ("docker", True, False, False, False),
        ("none", False, False, False, True),
    ]


def test_config_errors_are_config_errors(tmp_path: Path) -> None:
    with pytest.raises(SupervisorConfigError, match="heartbeat_interval") as info:
        _opts(tmp_path, heartbeat_interval=0)
    assert isinstance(info.value, ConfigError) and isinstance(info.value, ValueError)


def _failing(sup: Supervisor, *, abnormal: bool = True) -> Failure:
    group = sup.groups["g"]
    slot = sup.new_slot(group, sup.child("c"), "c-1")
    slot.state = "dead"
    return Failure(slot, slot.generation, "exit", abnormal, "boom", None)


def _sup(tmp_path: Path, restart: str = "permanent", **sup: Any) -> Supervisor:
    groups = [{"name": "g", "intensity": 1, "period": 60,
               "children": [{"name": "c", "actor": "m:C", "restart": restart}]}]  # fmt: skip
    return Supervisor(_opts(tmp_path, groups, intensity=1, period=60, **sup))


def test_verdicts(tmp_path: Path) -> None:
    sup = _sup(tmp_path)
    group = sup.groups["g"]
    f = _failing(sup)
    child = sup.child("c")
    assert sup.restarter.verdict(group, f, child, 0.0) is Verdict.RESTART
    # The group's intensity (1) is spent: the next one escalates the group.
    assert sup.restarter.verdict(group, f, child, 1.0) is Verdict.GROUP_OVER_INTENSITY
    group.failed = True
    assert sup.restarter.verdict(group, f, child, 2.0) is Verdict.LEFT_FAILED
    group.failed = False
    group.window.reset()
    # The group allows one more, the supervisor (intensity 1, already used) does not.
    assert sup.restarter.verdict(group, f, child, 3.0) is Verdict.SUPERVISOR_OVER_INTENSITY
    f.slot.drain_requested = True
    clean = Failure(f.slot, f.generation, "exit", False, "stopped", None)
    assert sup.restarter.verdict(group, clean, child, 4.0) is Verdict.DRAINED


@pytest.mark.parametrize(
    ("restart", "abnormal", "verdict"),
    [("temporary", True, Verdict.NOT_RESTARTED), ("transient", False, Verdict.NOT_RESTARTED),
     ("transient", True, Verdict.RESTART)],
)  # fmt: skip
def test_restart_types_decide_first(
    tmp_path: Path, restart: str, abnormal: bool, verdict: Verdict
) -> None:
    sup = _sup(tmp_path, restart)
    f = _failing(sup, abnormal=abnormal)
    assert sup.restarter.verdict(sup.groups["g"], f, sup.child("c"), 0.0) is verdict


def test_observe_only_counts_and_escalates_but_never_restarts(tmp_path: Path) -> None:
    sup = _sup(tmp_path, backend="none")
    group, f, child = sup.groups["g"], _failing(sup), sup.child("c")
    assert sup.restarter.verdict(group, f, child, 0.0) is Verdict.OBSERVED
    assert sup.restarter.verdict(group, f, child, 1.0) is Verdict.GROUP_OVER_INTENSITY


@pytest_asyncio.fixture
async def hook() -> AsyncIterator[tuple[str, list[bytes]]]:
    bodies: list[bytes] = []

    async def post(request: web.Request) -> web.Response:
        bodies.append(await request.read())
        return web.Response(status=503 if len(bodies) < 3 else 204)

    app = web.Application()
    app.router.add_post("/hook", post)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    yield f"http://127.0.0.1:{port}/hook", bodies
    await runner.cleanup()


async def test_webhook_is_retried_with_the_library_retry(
    tmp_path: Path, hook: tuple[str, list[bytes]], monkeypatch: pytest.MonkeyPatch
) -> None:
    url, bodies = hook
    monkeypatch.setattr(_escalation, "WEBHOOK_RETRY", RetryPolicy(attempts=3, base=0.01))
    sup = _sup(tmp_path, webhook=url)
    evt = Event(kind="escalated", at=1.0, source=sup.source, reason="too many")
    try:
        await sup.escalator._post_webhook(evt)
    finally:
        await sup.escalator.close()
    assert len(bodies) == 3, "two 503s, then delivered"
    assert msgspec.json.decode(bodies[-1], type=Event).reason == "too many"
