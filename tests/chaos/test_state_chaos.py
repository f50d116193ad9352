"""Chaos for durable state: the example counter's worker SIGKILLed every 2 s for
30 s under about 500 tells/s, the real supervisor restarting it each time. Each
key's committed count must equal the number of its tells the broker acknowledged,
exactly: a lost increment (acked, never applied) or a doubled one (applied, the
worker killed before its ack, applied again on redelivery) both show."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import time
from collections import Counter as Tally
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import msgspec
import pytest

from actormesh import AskTimeout, BrokerUnavailable, Heartbeat, MailboxFull, Mesh, NoSuchActorType
from actormesh._dlq import DeadLetters
from actormesh._state import APPLIED_MAX, StateEnvelope, kv_key
from actormesh_counter import Counter, CounterState, Get, Inc
from actormesh_supervisor import Supervisor
from tests.actors_supervisor import EventLog, kill_quietly, meshfile, options, pid_gone, wait_until

pytestmark = pytest.mark.chaos

WORKER = "counter-1"
KEYS = ("c:0", "c:1", "c:2", "c:3")  # ":" is escaped in the KV key
RATE = 500.0  # tells per second, over all keys
CHAOS = 30.0  # seconds of load and kills
KILL_EVERY = 2.0
#: How long one tell is retried (same msg id): well inside the 120 s duplicate window.
RETRY_FOR = 90.0
#: Tells awaiting their PubAck at once; past it the sender falls behind its rate.
IN_FLIGHT = 256


def counter_group() -> dict[str, object]:
    """One counter worker; restarts allowed far past the kills, with little backoff."""
    return {
        "name": "g", "strategy": "one_for_one", "intensity": 1000, "period": 60,
        "backoff_min": 0.05, "backoff_max": 0.3,
        "children": [{"name": "counter", "actor": "actormesh_counter:Counter",
                      "replicas": 1, "restart": "permanent", "shutdown_grace": 5.0}],
    }  # fmt: skip


@dataclass
class Sender:
    """Tells `Inc(by=1)` with unique msg ids; counts, per key, those acknowledged."""

    mesh: Mesh
    acked: Tally[str] = field(default_factory=Tally)
    #: Tells never acknowledged within `RETRY_FOR`: stored or not, nobody knows.
    unknown: Tally[str] = field(default_factory=Tally)
    retried: int = 0
    errors: Tally[str] = field(default_factory=Tally)
    sent: int = 0

    async def tell(self, key: str, msg_id: str) -> None:
        ref = self.mesh.ref(Counter, key)
        deadline = time.monotonic() + RETRY_FOR
        while True:
            try:
                await ref.tell(Inc(by=1), msg_id=msg_id)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # any failure: the same msg id again, deduplicated
                self.errors[type(exc).__name__] += 1
                if time.monotonic() > deadline:
                    self.unknown[key] += 1
                    return
                self.retried += 1
                await asyncio.sleep(0.2)
                continue
            self.acked[key] += 1
            return

    async def run(self, duration: float) -> None:
        """About `RATE` tells a second for `duration` seconds, round robin over KEYS."""
        slots = asyncio.Semaphore(IN_FLIGHT)
        tasks: set[asyncio.Task[None]] = set()

        async def one(key: str, msg_id: str) -> None:
            try:
                await self.tell(key, msg_id)
            finally:
                slots.release()

        start = time.monotonic()
        end = start + duration
        i = 0
        while time.monotonic() < end:
            # Catch up to the schedule in small batches (a sleep per tell costs more).
            due = int((time.monotonic() - start) * RATE)
            while i < due and time.monotonic() < end:
                await slots.acquire()
                key = KEYS[i % len(KEYS)]
                task = asyncio.create_task(one(key, f"chaos-{key}-{i}"))
                tasks.add(task)
                task.add_done_callback(tasks.discard)
                i += 1
            await asyncio.sleep(0.01)
        self.sent = i
        if tasks:
            await asyncio.gather(*tasks)


class Beats:
    """The last heartbeat of each counter worker process, by pid."""

    def __init__(self) -> None:
        self.last: dict[int, Heartbeat] = {}
        self._decode = msgspec.json.Decoder(Heartbeat).decode

    async def on_msg(self, msg: Any) -> None:
        hb = self._decode(msg.data)
        self.last[hb.pid] = hb

    def handled(self, pid: int) -> int:
        hb = self.last.get(pid)
        return hb.handled if hb is not None else 0


async def kill_loop(sup: Supervisor, beats: Beats, duration: float) -> dict[int, int]:
    """SIGKILL the counter worker every `KILL_EVERY` s for `duration` s; returns the
    pids killed, with how many messages each had handled (its last heartbeat).

    Only a worker seen handling messages is killed: on a slow machine a replacement
    may take longer than `KILL_EVERY` to start, and killing it before it consumes
    would test nothing. Each kill hits a distinct process the supervisor started."""
    killed: dict[int, int] = {}
    end = time.monotonic() + duration
    while time.monotonic() + KILL_EVERY <= end:
        await asyncio.sleep(KILL_EVERY)
        while time.monotonic() < end:
            pid = sup.slots[WORKER].pid
            if pid is not None and pid not in killed and beats.handled(pid) > 0:
                break
            await asyncio.sleep(0.05)
        else:
            break
        if pid_gone(pid):
            continue
        handled = beats.handled(pid)
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
            killed[pid] = handled
    return killed


async def widest_entry(mesh: Mesh, stop: asyncio.Event) -> int:
    """The most sequences any key's entry listed above its floor, sampled each second
    (for the report: `applied` is capped at `APPLIED_MAX`)."""
    widest = 0
    while not stop.is_set():
        for key in KEYS:
            with contextlib.suppress(Exception):  # no entry yet, or a worker mid-write
                widest = max(widest, len((await stored_value(mesh, key))[1].applied))
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), 1.0)
    return widest


async def answers(mesh: Mesh, key: str, timeout: float) -> int:
    """`Get` for `key`, retried until a worker answers."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            value = await mesh.ref(Counter, key).ask(Get(), timeout=10)
            assert isinstance(value, int)
            return value
        except (AskTimeout, NoSuchActorType, BrokerUnavailable, MailboxFull):
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.5)


