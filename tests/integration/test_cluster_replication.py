"""Issue 18, items 3 and 4 on a real three-node cluster (`nats_cluster`): every
stream and bucket the mesh makes takes the mesh-wide replicas; ones that exist
with fewer are scaled up; while a stream has no leader a sender sees a
retryable `BrokerUnavailable` (never `NoSuchActorType`) and its retries, under
the same message id, store the message once when the leader is back."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

import pytest

from actormesh import (
    ActorMeshError,
    AskTimeout,
    BrokerUnavailable,
    Mesh,
    NoSuchActorType,
    Replication,
)
from actormesh.lowlevel import ensure_system_streams
from actormesh.testing import NatsCluster, running_worker, unique_prefix
from tests.actors_state import Add, Ledger, Total
from tests.actors_tools import Vault

pytestmark = [
    pytest.mark.timeout(90),
    # nats-py leaves the socket of a connection to a killed server to the garbage
    # collector, which may warn about it at teardown: not this test's subject.
    pytest.mark.filterwarnings(
        r"ignore:Exception ignored in. <function StreamWriter.__del__"
        ":pytest.PytestUnraisableExceptionWarning"
    ),
]


@contextlib.asynccontextmanager
async def connected(url: str, *, replicas: int, **kw: float) -> AsyncIterator[Mesh]:
    mesh = await Mesh.connect(
        url, prefix=unique_prefix(), name="test", replication=Replication(replicas=replicas),
        **kw,  # type: ignore[arg-type]
    )  # fmt: skip
    assert mesh.replication == Replication(replicas=replicas)
    try:
        yield mesh
    finally:
        await mesh.close()


async def mesh_streams(mesh: Mesh) -> dict[str, int]:
    """Every stream of this mesh's prefix, with its replicas."""
    prefix = mesh.subjects.prefix
    out = {}
    for info in await mesh.js.streams_info():
        name = info.config.name or ""
        if name.upper().startswith(prefix.upper()) or name.startswith(f"KV_{prefix}_"):
            out[name] = info.config.num_replicas or 1
    return out


async def test_every_stream_and_bucket_of_the_mesh_is_r3(nats_cluster: NatsCluster) -> None:
    async with (
        connected(nats_cluster.url, replicas=3) as mesh,
        running_worker(mesh, Vault),
        running_worker(mesh, Ledger),
    ):
        await mesh.ref(Ledger, "a").tell(Add(by=1))
        await mesh.tools.grants.grant("tester", "vault.*")
        await mesh.tools.approvals.kv()
        streams = await mesh_streams(mesh)
    s, p = mesh.subjects, mesh.subjects.prefix
    expected = {
        s.mailbox_stream("vault"),
        s.mailbox_stream("ledger"),
        f"{p}_PARKED_VAULT".upper(),
        f"{p}_PARKED_LEDGER".upper(),
        s.dlq_stream,
        s.events_stream,
        f"KV_{s.state_bucket('vault')}",
        f"KV_{s.state_bucket('ledger')}",
        f"KV_{p}_tools",
        f"KV_{p}_grants",
        f"KV_{p}_approvals",
    }
    assert expected <= set(streams), sorted(expected - set(streams))
    assert {name: n for name, n in streams.items() if n != 3} == {}


async def replicas_of(mesh: Mesh, stream: str) -> int:
    """The stream's replicas, asked of it directly (a stream being scaled may be
    missing from a listing for a moment)."""
    for _ in range(50):
        with contextlib.suppress(Exception):
            return (await mesh.js.stream_info(stream)).config.num_replicas or 1
        await asyncio.sleep(0.2)
    raise AssertionError(f"no info for stream {stream}")


async def test_streams_and_buckets_made_r1_are_scaled_up(nats_cluster: NatsCluster) -> None:
    async with connected(nats_cluster.url, replicas=1) as mesh:
        await mesh.declare(Ledger)
        await mesh.tools.grants.grant("tester", "vault.*")
        mailbox, grants = (
            mesh.subjects.mailbox_stream("ledger"),
            f"KV_{mesh.subjects.prefix}_grants",
        )
        assert await replicas_of(mesh, mailbox) == await replicas_of(mesh, grants) == 1
        # The same mesh, moved to R3: what exists is scaled up.
        mesh.replication = Replication(replicas=3)
        await mesh.declare(Ledger)
        mesh.tools.grants._kv = None  # bound again, as a new process would
        await mesh.tools.grants.kv()
        assert await replicas_of(mesh, mailbox) == await replicas_of(mesh, grants) == 3
        # Never down: a process still at R1 leaves them at R3.
        mesh.replication = Replication(replicas=1)
        await mesh.declare(Ledger)
        mesh.tools.grants._kv = None
        await mesh.tools.grants.kv()
        assert await replicas_of(mesh, mailbox) == await replicas_of(mesh, grants) == 3
        # The bucket kept its entries through the scaling.
        assert (await mesh.tools.grants.get("tester", fresh=True)).tools == ["vault.*"]


