"""Issue 15, item 7 on a real three-node cluster: the node holding the dead-letter
stream dies while a message has its last delivery; the message waits in the
mailbox and is dead-lettered once the node is back. And the dead-letter and
events streams follow the mailbox's replicas."""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AsyncExitStack, asynccontextmanager
from pathlib import Path
from typing import ClassVar

import nats
import pytest
from nats.js.api import Placement, RetentionPolicy, StorageType, StreamConfig

from actormesh import BrokerUnavailable, MailboxConfig, Mesh, NoSuchActorType
from actormesh._server import ServerConfig
from actormesh.lowlevel import DeadLetters
from actormesh.testing import NatsServer, running_worker
from actormesh.testing._harness import unique_prefix
from tests.actors_settlement import Misbehaving, Raise

pytestmark = [pytest.mark.chaos, pytest.mark.timeout(240)]


class Replicated(Misbehaving):
    actor_type = "replicated"
    mailbox: ClassVar[MailboxConfig] = MailboxConfig(max_deliver=2, backoff=(0.2,), replicas=3)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


async def eventually(check: Callable[[], Awaitable[bool]], timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            if await check():
                return
        except Exception:
            if time.monotonic() > deadline:
                raise
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached in time")
        await asyncio.sleep(0.2)


@asynccontextmanager
async def cluster(tmp: Path) -> AsyncIterator[list[NatsServer]]:
    """Three JetStream nodes, tagged n0..n2, routed to each other."""
    routes = [free_port() for _ in range(3)]
    nodes = []
    for i in range(3):
        conf = tmp / f"n{i}.conf"
        others = ", ".join(f"nats-route://127.0.0.1:{p}" for j, p in enumerate(routes) if j != i)
        conf.write_text(
            f"server_name: n{i}\n"
            f'server_tags: ["n{i}"]\n'
            f'jetstream {{ store_dir: "{tmp / f"js{i}"}" }}\n'
            f"cluster {{ name: c15, listen: 127.0.0.1:{routes[i]}, routes: [{others}] }}\n"
        )
        nodes.append(NatsServer(ServerConfig(port=free_port(), config_file=conf)))
    async with AsyncExitStack() as stack:
        for node in nodes:
            await node.start()
            stack.push_async_callback(node.stop)

        async def meta_ready() -> bool:
            nc = await nats.connect(nodes[0].url)
            try:
                await nc.jetstream().account_info()
                return True
            finally:
                await nc.close()

        await eventually(meta_ready)
        yield nodes


async def test_dead_letter_node_down_at_the_last_delivery_then_back(tmp_path: Path) -> None:
    async with cluster(tmp_path) as nodes:
        # The dead-letter stream, R1 on n2 (made by an older version, say): the worker
        # scales it to the mailbox's replicas at start, so it is remade R1 after.
        mesh = await Mesh.connect(nodes[0].url, prefix=unique_prefix(), name="test")
        try:
            js, subjects = mesh.js, mesh.subjects
            Misbehaving.ran.clear()
            async with running_worker(mesh, Replicated) as worker:
                dlq = await js.stream_info(subjects.dlq_stream)
                assert dlq.config.num_replicas == 3  # follows the mailbox
                events = await js.stream_info(subjects.events_stream)
                assert events.config.num_replicas == 3
                await js.delete_stream(subjects.dlq_stream)
                await js.add_stream(
                    StreamConfig(
                        name=subjects.dlq_stream,
                        subjects=[f"{subjects.prefix}.dlq.>"],
                        retention=RetentionPolicy.LIMITS,
                        storage=StorageType.FILE,
                        num_replicas=1,
                        duplicate_window=120.0,
                        placement=Placement(tags=["n2"]),
                    )
                )
                await nodes[2].stop(kill=True)  # the node holding the dead letters dies

                # The dead node may have led the mailbox stream: until the others have
                # elected a new leader the broker answers 503, which the sender reports as
                # NoSuchActorType today (making it a retryable error is issue 18's).
                deadline = time.monotonic() + 60
                # One id for every attempt: a try whose PubAck was lost in the election
                # may have been stored, and must not be stored twice.
                msg_id = mesh.new_msg_id()
                while True:
                    try:
                        await mesh.ref(Replicated, "m").tell(
                            Raise(what="HandlerError"), msg_id=msg_id
                        )
                        break
                    except (NoSuchActorType, BrokerUnavailable):
                        if time.monotonic() > deadline:
                            raise
                        await asyncio.sleep(0.5)
                stream = subjects.mailbox_stream(Replicated.actor_type)
                durable = subjects.consumer(Replicated.actor_type)

                async def tried_past_the_last_delivery() -> bool:
                    info = await js.consumer_info(stream, durable)
                    delivered: int = info.delivered.consumer_seq
                    return delivered >= Replicated.mailbox.max_deliver + 2

                await eventually(tried_past_the_last_delivery)
                assert (await js.stream_info(stream)).state.messages == 1  # not lost
                assert worker.dead_lettered == 0

                await nodes[2].start()  # back

                async def dead_lettered() -> bool:
                    info = await js.consumer_info(stream, durable)
                    box = await js.stream_info(stream)
                    return (
                        worker.dead_lettered == 1
                        and box.state.messages == 0
                        and info.num_ack_pending == 0
                        and info.num_pending == 0
                    )

                await eventually(dead_lettered, timeout=90)
                assert worker.status == "running"
            (letter,) = await DeadLetters(mesh).list(Replicated.actor_type)
            assert (letter.error_code, letter.error_type) == ("nope", "HandlerError")
            assert Misbehaving.ran["HandlerError"] == Replicated.mailbox.max_deliver
        finally:
            await mesh.close()


async def test_system_streams_are_scaled_up_to_the_mailbox_replicas(tmp_path: Path) -> None:
    async with cluster(tmp_path) as nodes:
        mesh = await Mesh.connect(nodes[0].url, prefix=unique_prefix(), name="test")
        try:
            from actormesh.lowlevel import ensure_system_streams

            await ensure_system_streams(mesh.js, mesh.subjects)  # R1, as before
            info = await mesh.js.stream_info(mesh.subjects.dlq_stream)
            assert info.config.num_replicas == 1
            async with running_worker(mesh, Replicated):
                for name in (mesh.subjects.dlq_stream, mesh.subjects.events_stream):
                    info = await mesh.js.stream_info(name)
                    assert info.config.num_replicas == 3
            # Never scaled down by a type with fewer replicas.
            await ensure_system_streams(mesh.js, mesh.subjects, replicas=1)
            info = await mesh.js.stream_info(mesh.subjects.dlq_stream)
            assert info.config.num_replicas == 3
        finally:
            await mesh.close()
