"""Partitioned mailboxes: keyed actors scale with replicas, each key in one worker."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import ClassVar

import pytest

from actormesh import Actor, ConfigError, MailboxConfig, Mesh, Message, WorkerConfig
from actormesh._dlq import DeadLetters
from actormesh.testing import running_worker
from tests.integration.test_mesh import eventually

pytestmark = pytest.mark.integration


class Add(Message):
    n: int


class Total(Message):
    pass


class Tally(Actor):
    actor_type = "tally"
    mailbox: ClassVar[MailboxConfig] = MailboxConfig(partitions=3)
    seen: ClassVar[dict[str, list[int]]] = {}

    def __init__(self) -> None:
        self.total = 0

    async def add(self, msg: Add) -> None:
        self.total += msg.n
        type(self).seen.setdefault(self.key, []).append(msg.n)

    async def get(self, msg: Total) -> int:
        return self.total


@pytest.fixture
async def meshes(nats_url: str, mesh_prefix: str) -> AsyncIterator[list[Mesh]]:
    out = [await Mesh.connect(nats_url, prefix=mesh_prefix) for _ in range(3)]
    yield out
    for m in out:
        await m.close()


async def test_each_key_lives_in_exactly_one_partition_worker(
    mesh: Mesh, meshes: list[Mesh]
) -> None:
    Tally.seen = {}
    keys = [f"user-{i}" for i in range(24)]
    workers = [running_worker(m, Tally, WorkerConfig(partition=p)) for p, m in enumerate(meshes)]
    async with workers[0] as w0, workers[1] as w1, workers[2] as w2:
        for n in range(1, 21):
            for key in keys:
                await mesh.ref(Tally, key).tell(Add(n=n))
        for key in keys:
            assert await mesh.ref(Tally, key).ask(Total()) == sum(range(1, 21))
        owners = {key: [w.partition for w in (w0, w1, w2) if key in w._instances] for key in keys}
        handled = [w0.handled, w1.handled, w2.handled]
    # Every key was served by one worker only (its state never split) ...
    assert all(len(o) == 1 for o in owners.values()), owners
    # ... in publish order, and the keys did spread over the partitions.
    assert all(Tally.seen[k] == list(range(1, 21)) for k in keys)
    assert len({o[0] for o in owners.values()}) > 1
    assert sum(handled) == len(keys) * 21


async def test_a_worker_must_name_its_partition(mesh: Mesh) -> None:
    with pytest.raises(ConfigError, match=r"--partition 0\.\.2"):
        async with running_worker(mesh, Tally):
            pass
    with pytest.raises(ConfigError, match="got 3"):
        async with running_worker(mesh, Tally, WorkerConfig(partition=3)):
            pass


async def test_dead_letters_of_a_partition_replay_to_the_sender_subject(
    mesh: Mesh, meshes: list[Mesh]
) -> None:
    async with (
        running_worker(meshes[0], Tally, WorkerConfig(partition=0)) as w0,
        running_worker(meshes[1], Tally, WorkerConfig(partition=1)) as w1,
        running_worker(meshes[2], Tally, WorkerConfig(partition=2)) as w2,
    ):
        await mesh.publish(mesh.subjects.mailbox("tally", "k7"), b'{"type":"Nope"}')
        await eventually(lambda: w0.dead_lettered + w1.dead_lettered + w2.dead_lettered == 1)
        (letter,) = await DeadLetters(mesh).list("tally")
        assert letter.original_subject == mesh.subjects.mailbox("tally", "k7")
        await DeadLetters(mesh).replay(letter.seq)
        await eventually(lambda: w0.dead_lettered + w1.dead_lettered + w2.dead_lettered == 2)


async def test_declare_creates_every_partition_consumer(mesh: Mesh) -> None:
    await mesh.declare(Tally)
    stream = mesh.subjects.mailbox_stream("tally")
    names = sorted(c.name for c in await mesh.js.consumers_info(stream))
    assert names == ["tally_p0", "tally_p1", "tally_p2"]


async def test_a_partition_workers_metrics_show_its_consumer(mesh: Mesh) -> None:
    from prometheus_client import CollectorRegistry, generate_latest

    from actormesh.observability import WorkerMetrics

    async with running_worker(mesh, Tally, WorkerConfig(partition=1)) as worker:
        registry = CollectorRegistry()
        metrics = WorkerMetrics(worker, registry, poll_interval=60)
        try:
            assert await metrics.poll_mailbox()
            text = generate_latest(registry).decode()
        finally:
            await metrics.close()
    assert 'actormesh_consumer_pending_messages{actor_type="tally"}' in text
    assert 'actormesh_consumer_waiting_pulls{actor_type="tally"}' in text
