"""No silent split, without a broker: the config check refuses a keyed actor with
replicas on one partition, and `SplitWatch` finds two workers of a keyed type
serving one partition from their heartbeats."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import msgspec
import pytest

from actormesh import ConfigError, Heartbeat
from actormesh.lowlevel import MeshFile, load_meshfile
from actormesh_supervisor import NoneBackend, Supervisor, SupervisorConfigError, SupervisorOptions
from actormesh_supervisor._snapshot import snapshot
from actormesh_supervisor._views import WorkerView

ROOT = Path(__file__).resolve().parents[3]


def _opts(tmp_path: Path, children: list[dict[str, Any]], **sup: Any) -> SupervisorOptions:
    groups = [{"name": "g", "children": children}]
    mf = msgspec.convert({"supervisor": sup, "groups": groups}, MeshFile)
    return SupervisorOptions(meshfile=mf, nats_url="nats://127.0.0.1:1", prefix="mesh",
                             runtime_dir=tmp_path, python=sys.executable)  # fmt: skip


def _child(actor: str, replicas: int) -> dict[str, Any]:
    return {"name": "c", "actor": f"tests.actors_split:{actor}", "replicas": replicas}


def test_keyed_replicas_on_one_partition_are_refused_naming_partitions(tmp_path: Path) -> None:
    with pytest.raises(SupervisorConfigError) as info:
        _opts(tmp_path, [_child("Tally", 2)])
    text = str(info.value)
    assert isinstance(info.value, ConfigError)
    assert "keyed actor on an unpartitioned mailbox" in text
    assert "partitions = 2" in text and "replicas = 2" in text
    assert "MailboxConfig(partitions=2)" in text


def test_keyless_replicas_and_one_keyed_worker_are_allowed(tmp_path: Path) -> None:
    _opts(tmp_path, [_child("KeylessTally", 5)])
    _opts(tmp_path, [_child("Tally", 1)])


def test_a_partitioned_mailbox_needs_one_replica_per_partition(tmp_path: Path) -> None:
    _opts(tmp_path, [_child("PartitionedTally", 2)])
    for replicas in (1, 3):
        with pytest.raises(SupervisorConfigError, match=r"partitions = 2.*set replicas = 2"):
            _opts(tmp_path, [_child("PartitionedTally", replicas)])


def test_what_cannot_be_imported_is_left_to_detection(tmp_path: Path) -> None:
    # The worker's own environment may import it; heartbeats still show a split.
    _opts(tmp_path, [{"name": "c", "actor": "no_such_module_here:X", "replicas": 3}])
    _opts(tmp_path, [{"name": "c", "command": ["true"], "replicas": 3}])


@pytest.mark.parametrize("path", ["mesh.toml", "docker/mesh.compose.toml"])
def test_the_example_meshes_pass_the_check(tmp_path: Path, path: str) -> None:
    mf = load_meshfile(ROOT / path)
    SupervisorOptions(meshfile=mf, nats_url="nats://127.0.0.1:1", prefix="mesh",
                      runtime_dir=tmp_path, python=sys.executable)  # fmt: skip


def _hb(worker: str, actor_type: str, *, keyed: bool = True, partition: int = -1,
        status: str = "running") -> Heartbeat:  # fmt: skip
    return Heartbeat(
        worker=worker, actor_type=actor_type, pid=1, host="h", started_at=1.0, seq=1,
        in_flight=0, handled=0, failed=0, dead_lettered=0, restarts=0, version="v",
        status=status, keyed=keyed, partition=partition, instances=3, passivated=2, parked=1,
    )  # fmt: skip


def _see(sup: Supervisor, now: float, *hbs: Heartbeat) -> None:
    for hb in hbs:
        view = sup.views.get(hb.worker)
        if view is None:
            sup.views[hb.worker] = WorkerView(hb, now)
        else:
            view.update(hb, now)


async def test_two_live_workers_of_a_keyed_type_on_one_partition_are_reported(
    tmp_path: Path,
) -> None:
    sup = Supervisor(_opts(tmp_path, [], heartbeat_interval=1.0, heartbeat_misses=3),
                     backend=NoneBackend())  # fmt: skip
    watch = sup.splits
    pair = (_hb("a", "tally"), _hb("b", "tally"))
    others = (
        _hb("k1", "echo", keyed=False), _hb("k2", "echo", keyed=False),  # keyless: fine
        _hb("p0", "parts", partition=0), _hb("p1", "parts", partition=1),  # one each
        _hb("d1", "gone"), _hb("d2", "gone", status="draining"),  # one running
    )  # fmt: skip
    _see(sup, 100.0, *pair, *others)
    assert set(watch.serving(100.0)) == {("tally", -1)}
    # A crashed worker seems live until it misses its heartbeats: not yet a split.
    assert watch.check(100.0) == []
    _see(sup, 102.0, *pair, *others)
    assert watch.check(102.0) == []
    _see(sup, 103.5, *pair, *others)
    [split] = watch.check(103.5)
    assert (split.actor_type, split.partition, split.workers) == ("tally", -1, ("a", "b"))
    assert "partitions=2" in split.fix and "replicas = 2" in split.fix
    assert watch.detected_total == 1
    # Reported once, not at every tick.
    _see(sup, 104.0, *pair)
    assert watch.check(104.0) == []

    state = snapshot(sup)
    assert [s["workers"] for s in state["splits"]] == [["a", "b"]]
    by_id = {w["id"]: w for w in state["workers"]}
    assert by_id["a"]["split_with"] == ["b"] and by_id["k1"]["split_with"] == []
    assert (by_id["a"]["instances"], by_id["a"]["passivated"], by_id["a"]["parked"]) == (3, 2, 1)
    assert by_id["a"]["keyed"] is True and by_id["k1"]["keyed"] is False

    # One of them stops: the split is over.
    _see(sup, 105.0, _hb("a", "tally"), _hb("b", "tally", status="stopped"))
    assert watch.check(105.0) == [] and watch.splits == {}
    await sup.tasks.cancel("test")


def test_an_old_heartbeat_without_the_new_fields_still_decodes() -> None:
    old = (
        b'{"worker":"w","actor_type":"a","pid":1,"host":"h","started_at":1.0,"seq":1,'
        b'"in_flight":0,"handled":0,"failed":0,"dead_lettered":0,"restarts":0,'
        b'"version":"v","status":"running"}'
    )
    hb = msgspec.json.decode(old, type=Heartbeat)
    assert (hb.keyed, hb.instances, hb.passivated, hb.parked, hb.partition) == (
        False, 0, 0, 0, -1,
    )  # fmt: skip
