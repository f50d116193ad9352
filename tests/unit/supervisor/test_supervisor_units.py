"""Units of the supervisor without a broker: options, auth rules, the token
file, worker argv, throughput, failure detection and rebuilding from events."""

from __future__ import annotations

import stat
import sys
import time
from pathlib import Path
from typing import Any

import msgspec
import pytest

from actormesh import Event, Heartbeat
from actormesh.lowlevel import MeshFile
from actormesh.lowlevel import load_meshfile as load
from actormesh_supervisor import ProcessBackend, Supervisor, SupervisorError, SupervisorOptions
from actormesh_supervisor._auth import Auth, loopback_host
from actormesh_supervisor._options import is_loopback
from actormesh_supervisor._state import Failure as _Failure
from actormesh_supervisor._token import generate_token, read_token_file
from actormesh_supervisor._views import WorkerView

REPO = Path(__file__).resolve().parents[3]


def _mf(groups: list[dict[str, Any]] | None = None, **sup: Any) -> MeshFile:
    return msgspec.convert({"supervisor": sup, "groups": groups or []}, MeshFile)


def _opts(mf: MeshFile, tmp_path: Path) -> SupervisorOptions:
    return SupervisorOptions(meshfile=mf, nats_url="nats://127.0.0.1:1", prefix="mesh",
                             runtime_dir=tmp_path, python=sys.executable)  # fmt: skip


def _hb(worker: str, *, handled: int, sent_at: float, pid: int = 7, **kw: Any) -> Heartbeat:
    fields: dict[str, Any] = dict(
        worker=worker, actor_type="ledger", pid=pid, host="h", started_at=1.0, seq=1,
        in_flight=0, handled=handled, failed=0, dead_lettered=0, restarts=0, version="t",
        status="running", supervisor_child="ledger", sent_at=sent_at,
    )  # fmt: skip
    fields.update(kw)
    return Heartbeat(**fields)


def test_the_repository_mesh_toml_is_valid(tmp_path: Path) -> None:
    options = _opts(load(REPO / "mesh.toml"), tmp_path)
    assert options.meshfile.supervisor.start_timeout == 15.0
    assert options.source == "supervisor:root"


@pytest.mark.parametrize(
    ("mf", "message"),
    [
        (_mf(backend="k8s"), "backend must be one of"),
        (_mf(heartbeat_interval=0), "heartbeat_interval"),
        (_mf([{"name": "g.1"}]), "group name"),
        (_mf([{"name": "g", "children": [{"name": "a b", "actor": "m:C"}]}]), "child name"),
        (
            _mf(
                [
                    {"name": "g", "children": [{"name": "a", "actor": "m:C"}]},
                    {"name": "h", "children": [{"name": "a", "actor": "m:C"}]},
                ]
            ),
            "two groups",
        ),
        (_mf([{"name": "g", "backoff_min": 2.0, "backoff_max": 1.0}]), "backoff_min"),
    ],
)
def test_invalid_options_are_refused(mf: MeshFile, message: str, tmp_path: Path) -> None:
    with pytest.raises(SupervisorError, match=message):
        _opts(mf, tmp_path)


def test_loopback_rules() -> None:
    assert is_loopback("127.0.0.1") and is_loopback("::1") and is_loopback("localhost")
    assert not is_loopback("0.0.0.0") and not is_loopback("10.0.0.5")
    assert (
        loopback_host("127.0.0.1:8765") and loopback_host("localhost") and loopback_host("[::1]:80")
    )
    assert not loopback_host("evil.example:8765") and not loopback_host("10.0.0.5")


def test_auth_tokens_sessions_and_throttling() -> None:
    with pytest.raises(ValueError, match="at least 16"):
        Auth("short", open_reads=True)
    auth = Auth("x" * 32, open_reads=False, max_failures=3)
    assert auth.token_ok("x" * 32) and not auth.token_ok("x" * 31)
    for _ in range(3):
        auth.failed_login("1.2.3.4", 100.0)
    assert auth.throttled("1.2.3.4", 101.0)
    assert not auth.throttled("5.6.7.8", 101.0)
    assert not auth.throttled("1.2.3.4", 161.0), "failures age out after a minute"
    a, b = auth.login(), auth.login()
    assert a.id != b.id and a.csrf != b.csrf and len(a.csrf) >= 32


