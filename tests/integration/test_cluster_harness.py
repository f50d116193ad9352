"""`actormesh.testing.NatsCluster`: three real nats-servers on loopback form a
JetStream cluster, and a node can be killed, restarted, paused and resumed."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import time
from collections.abc import AsyncIterator
from typing import Any

import nats
import pytest
import pytest_asyncio
from nats.aio.client import Client
from nats.js import JetStreamContext
from nats.js.api import Placement, StreamConfig

from actormesh.testing import NatsCluster

pytestmark = pytest.mark.integration

STREAM = "HARNESS"


@pytest_asyncio.fixture
async def client(nats_cluster: NatsCluster) -> AsyncIterator[Client]:
    nc = await nats.connect(nats_cluster.urls, reconnect_time_wait=0.2, max_reconnect_attempts=-1)
    try:
        yield nc
    finally:
        await nc.close()


async def r3_stream(js: JetStreamContext) -> None:
    await js.add_stream(StreamConfig(name=STREAM, subjects=["harness.>"], num_replicas=3))


async def first_write(js: JetStreamContext, timeout: float = 15) -> int:
    """The new stream's first message, once it takes writes: just after the stream
    is created its leader's interest in the subjects may not have reached this
    client's server yet (no responders)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            return (await js.publish("harness.a", b"first", timeout=5)).seq
        except nats.js.errors.NoStreamResponseError:  # nats-py's name for no responders
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.2)


async def replicas_current(js: JetStreamContext, names: set[str], timeout: float = 30) -> None:
    """Wait until the stream's leader and current followers are `names`."""
    deadline = time.monotonic() + timeout
    seen: Any = None
    while time.monotonic() < deadline:
        try:
            info = await js.stream_info(STREAM)
        except (nats.errors.Error, TimeoutError) as exc:
            seen = exc
        else:
            cluster = info.cluster
            if cluster is not None and cluster.leader:
                current = {cluster.leader} | {
                    r.name for r in cluster.replicas or [] if r.current and not r.offline
                }
                seen = current
                if current == names:
                    return
        await asyncio.sleep(0.1)
    raise AssertionError(f"stream replicas never {sorted(names)}: last {seen!r}")


async def test_cluster_forms_with_named_nodes(nats_cluster: NatsCluster, client: Client) -> None:
    assert nats_cluster.names == ["n1", "n2", "n3"]
    assert len(set(nats_cluster.urls)) == 3
    assert all(u.startswith("nats://127.0.0.1:") for u in nats_cluster.urls)
    assert nats_cluster.url == ",".join(nats_cluster.urls)
    # Each node keeps its JetStream store apart, under the cluster's root.
    stores = {s.store_dir for s in nats_cluster.servers}
    assert len(stores) == 3
    assert all(p.parent == nats_cluster.store_root for p in stores)
    js = client.jetstream()
    await r3_stream(js)
    await replicas_current(js, {"n1", "n2", "n3"})
    ack = await js.publish("harness.a", b"1")
    assert ack.stream == STREAM and ack.seq == 1
    leader = await nats_cluster.stream_leader(js, STREAM)
    assert leader in nats_cluster.names
    assert nats_cluster.names[nats_cluster.index_of(leader)] == leader
    # The client learned every node from the one it reached.
    assert {f"{u.hostname}:{u.port}" for u in client.servers} >= {
        u.removeprefix("nats://") for u in nats_cluster.urls
    }


@pytest.mark.timeout(120)
async def test_kill_leader_elects_another_and_restart_rejoins(
    nats_cluster: NatsCluster, client: Client
) -> None:
    js = client.jetstream()
    await r3_stream(js)
    assert await first_write(js) == 1
    old = await nats_cluster.stream_leader(js, STREAM)
    i = nats_cluster.index_of(old)
    await nats_cluster.kill(i)
    assert not nats_cluster.running(i)
    new = await nats_cluster.stream_leader(client, STREAM)
    assert new != old
    ack = await js.publish("harness.a", b"after", timeout=15)
    assert ack.seq == 2

    port = nats_cluster.servers[i].port
    await nats_cluster.restart(i)
    assert nats_cluster.running(i)
    assert nats_cluster.servers[i].port == port  # same client port: the URL list holds
    await replicas_current(js, {"n1", "n2", "n3"})
    # The rejoined node serves the stream's data, read through it alone.
    only = await nats.connect(nats_cluster.urls[i], allow_reconnect=False)
    try:
        msg = await only.jetstream().get_msg(STREAM, 2)
        assert msg.data == b"after"
    finally:
        await only.close()