async def drained(mesh: Mesh, timeout: float) -> None:
    """Until the counter's mailbox consumer has nothing pending or unacked."""
    stream = mesh.subjects.mailbox_stream("counter")
    durable = mesh.subjects.consumer("counter")
    deadline = time.monotonic() + timeout
    last = None
    while True:
        info = await mesh.js.consumer_info(stream, durable)
        last = (info.num_pending, info.num_ack_pending, info.num_redelivered)
        if info.num_pending == 0 and info.num_ack_pending == 0:
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"mailbox not drained after {timeout}s: "
                                 f"(pending, ack_pending, redelivered) = {last}")  # fmt: skip
        await asyncio.sleep(0.5)


async def stored_value(mesh: Mesh, key: str) -> tuple[int, StateEnvelope]:
    kv = await mesh.js.key_value(mesh.subjects.state_bucket("counter"))
    entry = await kv.get(kv_key(key))
    envelope = msgspec.json.decode(entry.value or b"", type=StateEnvelope)
    return msgspec.json.decode(envelope.state, type=CounterState).value, envelope


@pytest.mark.timeout(600)
async def test_sigkilled_durable_counter_counts_every_acked_tell_exactly_once(
    nats_url: str, mesh_prefix: str, tmp_path: Path
) -> None:
    mf = meshfile(mesh_prefix, [counter_group()], heartbeat_interval=0.25,
                  intensity=1000, period=60.0)  # fmt: skip
    sup = Supervisor(options(nats_url, mesh_prefix, tmp_path, mf))
    killed: dict[int, int] = {}
    beats = Beats()
    async with EventLog.listen(nats_url, mesh_prefix) as events, sup:
        mesh = await Mesh.connect(nats_url, prefix=mesh_prefix, name="chaos-sender")
        await mesh.nc.subscribe(mesh.subjects.heartbeat("counter", "*"), cb=beats.on_msg)
        sender = Sender(mesh)
        stop_sampling = asyncio.Event()
        sampler = asyncio.ensure_future(widest_entry(mesh, stop_sampling))
        try:
            # The worker consumes: its mailbox and state bucket exist.
            assert await answers(mesh, "probe", timeout=60) == 0
            load = asyncio.ensure_future(sender.run(CHAOS))
            try:
                killed = await kill_loop(sup, beats, CHAOS)
            finally:
                await load
            # Every kill was seen and answered with a restart by the supervisor.
            await wait_until(lambda: len(events.of("restarted", worker=WORKER)) >= len(killed),
                             60, what="a restart for every kill")  # fmt: skip
            await wait_until(
                lambda: (pid := sup.slots[WORKER].pid) is not None and pid not in killed
                and not pid_gone(pid), 60, what="a live replacement worker",
            )  # fmt: skip
            # What the last killed worker held comes back after ack_wait (30 s).
            await drained(mesh, timeout=240)
            stop_sampling.set()
            widest = await sampler
            stored = {key: await stored_value(mesh, key) for key in KEYS}
            asked = {key: await answers(mesh, key, timeout=60) for key in KEYS}
            letters = await DeadLetters(mesh).list("counter", limit=1000)
        finally:
            sampler.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await sampler
            await mesh.close()
            kill_quietly(list(killed))
    values = {key: value for key, (value, _) in stored.items()}
    summary = (
        f"sent {sender.sent}, acked {dict(sender.acked)}, unknown {dict(sender.unknown)}, "
        f"retried {sender.retried} ({dict(sender.errors)}), killed {len(killed)} "
        f"(having handled {list(killed.values())}), "
        f"restarts {sup.restarts_total}, stored {values}, asked {asked}, "
        f"dead letters {len(letters)}, widest entry {widest} (APPLIED_MAX {APPLIED_MAX})"
    )
    print(summary)
    # Killed several times, each time a worker that was handling the load.
    assert len(killed) >= 5, summary
    assert sup.restarts_total.get(("g", "counter"), 0) >= len(killed), summary
    assert sum(sender.acked.values()) > 0, summary
    assert not letters, f"dead-lettered: {[d.error_message for d in letters][:5]}; {summary}"
    for key in KEYS:
        value, envelope = stored[key]
        # A tell never acknowledged may or may not be stored: exact when there are none.
        low, high = sender.acked[key], sender.acked[key] + sender.unknown[key]
        assert low <= value <= high, (
            f"{key}: stored {value}, acked {low} (+{high - low}); {summary}"
        )
        assert asked[key] == value, summary
        assert envelope.floor > 0 or envelope.applied, summary