async def test_without_a_leader_sends_are_unavailable_then_stored_once(
    nats_cluster: NatsCluster,
) -> None:
    """Two of three nodes down: the R3 mailbox has no quorum, so no leader. A tell
    retries (same id) and raises a retryable BrokerUnavailable at its timeout; an
    ask times out; a dead-letter publish is unavailable too; none of them says
    NoSuchActorType. A tell still trying when the nodes come back is stored once."""
    async with connected(nats_cluster.urls[0], replicas=3, publish_timeout=3.0) as mesh:
        await mesh.declare(Ledger)
        await ensure_system_streams(mesh.js, mesh.subjects, replicas=3)
        ref = mesh.ref(Ledger, "a")
        await ref.tell(Add(by=1), msg_id="first")
        await nats_cluster.kill(1)
        await nats_cluster.kill(2)
        with pytest.raises(BrokerUnavailable) as info:
            await ref.tell(Add(by=1), msg_id="during")
        assert info.value.retryable and info.value.msg_id == "during"
        assert info.value.reason in ("no_responders", "no_pub_ack", "jetstream_unavailable")
        with pytest.raises((AskTimeout, BrokerUnavailable)):
            await ref.ask(Total(), timeout=2.0)
        with pytest.raises(ActorMeshError) as dlq:
            await mesh.publish(mesh.subjects.dlq("ledger"), b"{}", headers={"Nats-Msg-Id": "d"})
        assert not isinstance(dlq.value, NoSuchActorType)
        assert dlq.value.retryable

        # A send that keeps trying across the outage: stored once, under its id.
        patient = await Mesh.connect(nats_cluster.urls[0], prefix=mesh.subjects.prefix,
                                     publish_timeout=60.0)  # fmt: skip
        try:
            sending = asyncio.create_task(patient.ref(Ledger, "a").tell(Add(by=1), msg_id="during"))
            await asyncio.sleep(1.0)
            assert not sending.done()
            await nats_cluster.restart(1)
            await nats_cluster.restart(2)
            receipt = await asyncio.wait_for(sending, 50)
        finally:
            await patient.close()
        again = await ref.tell(Add(by=1), msg_id="during")
        assert again.duplicate and again.seq == receipt.seq
        stream = mesh.subjects.mailbox_stream("ledger")
        state = (await mesh.js.stream_info(stream)).state
        ids = [
            ((await mesh.js.get_msg(stream, seq)).headers or {}).get("Nats-Msg-Id")
            for seq in range(state.first_seq, state.last_seq + 1)
        ]
        # "first" and "during" once each (the ask's message may be there too: it
        # was proposed before the quorum went, and expires unrun).
        assert ids.count("first") == ids.count("during") == 1


async def test_a_missing_stream_is_still_no_such_actor_type(nats_cluster: NatsCluster) -> None:
    async with connected(nats_cluster.url, replicas=3) as mesh:
        with pytest.raises(NoSuchActorType):
            await mesh.ref("nobody", "k").tell(b'{"type":"X"}')
        with pytest.raises(ActorMeshError) as info:
            await mesh.publish(mesh.subjects.dlq("nobody"), b"{}")
        assert info.value.code == "no_stream"
        assert not isinstance(info.value, NoSuchActorType)


async def test_tool_calls_go_on_after_the_mailbox_leader_dies(nats_cluster: NatsCluster) -> None:
    async with (
        connected(nats_cluster.url, replicas=3, publish_timeout=20.0) as mesh,
        running_worker(mesh, Vault),
    ):
        await mesh.tools.grants.grant("tester", "vault.*")
        call = {"key": "k", "amount": 1}
        assert await mesh.tools.call("vault.deposit", call, principal="tester") == 1
        stream = mesh.subjects.mailbox_stream("vault")
        leader = await nats_cluster.stream_leader(mesh.js, stream)
        await nats_cluster.kill(nats_cluster.index_of(leader))
        call = {"key": "k", "amount": 2}
        assert await mesh.tools.call("vault.deposit", call, principal="tester", timeout=40.0) == 3


async def test_an_ask_lost_in_a_frozen_node_is_sent_again_and_runs_once(
    nats_cluster: NatsCluster,
) -> None:
    """The node an asker is connected to freezes (SIGSTOP) with the ask written to
    its socket, never stored. The asker notices (pings), moves to another node and
    sends the ask again under the id an ask carries on a cluster: it is answered,
    and it runs once, also after the node wakes up and reads the first copy."""
    urls = nats_cluster.urls
    async with (
        connected(urls[1], replicas=3, publish_timeout=20.0) as served,
        running_worker(served, Vault),
    ):
        await served.tools.grants.grant("tester", "vault.*")
        asker = await Mesh.connect(
            urls[0], prefix=served.subjects.prefix, name="asker", ping_interval=1,
            max_outstanding_pings=2,
        )  # fmt: skip
        try:
            assert asker.clustered
            deposit = {"key": "k", "amount": 1}
            assert await asker.tools.call("vault.deposit", deposit, principal="tester") == 1
            nats_cluster.pause(0)
            try:
                deposit = {"key": "k", "amount": 2}
                call = asker.tools.call("vault.deposit", deposit, principal="tester", timeout=40)
                assert await call == 3
            except BaseException:
                # What a failure needs to be read: where each connection went.
                for who, m in (("asker", asker), ("worker", served)):
                    print(who, m.nc.connected_url, m.nc.stats, m.nc.servers)
                raise
            finally:
                nats_cluster.resume(0)
            assert asker.nc.connected_url is not None and asker.nc.connected_url.port != (
                int(urls[0].rsplit(":", 1)[1])
            )
            # The first copy, if the woken node stores it now, is the same message.
            await asyncio.sleep(2.0)
            balance = await asker.tools.call("vault.balance", {"key": "k"}, principal="tester")
            assert balance == 3
        finally:
            await asker.close()
