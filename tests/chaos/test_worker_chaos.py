"""Kill real worker processes and the real broker under load; check the ledger."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import time
from collections import Counter as Tally
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from actormesh import BrokerUnavailable, Mesh
from actormesh.testing import NatsServer
from tests.actors import Item, Ledger, Ping

pytestmark = pytest.mark.chaos


def start_worker(env: dict[str, str], *extra: str) -> subprocess.Popen[bytes]:
    """A worker process; its log goes next to the ledger, for when a test fails."""
    log = Path(env["LEDGER_PATH"]).with_suffix(f".worker{time.monotonic_ns()}.log")
    with log.open("wb") as out:
        return subprocess.Popen(
            [
                sys.executable,
                "-m",
                "actormesh",
                "worker",
                "tests.actors:Ledger",
                "--concurrency",
                "16",
                "--prefetch",
                "64",
                *extra,
            ],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=out,
        )


def ledger_ids(path: Path) -> Tally[str]:
    if not path.exists():
        return Tally()
    return Tally(line.split()[1] for line in path.read_text().splitlines() if line)


async def wait_for(pred: object, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not pred():  # type: ignore[operator]
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.05)


async def wait_ready(mesh: Mesh) -> None:
    """Until a worker answers (its mailbox exists and it consumes)."""
    deadline = time.monotonic() + 20
    while True:
        try:
            assert await mesh.ref(Ledger, "probe").ask(Ping(), timeout=1) == "pong"
            return
        except Exception:
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.1)


@pytest.fixture
def ledger_env(subprocess_env: dict[str, str], tmp_path: Path) -> dict[str, str]:
    env = dict(subprocess_env)
    env["LEDGER_PATH"] = str(tmp_path / "ledger.txt")
    return env


async def send_all(mesh: Mesh, ids: list[str], sleep: float = 0.0) -> list[str]:
    """Tell each id once; return the ids the broker acknowledged."""
    acked: list[str] = []
    for i, mid in enumerate(ids):
        await mesh.ref(Ledger, f"k{i % 8}").tell(Item(id=mid, sleep=sleep), msg_id=mid)
        acked.append(mid)
    return acked


async def test_sigterm_under_load_drains_and_loses_nothing(
    mesh: Mesh, ledger_env: dict[str, str]
) -> None:
    proc = start_worker(ledger_env, "--drain-grace", "20")
    try:
        await wait_ready(mesh)
        ids = [f"m{i}" for i in range(400)]
        acked = await send_all(mesh, ids, sleep=0.005)
        path = Path(ledger_env["LEDGER_PATH"])
        await wait_for(lambda: len(ledger_ids(path)) > 20, 20, "some handled")
        proc.send_signal(signal.SIGTERM)
        rc = await asyncio.to_thread(proc.wait, 30)
        assert rc == 0
    finally:
        if proc.poll() is None:
            proc.kill()
    handled = ledger_ids(path)
    remaining = (await mesh.js.stream_info(mesh.subjects.mailbox_stream("ledger"))).state.messages
    # Drained: every acked tell is either handled or still waiting in the mailbox.
    missing = [m for m in acked if m not in handled]
    assert len(missing) == remaining
    # A second worker finishes the rest: nothing was lost.
    proc2 = start_worker(ledger_env)
    try:
        await wait_for(lambda: all(m in ledger_ids(path) for m in acked), 30, "all handled")
    finally:
        proc2.send_signal(signal.SIGTERM)
        await asyncio.to_thread(proc2.wait, 30)


async def test_sigkill_under_load_then_new_worker_handles_every_acked_tell(
    mesh: Mesh, ledger_env: dict[str, str]
) -> None:
    path = Path(ledger_env["LEDGER_PATH"])
    proc = start_worker(ledger_env)
    await wait_ready(mesh)
    ids = [f"k{i}" for i in range(600)]
    sender = asyncio.create_task(send_all(mesh, ids, sleep=0.002))
    await wait_for(lambda: len(ledger_ids(path)) > 50, 20, "some handled")
    proc.kill()
    await asyncio.to_thread(proc.wait, 10)
    acked = await sender
    proc2 = start_worker(ledger_env)
    try:
        await wait_for(
            lambda: all(m in ledger_ids(path) for m in acked), 60, "every acked tell in the ledger"
        )
    finally:
        proc2.send_signal(signal.SIGTERM)
        assert await asyncio.to_thread(proc2.wait, 30) == 0
    handled = ledger_ids(path)
    assert set(acked) <= set(handled)
    # At least once: duplicates are possible only for what was in flight at the kill.
    assert sum(n - 1 for n in handled.values()) <= 64 + 16


@pytest.fixture
async def own_broker(tmp_path: Path) -> AsyncIterator[NatsServer]:
    from actormesh.testing import ServerConfig

    server = NatsServer(ServerConfig(store_dir=tmp_path / "nats"))
    await server.start()
    yield server
    await server.stop()


async def test_broker_killed_and_restarted_under_load_worker_resumes(
    own_broker: NatsServer, ledger_env: dict[str, str]
) -> None:
    env = dict(ledger_env, NATS_URL=own_broker.url)
    path = Path(env["LEDGER_PATH"])
    mesh = await Mesh.connect(own_broker.url, prefix=env["ACTORMESH_PREFIX"])
    proc = start_worker(env)
    try:
        await wait_ready(mesh)
        first = await send_all(mesh, [f"a{i}" for i in range(200)], sleep=0.002)
        await wait_for(lambda: len(ledger_ids(path)) > 20, 20, "some handled")
        await own_broker.restart(kill=True)  # SIGKILL: a crash, same port and store
        # Sends during the outage fail with a typed error; once back, they go through.
        second: list[str] = []
        deadline = time.monotonic() + 30
        i = 0
        while len(second) < 200:
            mid = f"b{i}"
            try:
                await mesh.ref(Ledger, "after").tell(Item(id=mid), msg_id=mid)
                second.append(mid)
                i += 1
            except BrokerUnavailable:
                assert time.monotonic() < deadline, "broker never came back for senders"
                await asyncio.sleep(0.1)
        await wait_for(
            lambda: all(m in ledger_ids(path) for m in first + second),
            60,
            "the worker resumed consuming after the broker restart",
        )
        assert proc.poll() is None, "the worker must survive a broker restart"
    finally:
        proc.send_signal(signal.SIGTERM)
        await asyncio.to_thread(proc.wait, 30)
        await mesh.close(timeout=2.0)


def test_worker_exits_cleanly_with_clear_error_when_no_broker(
    subprocess_env: dict[str, str],
) -> None:
    env = dict(subprocess_env, NATS_URL="nats://127.0.0.1:1")
    out = subprocess.run(
        [sys.executable, "-m", "actormesh", "worker", "tests.actors:Ledger"],
        env=env,
        capture_output=True,
        timeout=60,
    )
    assert out.returncode == 1
    assert b"cannot connect to NATS at nats://127.0.0.1:1" in out.stderr
    assert b"Traceback" not in out.stderr


@pytest.mark.parametrize("loop", ["asyncio", "uvloop"])
def test_close_drops_the_connection_of_a_frozen_broker(loop: str, tmp_path: Path) -> None:
    """nats-py's drain ignores cancellation and its close waits for the socket to
    take every unsent byte: with the broker frozen (SIGSTOP) and megabytes queued,
    `Mesh.close` must still return, with the connection closed, on either loop
    (the socket is dropped through the loop's own transport)."""
    import uvloop

    runner = uvloop.run if loop == "uvloop" else asyncio.run
    runner(_close_with_a_frozen_broker(tmp_path))


async def _close_with_a_frozen_broker(tmp_path: Path) -> None:
    from actormesh.testing import ServerConfig

    async with NatsServer(ServerConfig(store_dir=tmp_path / "nats")) as server:
        pid = server.pid
        assert pid is not None
        mesh = await Mesh.connect(server.url, prefix="frozen")
        await mesh.nc.subscribe("frozen.in", cb=_ignore)

        async def flood() -> None:
            chunk = b"x" * 512 * 1024
            while True:  # blocks once the socket and nats-py's buffer are full
                await mesh.nc.publish("frozen.in", chunk)

        os.kill(pid, signal.SIGSTOP)
        try:
            flooding = asyncio.ensure_future(flood())
            await asyncio.sleep(0.5)
            # The bound is far above close's own deadline; before, this took the
            # drain timeout (30s) and a flush timeout, or for ever with the socket full.
            async with asyncio.timeout(20):
                await mesh.close(timeout=2.0)
            assert mesh.nc.is_closed
            flooding.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await flooding
        finally:
            os.kill(pid, signal.SIGCONT)


async def _ignore(msg: object) -> None:
    return None
