"""Server lists: `Mesh.connect`, NATS_URL and --nats-url take several servers
(comma-separated, as the nats CLI does); a bad URL is named at once; a mesh on a
cluster moves to another node when its own dies."""

from __future__ import annotations

import asyncio

import pytest
from nats.js.api import StreamConfig

from actormesh import BadServerUrl, BrokerUnavailable, ConfigError, Mesh
from actormesh._cluster import free_ports
from actormesh._settings import Settings, redact, server_list
from actormesh.testing import NatsCluster, running_worker
from actormesh_counter import Counter, Get, Inc
from tests.integration.test_cli import cli

pytestmark = pytest.mark.integration


def dead_url() -> str:
    """A loopback port nothing listens on (it was free a moment ago)."""
    return f"nats://127.0.0.1:{free_ports(1)[0]}"


def port_of(url: str) -> int:
    return int(url.rsplit(":", 1)[1])


@pytest.mark.parametrize("as_list", [False, True])
async def test_connects_past_a_dead_first_server(
    nats_url: str, mesh_prefix: str, as_list: bool
) -> None:
    dead = dead_url()
    servers: str | list[str] = [dead, nats_url] if as_list else f"{dead}, {nats_url}"
    # In the given order, so the dead one is really tried first.
    mesh = await Mesh.connect(servers, prefix=mesh_prefix, dont_randomize=True)
    try:
        assert mesh.nc.connected_url is not None
        assert mesh.nc.connected_url.port == port_of(nats_url)
        async with running_worker(mesh, Counter):
            ref = mesh.ref("counter", "k")
            await ref.tell(Inc(by=2))
            assert await ref.ask(Get(), timeout=10, reply_type=int) == 2
    finally:
        await mesh.close()


@pytest.mark.parametrize(
    ("servers", "bad"),
    [
        ("nats://127.0.0.1:4222,nats://127.0.0.1:notaport", "nats://127.0.0.1:notaport"),
        (
            "nats://127.0.0.1:4222 nats://127.0.0.1:4223",
            "nats://127.0.0.1:4222 nats://127.0.0.1:4223",
        ),
        ("http://127.0.0.1:4222", "http://127.0.0.1:4222"),
        (" , ", " , "),
        ("nats://u:hunter2@127.0.0.1:99999", "nats://u:***@127.0.0.1:99999"),
    ],
)
async def test_a_bad_url_is_named_at_once(servers: str, bad: str) -> None:
    # A long connect_wait: the error must not come from waiting it out.
    with pytest.raises(BadServerUrl) as info:
        await Mesh.connect(servers, connect_wait=300)
    err = info.value
    assert isinstance(err, ConfigError) and not err.retryable
    assert err.url == bad and bad in str(err)
    assert "hunter2" not in str(err) and "hunter2" not in err.servers
    assert "tried for" not in str(err) and "Is the broker running" not in str(err)


async def test_no_server_answering_is_broker_unavailable() -> None:
    dead1, dead2 = dead_url(), dead_url()
    with pytest.raises(BrokerUnavailable) as info:
        await Mesh.connect(f"{dead1},{dead2}", connect_wait=1)
    err = info.value
    assert err.retryable and err.reason == "connect"
    assert err.url == f"{dead1},{dead2}"
    assert "none of the 2 servers answered" in str(err) and dead1 in str(err) and dead2 in str(err)
    assert "ConnectionRefusedError" in str(err) or "Connect call failed" in str(err)


def test_server_lists_from_the_environment() -> None:
    s = Settings.from_env({"NATS_URL": "nats://a:4222, nats://b:4223,c:4224"})
    assert s.servers == ["nats://a:4222", "nats://b:4223", "c:4224"]
    assert Settings.from_env({}).servers == ["nats://127.0.0.1:4222"]
    assert server_list(["nats://a:1,nats://b:2", "tls://c:3"]) == [
        "nats://a:1",
        "nats://b:2",
        "tls://c:3",
    ]
    assert server_list("ws://h:8080/nats") == ["ws://h:8080/nats"]
    with pytest.raises(BadServerUrl, match="websocket and nats URLs mixed"):
        server_list("nats://a:1,ws://b:2")
    assert redact("nats://u:pw@a:1,nats://tok@b:2,c:3") == "nats://u:***@a:1,nats://***@b:2,c:3"


