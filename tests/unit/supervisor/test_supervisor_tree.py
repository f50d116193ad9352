"""The supervision tree across hosts without a broker: the root's strategy as a pure
rule, mesh.toml's tree settings, the strict wire messages, and the root's own
intensity (lost hosts counted, one too many escalates and asks to exit 3)."""

from __future__ import annotations

import asyncio
import sys
import time
from pathlib import Path
from typing import Any

import msgspec
import pytest

from actormesh.lowlevel import MeshFile, Subjects, SupervisorSection
from actormesh_supervisor import (
    Supervisor,
    SupervisorConfigError,
    SupervisorError,
    SupervisorOptions,
)
from actormesh_supervisor._host import HostAgent
from actormesh_supervisor._root import Root
from actormesh_supervisor._tree import Order, check_tree, host_name, plan
from actormesh_supervisor._treewire import (
    HostBeat,
    TreeCommand,
    decode_beat,
    decode_command,
    decode_escalation,
    encode,
)


def _opts(tmp_path: Path, groups: list[dict[str, Any]] | None = None, **sup: Any) -> Any:
    mf = msgspec.convert({"supervisor": sup, "groups": groups or []}, MeshFile)
    return SupervisorOptions(meshfile=mf, nats_url="nats://127.0.0.1:1", prefix="mesh",
                             runtime_dir=tmp_path, python=sys.executable)  # fmt: skip


def test_one_for_one_restarts_what_failed_and_cannot_restart_a_lost_host() -> None:
    hosts = ["a", "b", "c"]
    assert plan("one_for_one", origin="b", trigger="group", group="g", hosts=hosts) == [
        Order("b", "restart_group", "g")
    ]
    assert plan("one_for_one", origin="b", trigger="supervisor", group="", hosts=hosts) == [
        Order("b", "restart")
    ]
    assert plan("one_for_one", origin="b", trigger="lost", group="", hosts=hosts) == []


def test_one_for_all_restarts_every_reachable_host_supervisor_in_order() -> None:
    hosts = ["a", "b", "c"]
    everyone = [Order("a", "restart"), Order("b", "restart"), Order("c", "restart")]
    assert plan("one_for_all", origin="b", trigger="group", group="g", hosts=hosts) == everyone
    assert plan("one_for_all", origin="c", trigger="supervisor", group="", hosts=hosts) == everyone
    # The lost one is not reachable: the others are restarted.
    assert plan("one_for_all", origin="b", trigger="lost", group="", hosts=hosts) == [
        Order("a", "restart"), Order("c", "restart"),
    ]  # fmt: skip
    with pytest.raises(ValueError, match="rest_for_one"):
        plan("rest_for_one", origin="a", trigger="group", group="g", hosts=hosts)


@pytest.mark.parametrize(
    ("section", "groups", "message"),
    [
        ({"role": "leaf"}, [], "role must be one of standalone, host, root"),
        ({"role": "host", "host": "a.b", "name": "s"}, [], "supervisor.host 'a.b'"),
        ({"role": "host"}, [], "a host supervisor needs its own"),
        ({"role": "root", "strategy": "rest_for_one"}, [], "one_for_one, one_for_all"),
        ({"role": "root"}, [{"name": "g", "children": [{"name": "c", "actor": "m:C"}]}],
         "a root supervisor runs no workers"),
    ],
)  # fmt: skip
def test_tree_settings_are_checked(
    tmp_path: Path, section: dict[str, Any], groups: list[dict[str, Any]], message: str
) -> None:
    with pytest.raises(SupervisorConfigError, match=message):
        _opts(tmp_path, groups, **section)


def test_host_name_defaults_to_a_subject_token() -> None:
    assert host_name(SupervisorSection(host="edge-1")) == "edge-1"
    name = host_name(SupervisorSection())
    check_tree(SupervisorSection(role="host", host=name, name="sup-x"), [])
    Subjects("mesh").tree_control(name)  # a plain token: no dots, no wildcards
    assert "." not in name and name


def test_wire_messages_refuse_unknown_fields() -> None:
    beat = HostBeat(host="a", supervisor="sup-a", pid=1, started_at=1.0, sent_at=2.0,
                    interval=1.0, status="running")  # fmt: skip
    assert decode_beat(encode(beat)) == beat
    with pytest.raises(msgspec.ValidationError, match="unknown field"):
        decode_beat(encode(beat)[:-1] + b',"extra":1}')
    with pytest.raises(msgspec.ValidationError):
        decode_command(encode(TreeCommand(op="restart")).replace(b"restart", b"reboot"))
    with pytest.raises(msgspec.ValidationError):
        decode_escalation(b'{"id":"x","host":"a","supervisor":"s","scope":"host"}')


async def test_root_counts_lost_hosts_and_escalates_past_its_intensity(tmp_path: Path) -> None:
    exits: list[int] = []
    sup = Supervisor(_opts(tmp_path, role="root", intensity=1, period=60,
                           heartbeat_interval=0.5, heartbeat_misses=2))  # fmt: skip
    root = Root(sup, request_exit=exits.append)
    now = time.monotonic()
    for host in ("a", "b"):
        beat = HostBeat(host=host, supervisor=f"sup-{host}", pid=1, started_at=1.0,
                        sent_at=2.0, interval=0.5, status="running")  # fmt: skip
        await root._on_beat(_Msg(encode(beat)))  # type: ignore[arg-type]
    assert [v.state for v in root.hosts.values()] == ["running", "running"]
    root.check(now + 0.5)
    assert root.queue.empty()
    root.hosts["a"].last_seen = now - 5.0
    root.check(time.monotonic())
    assert root.hosts["a"].state == "lost" and root.hosts["a"].lost == 1
    await root.act(root.queue.get_nowait())  # one_for_one: counted, nothing to order
    assert sup.window.count(time.monotonic()) == 1 and exits == []
    root.hosts["b"].last_seen = now - 5.0
    root.check(time.monotonic())
    await root.act(root.queue.get_nowait())  # one restart too many: escalate
    assert exits == [3] and root.escalated and sup.failed
    assert "more than 1 restarts of host supervisors within 60s" in sup.failed_reason
    assert root.view()["escalated"] is True
    await root.tasks.cancel("test")
    await sup.tasks.cancel("test")


async def test_host_agent_beats_its_tree_and_refuses_an_unknown_group(tmp_path: Path) -> None:
    groups = [{"name": "g", "intensity": 2, "children": [{"name": "c", "actor": "m:C"}]}]
    sup = Supervisor(_opts(tmp_path, groups, role="host", host="a", name="sup-a"))
    agent = HostAgent(sup, request_exit=lambda code: None)
    assert agent.on_escalated in sup.escalator.hooks
    slot = sup.new_slot(sup.groups["g"], sup.child("c"), "c-1")
    slot.state, slot.failures = "running", 2
    beat = agent.beat()
    assert (beat.host, beat.supervisor, beat.status) == ("a", "sup-a", "starting")
    assert [(g.name, g.status, g.intensity) for g in beat.groups] == [("g", "ok", 2)]
    assert [(w.id, w.state, w.failures) for w in beat.groups[0].workers] == [("c-1", "running", 2)]
    sup.status = "running"
    with pytest.raises(SupervisorError, match="no group 'nope'"):
        agent._apply(TreeCommand(op="restart_group", group="nope"))
    assert agent.beat("stopped").status == "stopped"
    await asyncio.sleep(0)


class _Msg:
    """Just what a subscription callback reads of a message."""

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.reply = ""
