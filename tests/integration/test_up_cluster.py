"""`actormesh up` with `[broker] nodes = 3`: an embedded three-node JetStream
cluster on loopback under the supervisor and its workers, whose nodes can be
killed (and come back) while the mesh goes on; one node stays the default."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import sys
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import msgspec
import pytest

from actormesh import ActorMeshError, Mesh
from actormesh._meshfile import MeshFile
from actormesh_counter import Get, Inc
from tests.actors_supervisor import ROOT

pytestmark = pytest.mark.integration


class Up:
    """A running `actormesh up` and what it printed."""

    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self.proc = proc
        self.lines: list[str] = []
        self._reader = asyncio.ensure_future(self._read())

    async def _read(self) -> None:
        if self.proc.stdout is None:
            return
        async for raw in self.proc.stdout:
            self.lines.append(raw.decode(errors="replace").rstrip())

    async def line(self, pattern: str, timeout: float = 60, *, after: int = 0) -> re.Match[str]:
        """The first printed line (from index `after`) matching `pattern`."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for text in self.lines[after:]:
                if m := re.search(pattern, text):
                    return m
            if self.proc.returncode is not None and self._reader.done():
                break
            await asyncio.sleep(0.05)
        raise AssertionError(
            f"`up` never printed /{pattern}/; it printed:\n" + "\n".join(self.lines)
        )


@asynccontextmanager
async def actormesh_up(config: Path) -> AsyncIterator[Up]:
    env = {k: v for k, v in os.environ.items() if k != "NATS_URL"}
    env.update(
        PYTHONUNBUFFERED="1",
        ACTORMESH_RUNTIME_DIR=str(config.parent / "rt"),
        PYTHONPATH=str(ROOT),
    )
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "actormesh", "up", "--config", str(config),
        env=env, cwd=config.parent, stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )  # fmt: skip
    up = Up(proc)
    try:
        yield up
    finally:
        if proc.returncode is None:
            proc.send_signal(signal.SIGINT)
            try:
                await asyncio.wait_for(proc.wait(), 60)
            except TimeoutError:
                proc.kill()
                await proc.wait()
        await up._reader


def mesh_toml(tmp: Path, prefix: str, broker: str) -> Path:
    config = tmp / "mesh.toml"
    config.write_text(
        f"""
[mesh]
prefix = "{prefix}"
replicas = 3

[broker]
{broker}
store_dir = "{tmp / "nats"}"
sync_always = false

[supervisor]
dashboard_port = 0
heartbeat_interval = 0.25
start_timeout = 30

[[groups]]
name = "g"

  [[groups.children]]
  name = "counter"
  actor = "actormesh_counter:Counter"
  shutdown_grace = 2.0
"""
    )
    return config


def worker_argv(prefix: str) -> list[str]:
    """The command line of this test's counter worker (Linux /proc)."""
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            argv = cmdline.read_bytes().decode().split("\0")
        except OSError:
            continue
        if "worker" in argv and prefix in argv and "actormesh_counter:Counter" in argv:
            return argv
    raise AssertionError(f"no counter worker with prefix {prefix} is running")


async def count_until_it_answers(mesh: Mesh, key: str, timeout: float = 60) -> int:
    """Add 1 under a fresh id and read the count, retrying (the same id) through a
    worker's start or a leader election until it answers."""
    msg_id = uuid.uuid4().hex
    ref = mesh.ref("counter", key)
    deadline = time.monotonic() + timeout
    while True:
        try:
            await ref.tell(Inc(by=1), msg_id=msg_id)
            return await ref.ask(Get(), timeout=3, reply_type=int)
        except ActorMeshError:
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.2)


