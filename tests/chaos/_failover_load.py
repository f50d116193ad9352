"""The load and checks the cluster failover chaos tests share (and the
network-cut driver, which runs them inside a network namespace)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import subprocess
import sys
import time
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path

import nats.js.errors

from actormesh import AskTimeout, BrokerUnavailable, DeadLetterInfo, Mesh, NoSuchActorType
from actormesh.lowlevel import DeadLetters
from tests.actors_cluster import Count, HowMany, Poison, Tallier

__all__ = ["KEYS", "Load", "mailbox_empty", "poison", "total", "worker_process"]

KEYS = ("a", "b", "c", "d")
RATE = 500  # tells per second, paced
TICK = 0.02  # the pacer sends RATE * TICK tells per tick
MAX_OPEN = 2000  # tells still trying at once (during a fault they pile up)


class Load:
    """Paced tells with unique ids; each retried under its id until acked."""

    def __init__(self, mesh: Mesh) -> None:
        self.mesh = mesh
        self.acked: dict[str, str] = {}  # msg id -> key
        self.times: list[tuple[float, float]] = []  # (first sent, acked), monotonic
        self.retries: Counter[str] = Counter()
        self.wrong: list[str] = []  # errors a sender must never see
        self.sent = 0
        self._open: set[asyncio.Task[None]] = set()

    async def one(self, n: int) -> None:
        msg_id, key = f"c-{n}", KEYS[n % len(KEYS)]
        ref = self.mesh.ref(Tallier, key)
        first = time.monotonic()
        while True:
            try:
                await ref.tell(Count(), msg_id=msg_id)
                break
            except BrokerUnavailable as exc:
                self.retries[exc.reason] += 1
            except NoSuchActorType as exc:
                self.wrong.append(repr(exc))
            await asyncio.sleep(0.2)
        self.acked[msg_id] = key
        self.times.append((first, time.monotonic()))

    async def run(self, stop: asyncio.Event) -> None:
        per_tick = max(1, int(RATE * TICK))
        start = time.monotonic()
        ticks = 0
        while not stop.is_set():
            for _ in range(per_tick):
                if len(self._open) >= MAX_OPEN:
                    await asyncio.wait(self._open, return_when=asyncio.FIRST_COMPLETED)
                task = asyncio.create_task(self.one(self.sent))
                self._open.add(task)
                task.add_done_callback(self._open.discard)
                self.sent += 1
            ticks += 1
            await asyncio.sleep(max(0.0, start + ticks * TICK - time.monotonic()))

    async def settle(self, timeout: float) -> None:
        if self._open:
            async with asyncio.timeout(timeout):
                await asyncio.gather(*list(self._open))

    def recovery(self, fault: float) -> float | None:
        """Seconds from `fault` to the first ack of a tell first sent after it."""
        after = [acked for sent, acked in self.times if sent >= fault]
        return min(after) - fault if after else None


@contextlib.asynccontextmanager
async def worker_process(url: str, prefix: str, log: Path) -> AsyncIterator[None]:
    """The worker serving `Tallier` as a real process, every stream R3."""
    env = dict(
        os.environ,
        NATS_URL=url,
        ACTORMESH_PREFIX=prefix,
        ACTORMESH_REPLICAS="3",
        ACTORMESH_LOG_LEVEL="WARNING",
        TALLIER_LOG=str(log.with_suffix(".runs")),
    )
    with log.open("wb") as out:
        proc = subprocess.Popen(  # noqa: ASYNC220 - started once, waited on below
            [sys.executable, "-m", "actormesh", "worker", "tests.actors_cluster:Tallier",
             "--concurrency", "64", "--prefetch", "512"],
            env=env, stdout=subprocess.DEVNULL, stderr=out,
        )  # fmt: skip
    try:
        yield
    finally:
        proc.terminate()
        try:
            await asyncio.to_thread(proc.wait, 15)
        except subprocess.TimeoutExpired:
            proc.kill()
            await asyncio.to_thread(proc.wait)


async def total(mesh: Mesh, key: str) -> int:
    for _ in range(60):
        try:
            return int(await mesh.ref(Tallier, key).ask(HowMany(), timeout=2.0))
        except (AskTimeout, BrokerUnavailable, NoSuchActorType):
            await asyncio.sleep(0.5)
    raise AssertionError(f"no answer from tallier/{key}")


async def mailbox_empty(mesh: Mesh, timeout: float) -> None:
    stream = mesh.subjects.mailbox_stream(Tallier.actor_type)
    deadline = time.monotonic() + timeout
    while True:
        with contextlib.suppress(Exception):
            if (await mesh.js.stream_info(stream)).state.messages == 0:
                return
        if time.monotonic() > deadline:
            state = consumer = None
            with contextlib.suppress(Exception):
                state = (await mesh.js.stream_info(stream)).state
                durable = mesh.subjects.consumer(Tallier.actor_type)
                consumer = await mesh.js.consumer_info(stream, durable)
            raise AssertionError(
                f"mailbox not drained within {timeout}s: {state}; consumer {consumer}"
            )
        await asyncio.sleep(0.3)


async def poison(mesh: Mesh, n: int) -> None:
    """A message that always fails, sent during a fault (retried until stored)."""
    while True:
        try:
            await mesh.ref(Tallier, "poison").tell(Poison(), msg_id=f"poison-{n}")
            return
        except BrokerUnavailable:
            await asyncio.sleep(0.2)


async def dead_letters(mesh: Mesh, timeout: float = 30.0) -> list[DeadLetterInfo]:
    """The type's dead letters, once JetStream answers again: just after the cut
    heals, the API may say "temporarily unavailable" (503) for a few seconds."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            return await DeadLetters(mesh).list(Tallier.actor_type)
        except nats.js.errors.ServiceUnavailableError:
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.5)