async def test_cli_takes_server_lists(
    mesh: Mesh, nats_url: str, subprocess_env: dict[str, str]
) -> None:
    servers = f"{dead_url()},{nats_url}"
    async with running_worker(mesh, Counter):
        env = dict(subprocess_env, NATS_URL=servers)
        out = await cli(env, "tell", "counter", "k", '{"type":"Inc","by":1}')
        assert out.returncode == 0, out.stderr
        env = dict(subprocess_env, NATS_URL="nats://127.0.0.1:1")
        out = await cli(env, "--nats-url", servers, "ask", "counter", "k", '{"type":"Get"}')
        assert out.returncode == 0, out.stderr
        assert out.stdout.strip() == "1"
    out = await cli(subprocess_env, "--nats-url", f"{nats_url},nats://h:x", "dlq", "list")
    assert out.returncode == 1
    assert "bad NATS server URL 'nats://h:x'" in out.stderr
    assert "Is the broker running" not in out.stderr


@pytest.mark.timeout(90)
async def test_mesh_moves_to_another_node_when_its_node_dies(
    nats_cluster: NatsCluster, mesh_prefix: str
) -> None:
    mesh = await Mesh.connect(nats_cluster.url, prefix=mesh_prefix, name="mover")
    reconnected = asyncio.Event()

    async def on_reconnect() -> None:
        reconnected.set()

    mesh.on_reconnect(on_reconnect)
    try:
        stream = f"{mesh_prefix.upper()}_MOVE"
        await mesh.js.add_stream(
            StreamConfig(name=stream, subjects=[f"{mesh_prefix}.move"], num_replicas=3)
        )
        await mesh.js.publish(f"{mesh_prefix}.move", b"1")
        on = mesh.nc.connected_url
        assert on is not None and on.port is not None
        mine = [port_of(u) for u in nats_cluster.urls].index(on.port)
        await nats_cluster.kill(mine)
        await asyncio.wait_for(reconnected.wait(), 30)
        now = mesh.nc.connected_url
        assert now is not None and now.port != port_of(nats_cluster.urls[mine])
        await nats_cluster.stream_leader(mesh.js, stream)
        ack = await mesh.js.publish(f"{mesh_prefix}.move", b"2", timeout=15)
        assert ack.seq == 2
    finally:
        await mesh.close()


# nats-py 2.16 leaks a StreamWriter when a reconnect attempt reaches a frozen server
# (TCP accepted, no INFO before connect_timeout): TcpTransport.connect replaces its
# writer without closing the old one, and its __del__ warns. An outside bug.
@pytest.mark.filterwarnings(
    r"ignore:Exception ignored in. <function (StreamWriter|_SelectorTransport).__del__"
    r":pytest.PytestUnraisableExceptionWarning"
)
@pytest.mark.timeout(90)
async def test_mesh_leaves_a_frozen_node(nats_cluster: NatsCluster, mesh_prefix: str) -> None:
    """A node that stops answering (SIGSTOP) holds its socket open: the mesh's pings
    notice it and the connection moves to another node while it is still frozen."""
    mesh = await Mesh.connect(nats_cluster.url, prefix=mesh_prefix, name="frozen")
    reconnected = asyncio.Event()

    async def on_reconnect() -> None:
        reconnected.set()

    mesh.on_reconnect(on_reconnect)
    on = mesh.nc.connected_url
    assert on is not None and on.port is not None
    mine = [port_of(u) for u in nats_cluster.urls].index(on.port)
    nats_cluster.pause(mine)
    try:
        # nats-py's own default (pings every 120 s) would hold on for minutes.
        await asyncio.wait_for(reconnected.wait(), 45)
        now = mesh.nc.connected_url
        assert now is not None and now.port != on.port
        await nats_cluster.wait_ready()
        reply = await mesh.nc.request("$JS.API.INFO", b"", timeout=5)
        assert b'"error"' not in reply.data
    finally:
        nats_cluster.resume(mine)
        await mesh.close()
