"""Containment with real processes: the example mesh's `examples` group (counter,
two echo workers) under the supervisor, and six poison messages to echo within
8 s. Before containment each redelivery counted toward the per-process restart
intensity: both echo workers escalated and the group was marked failed."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import msgspec
import pytest

from actormesh import Heartbeat, Mesh
from actormesh._dlq import DeadLetters
from actormesh_echo import Echo, EchoReply, EchoService, Fail
from actormesh_supervisor import Supervisor
from tests.actors_supervisor import EventLog, meshfile, options

pytestmark = pytest.mark.chaos

ECHO = ("echo-1", "echo-2")


def examples_group() -> dict[str, Any]:
    """The `examples` group of mesh.toml."""
    return {
        "name": "examples", "strategy": "one_for_one", "intensity": 3, "period": 60,
        "children": [
            {"name": "counter", "actor": "actormesh_counter:Counter", "replicas": 1,
             "restart": "permanent", "shutdown_grace": 2.0},
            {"name": "echo", "actor": "actormesh_echo:EchoService", "replicas": 2,
             "restart": "permanent", "shutdown_grace": 2.0},
        ],
    }  # fmt: skip


async def test_six_poison_messages_to_echo_leave_the_group_healthy(
    nats_url: str, mesh_prefix: str, tmp_path: Path
) -> None:
    mf = meshfile(mesh_prefix, [examples_group()], heartbeat_interval=0.25)
    sup = Supervisor(options(nats_url, mesh_prefix, tmp_path, mf))
    async with EventLog.listen(nats_url, mesh_prefix) as events, sup:
        pids = {w: sup.slots[w].pid for w in ECHO}
        mesh = await Mesh.connect(nats_url, prefix=mesh_prefix)
        beats: dict[str, Heartbeat] = {}
        decode = msgspec.json.Decoder(Heartbeat).decode

        async def on_beat(msg: Any) -> None:
            hb = decode(msg.data)
            beats[hb.worker] = hb

        await mesh.nc.subscribe(mesh.subjects.heartbeat("echo", "*"), cb=on_beat)
        try:
            ref = mesh.ref(EchoService)
            # Six poison tells 1.3 s apart (within 8 s), asks answered all along.
            for i in range(6):
                await ref.tell(Fail(reason=f"poison {i}"))
                for j in range(5):
                    reply = await ref.ask(Echo(text=f"{i}.{j}"), reply_type=EchoReply)
                    assert reply.text == f"{i}.{j}"
                if i < 5:
                    await asyncio.sleep(1.3)
            dlq = DeadLetters(mesh)
            letters: list[Any] = []

            async def all_dead() -> None:
                while True:
                    letters[:] = await dlq.list("echo")
                    if len(letters) >= 6:
                        return
                    await asyncio.sleep(0.1)

            await asyncio.wait_for(all_dead(), 30)
            # Each poison message dead-lettered once, after its max_deliver deliveries.
            assert sorted(d.payload for d in letters) == sorted(
                msgspec.json.encode(Fail(reason=f"poison {i}")).decode() for i in range(6)
            )
            assert {d.deliveries for d in letters} == {EchoService.mailbox.max_deliver}
            # Both echo workers keep answering: each handles asks after the poison.
            after = {w: beats[w].handled for w in ECHO}

            async def both_answer() -> None:
                n = 0
                while not all(beats[w].handled > after[w] for w in ECHO):
                    asks = [
                        ref.ask(Echo(text=f"a{n + k}"), reply_type=EchoReply) for k in range(20)
                    ]
                    replies = await asyncio.gather(*asks)
                    assert [r.text for r in replies] == [f"a{n + k}" for k in range(20)]
                    n += 20
                    await asyncio.sleep(0.3)

            await asyncio.wait_for(both_answer(), 30)
            await asyncio.sleep(1.0)  # a late escalation would show here
            assert len(await dlq.list("echo")) == 6
        finally:
            await mesh.close()
        # Nothing failed, restarted or escalated; the same two processes run.
        assert not events.of("failed") and not events.of("restarted")
        assert not events.of("escalated", source_prefix="")
        assert not sup.groups["examples"].failed
        for w in ECHO:
            assert sup.slots[w].state == "running" and sup.slots[w].pid == pids[w]
            assert beats[w].status == "running"