@pytest.mark.timeout(120)
async def test_pause_and_resume_a_node(nats_cluster: NatsCluster, client: Client) -> None:
    js = client.jetstream()
    await r3_stream(js)
    assert await first_write(js) == 1  # the stream serves before anything is paused
    leader = await nats_cluster.stream_leader(js, STREAM)
    # Pause a follower this client is not on: to the client a paused node's socket
    # looks alive until pings go unanswered, minutes later.
    on = client.connected_url.port if client.connected_url else None
    follower = next(
        i
        for i, (name, url) in enumerate(zip(nats_cluster.names, nats_cluster.urls, strict=True))
        if name != leader and not url.endswith(f":{on}")
    )
    nats_cluster.pause(follower)
    try:
        # Two of three nodes are a quorum: writes go on without the paused one.
        ack = await js.publish("harness.a", b"while paused", timeout=15)
        assert ack.seq == 2
        await nats_cluster.wait_ready()
        await replicas_current(js, set(nats_cluster.names) - {nats_cluster.names[follower]})
    finally:
        nats_cluster.resume(follower)
    await nats_cluster.wait_ready()
    await replicas_current(js, {"n1", "n2", "n3"})


async def test_fixed_ports_and_a_bad_node_count(tmp_path: Any) -> None:
    from actormesh import ActorMeshError
    from actormesh._cluster import free_ports

    with pytest.raises(ActorMeshError, match="one per node"):
        NatsCluster(nodes=2, ports=[1])
    with pytest.raises(ActorMeshError, match="at least one node"):
        NatsCluster(nodes=0)
    ports = free_ports(4)
    async with NatsCluster(
        nodes=2,
        store_root=tmp_path,
        ports=ports[:2],
        cluster_ports=ports[2:],
        server_tags=[["a"], ["b", "ssd"]],
    ) as cluster:
        assert cluster.urls == [f"nats://127.0.0.1:{p}" for p in ports[:2]]
        assert [s.cluster_port for s in cluster.servers] == ports[2:]
        assert (tmp_path / "n1" / "nats-server.conf").exists()
        # Placement by tag puts an R1 stream on the node that has the tags.
        nc = await nats.connect(cluster.urls)
        try:
            js = nc.jetstream()
            await js.add_stream(
                StreamConfig(name="TAGGED", subjects=["tagged"], placement=Placement(tags=["ssd"]))
            )
            assert await cluster.stream_leader(js, "TAGGED") == "n2"
        finally:
            await nc.close()


@pytest.mark.timeout(90)
async def test_keep_alive_restarts_a_node_that_died_on_its_own(nats_cluster: NatsCluster) -> None:
    said: list[str] = []
    keeper = asyncio.ensure_future(nats_cluster.keep_alive(delay=0.1, say=said.append))
    try:
        old = nats_cluster.servers[1].pid
        assert old is not None
        os.kill(old, signal.SIGKILL)  # from outside: a crash
        deadline = time.monotonic() + 30
        while not any("n2 is back" in s for s in said):
            assert time.monotonic() < deadline, said
            await asyncio.sleep(0.05)
        assert nats_cluster.running(1) and nats_cluster.servers[1].pid != old
        await nats_cluster.wait_ready()
        # A node stopped on purpose stays down.
        await nats_cluster.kill(2)
        await asyncio.sleep(0.5)
        assert not nats_cluster.running(2)
        assert not any("n3" in s for s in said)
    finally:
        keeper.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await keeper