@pytest.mark.timeout(150)
async def test_up_runs_a_three_node_cluster_that_survives_a_node(
    tmp_path: Path, mesh_prefix: str
) -> None:
    config = mesh_toml(tmp_path, mesh_prefix, "nodes = 3\nport = 0\ncluster_port = 0")
    async with actormesh_up(config) as up:
        url = (await up.line(r"broker ready at (\S+)"))[1]
        servers = url.split(",")
        assert len(servers) == 3
        pids = {
            m[1]: int(m[2])
            for text in up.lines
            if (m := re.search(r"node (n\d) pid (\d+) at", text))
        }
        assert sorted(pids) == ["n1", "n2", "n3"]
        for name in pids:
            assert (tmp_path / "nats" / name / "jetstream").is_dir()

        mesh = await Mesh.connect(url, prefix=mesh_prefix, name="up-test")
        try:
            assert await count_until_it_answers(mesh, "k") == 1
            stream = mesh.subjects.mailbox_stream("counter")
            info = await mesh.js.stream_info(stream)
            assert info.config.num_replicas == 3
            assert info.cluster is not None and info.cluster.leader in pids

            # The worker the supervisor started was given every server.
            argv = worker_argv(mesh_prefix)
            assert argv[argv.index("--nats-url") + 1] == url

            # SIGKILL the mailbox's leader: the mesh goes on on the other two ...
            mark = len(up.lines)
            leader = info.cluster.leader
            os.kill(pids[leader], signal.SIGKILL)
            assert await count_until_it_answers(mesh, "k") == 2
            # ... and `up` brings the node back on its ports and store.
            await up.line(rf"node {leader} exited", after=mark)
            back = await up.line(rf"node {leader} is back \(pid (\d+)\) at (\S+)", after=mark)
            assert back[2] in servers and int(back[1]) != pids[leader]
            assert await count_until_it_answers(mesh, "k") == 3
        finally:
            await mesh.close()
        up.proc.send_signal(signal.SIGINT)
        assert await asyncio.wait_for(up.proc.wait(), 60) == 0
    await up.line(r"actormesh: stopped")
    for pid in pids.values():
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)


def test_one_node_stays_the_default_and_nodes_are_checked() -> None:
    mf = msgspec.toml.decode(b"", type=MeshFile)
    assert mf.broker.nodes == 1 and mf.broker.servers() == ""
    mf = msgspec.toml.decode(b'[broker]\nurl = ["nats://a:4222", "nats://b:4222"]', type=MeshFile)
    assert mf.broker.servers() == "nats://a:4222,nats://b:4222"
    with pytest.raises(msgspec.ValidationError, match="nodes must be between 1 and 9"):
        msgspec.toml.decode(b"[broker]\nnodes = 0", type=MeshFile)
    with pytest.raises(msgspec.ValidationError, match="bad NATS server URL 'nats://a:x'"):
        msgspec.toml.decode(b'[broker]\nurl = "nats://a:x"', type=MeshFile)


async def test_up_uses_the_servers_mesh_toml_names(
    tmp_path: Path, mesh_prefix: str, nats_url: str
) -> None:
    """`[broker] url` with a dead server first: no embedded broker, the list is used."""
    dead = "nats://127.0.0.1:1"
    config = mesh_toml(tmp_path, mesh_prefix, f'url = "{dead},{nats_url}"')
    config.write_text(config.read_text().replace("replicas = 3", "replicas = 1"))
    async with actormesh_up(config) as up:
        await up.line(rf"using the broker at {re.escape(dead)},\S+ \(mesh.toml \[broker\] url\)")
        mesh = await Mesh.connect(nats_url, prefix=mesh_prefix, name="up-test")
        try:
            assert await count_until_it_answers(mesh, "k") == 1
        finally:
            await mesh.close()
    assert not (tmp_path / "nats").exists()


async def test_up_runs_one_node_by_default(tmp_path: Path, mesh_prefix: str) -> None:
    config = mesh_toml(tmp_path, mesh_prefix, "port = 0")
    config.write_text(config.read_text().replace("replicas = 3", "replicas = 1"))
    async with actormesh_up(config) as up:
        url = (await up.line(r"broker ready at (\S+)"))[1]
        assert "," not in url
        mesh = await Mesh.connect(url, prefix=mesh_prefix, name="up-test")
        try:
            assert await count_until_it_answers(mesh, "k") == 1
        finally:
            await mesh.close()
    assert (tmp_path / "nats" / "jetstream").is_dir()
    assert not (tmp_path / "nats" / "n1").exists()
    assert not any("node n1" in text for text in up.lines)