def test_generated_token_is_private(tmp_path: Path) -> None:
    path = tmp_path / "sub" / "dashboard-token"
    token = generate_token(path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert read_token_file(path) == token
    (tmp_path / "weak").write_text("abc\n")
    with pytest.raises(SupervisorError, match="shorter than 16"):
        read_token_file(tmp_path / "weak")
    with pytest.raises(SupervisorError, match="cannot read"):
        read_token_file(tmp_path / "absent")


def test_worker_argv_for_actor_and_command_children(tmp_path: Path) -> None:
    mf = _mf([{"name": "g", "children": [
        {"name": "c", "actor": "pkg:C", "shutdown_grace": 10.0, "args": ["--concurrency", "2"]},
        {"name": "x", "command": ["{python}", "run.py", "--id={worker_id}", "{nats_url}"]},
    ]}], heartbeat_interval=0.5)  # fmt: skip
    sup = Supervisor(_opts(mf, tmp_path))
    backend = sup.backend
    assert isinstance(backend, ProcessBackend)
    from actormesh_supervisor._views import Slot

    argv = backend.argv(Slot(worker_id="c-1", group="g", child="c", index=1), sup.children["c"][1])
    assert argv[:3] == [sys.executable, "-m", "actormesh"]
    for flag, value in [("--worker-id", "c-1"), ("--supervisor-child", "c"),
                        ("--heartbeat-interval", "0.5"), ("--drain-grace", "8"),
                        ("--partition", "0")]:  # fmt: skip
        assert argv[argv.index(flag) + 1] == value
    assert argv[-2:] == ["--concurrency", "2"]
    # Replica n serves partition n-1 (of a partitioned mailbox; ignored otherwise).
    argv3 = backend.argv(Slot(worker_id="c-3", group="g", child="c", index=3), sup.children["c"][1])
    assert argv3[argv3.index("--partition") + 1] == "2"
    cmd = backend.argv(Slot(worker_id="x-1", group="g", child="x", index=1), sup.children["x"][1])
    assert cmd == [sys.executable, "run.py", "--id=x-1", "nats://127.0.0.1:1"]
    env = backend.env(Slot(worker_id="x-1", group="g", child="x", index=1), sup.children["x"][1])
    assert env["ACTORMESH_WORKER_ID"] == "x-1" and env["ACTORMESH_PREFIX"] == "mesh"


def test_throughput_from_successive_heartbeats() -> None:
    view = WorkerView(_hb("w", handled=0, sent_at=100.0), now=0.0)
    assert view.throughput() == 0.0
    for i in range(1, 5):
        view.update(_hb("w", handled=50 * i, sent_at=100.0 + i), now=float(i))
    assert view.throughput() == pytest.approx(50.0)
    # A new incarnation (new pid) starts counting afresh.
    view.update(_hb("w", handled=3, sent_at=105.0, pid=8), now=5.0)
    assert view.throughput() == 0.0


async def test_missed_heartbeats_declare_a_worker_dead(tmp_path: Path) -> None:
    mf = _mf([{"name": "g", "children": [{"name": "ledger", "actor": "m:C"}]}],
             heartbeat_interval=1.0, heartbeat_misses=3)  # fmt: skip
    sup = Supervisor(_opts(mf, tmp_path))
    slot = sup.new_slot(sup.groups["g"], sup.children["ledger"][1], "ledger-1")
    slot.state, slot.launched_at = "running", 0.0
    sup.views["ledger-1"] = WorkerView(_hb("ledger-1", handled=0, sent_at=1.0), now=10.0)
    sup.status = "running"
    sup.check(12.9)
    assert slot.state == "running"
    sup.check(13.1)
    assert slot.state == "dead"
    failure = sup.groups["g"].queue.get_nowait()
    assert isinstance(failure, _Failure)
    assert failure.cause == "heartbeat"
    assert failure.event is not None and failure.event.kind == "failed"


def test_rebuild_from_events_keeps_counting_and_remembers_failed_groups(tmp_path: Path) -> None:
    mf = _mf([{"name": "g", "intensity": 3, "period": 60},
              {"name": "h", "intensity": 3, "period": 60}])  # fmt: skip
    sup = Supervisor(_opts(mf, tmp_path))
    now = time.time()
    src = sup.source

    def ev(kind: str, group: str, at: float, **detail: str) -> Event:
        return Event(kind=kind, at=at, source=src, group=group, worker=f"{group}-1",
                     detail=detail)  # fmt: skip

    history = [
        ev("restarted", "g", now - 500, op="old"),
        ev("stopped", "", now - 400, scope="supervisor"),  # a clean stop: forget before it
        ev("restarted", "g", now - 30, op="1"),
        ev("restarted", "g", now - 20, op="2"),
        ev("restarted", "g", now - 20, op="2"),  # one_for_all: one op, several events
        ev("restarted", "h", now - 10, op="3"),
        ev("escalated", "h", now - 5, scope="group"),
        Event(
            kind="restarted", at=now - 1, source="supervisor:other", group="g", detail={"op": "x"}
        ),
    ]
    sup._rebuild(history)
    mono = time.monotonic()
    assert sup.groups["g"].window.count(mono) == 2
    assert not sup.groups["g"].failed
    assert sup.groups["h"].failed
    assert sup.window.count(mono) == 3
    sup._rebuild([*history, ev("restarted", "h", now, operator="1", scope="group")])
    assert not sup.groups["h"].failed


@pytest.mark.parametrize(
    "host",
    ["127.0.0.1", "127.0.0.1:8765", "127.9.8.7:80", "localhost", "LocalHost:8765", "[::1]",
     "[::1]:8765", "::1"],
)  # fmt: skip
def test_loopback_host_accepts_loopback_literals(host: str) -> None:
    assert loopback_host(host)


@pytest.mark.parametrize(
    "host",
    ["127.attacker.example:8765", "127.attacker.example", "127.0.0.1.nip.io",
     "localhost.attacker.example:8765", "evil.example", "10.0.0.5:8765", "0.0.0.0",
     "[::1]x", "[::1]:port", "[fe80::1]:80", "127.0.0.1:", "127.0.0.1:8765:1", ""],
)  # fmt: skip
def test_loopback_host_refuses_names_that_only_look_local(host: str) -> None:
    assert not loopback_host(host)
