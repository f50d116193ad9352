"""The `actormesh` command from a shell, against a real broker and worker."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys

import pytest

from actormesh import Mesh
from actormesh.testing import running_worker
from actormesh_counter import Counter
from tests.integration.test_mesh import eventually

pytestmark = pytest.mark.integration


async def cli(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "actormesh", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )


async def test_tell_and_ask_from_the_shell(mesh: Mesh, subprocess_env: dict[str, str]) -> None:
    async with running_worker(mesh, Counter):
        out = await cli(subprocess_env, "tell", "counter", "user-42", '{"type":"Inc","by":1}')
        assert out.returncode == 0, out.stderr
        assert "stored in" in out.stdout
        out = await cli(
            subprocess_env, "tell", "counter", "user-42", '{"type":"Inc","by":2}', "--msg-id", "x1"
        )
        out = await cli(
            subprocess_env, "tell", "counter", "user-42", '{"type":"Inc","by":2}', "--msg-id", "x1"
        )
        assert "duplicate" in out.stdout
        out = await cli(subprocess_env, "ask", "counter", "user-42", '{"type":"Get"}')
        assert out.returncode == 0, out.stderr
        assert json.loads(out.stdout) == 3


async def test_shell_errors_are_clear(mesh: Mesh, subprocess_env: dict[str, str]) -> None:
    out = await cli(subprocess_env, "tell", "counter", "k", "{not json")
    assert out.returncode == 1 and "bad JSON" in out.stderr
    out = await cli(subprocess_env, "tell", "counter", "k", "[1,2]")
    assert out.returncode == 1 and '"type"' in out.stderr
    out = await cli(subprocess_env, "tell", "nosuch", "k", '{"type":"X"}')
    assert out.returncode == 1 and "no mailbox for actor type 'nosuch'" in out.stderr
    await mesh.declare(Counter)
    out = await cli(subprocess_env, "ask", "counter", "k", '{"type":"Get"}', "--timeout", "0.5")
    assert out.returncode == 1 and "no reply from counter/k within 0.5s" in out.stderr
    async with running_worker(mesh, Counter):
        out = await cli(subprocess_env, "ask", "counter", "k", '{"type":"Nope"}')
        assert out.returncode == 1 and "BadMessage [bad_message]" in out.stderr
    for line in (out.stderr or "").splitlines():
        assert "Traceback" not in line


async def test_mailbox_full_from_the_shell(mesh: Mesh, subprocess_env: dict[str, str]) -> None:
    from tests.integration.test_mesh import Tiny

    await mesh.declare(Tiny)
    for _ in range(5):
        await mesh.ref(Tiny, "x").tell(b'{"type":"Ping"}')
    out = await cli(subprocess_env, "tell", "tiny", "x", '{"type":"Ping"}')
    assert out.returncode == 1 and "mailbox of 'tiny' is full" in out.stderr


async def test_dlq_commands(mesh: Mesh, subprocess_env: dict[str, str]) -> None:
    async with running_worker(mesh, Counter) as worker:
        await mesh.ref("counter", "d").tell(b'{"type":"Bogus"}')
        await eventually(lambda: worker.dead_lettered == 1)
    out = await cli(subprocess_env, "dlq", "list", "counter")
    assert out.returncode == 0 and "BadMessage [bad_message]" in out.stdout
    assert '{"type":"Bogus"}' in out.stdout
    out = await cli(subprocess_env, "dlq", "purge", "counter")
    assert out.stdout.strip() == "purged 1 dead letters"


async def test_dlq_replay_of_a_missing_sequence_is_one_line(
    mesh: Mesh, subprocess_env: dict[str, str]
) -> None:
    async with running_worker(mesh, Counter) as worker:
        await mesh.ref("counter", "r").tell(b'{"type":"Bogus"}')
        await eventually(lambda: worker.dead_lettered == 1)
    for seq in ("999999", "0"):
        out = await cli(subprocess_env, "dlq", "replay", "counter", "--seq", seq)
        assert out.returncode == 1, out.stdout
        lines = out.stderr.strip().splitlines()
        assert len(lines) == 1, out.stderr
        assert f"no dead letter #{seq} in stream" in lines[0]
        assert "Traceback" not in out.stderr
    # The real one still replays (and is gone from the dead letters afterwards).
    listed = await cli(subprocess_env, "dlq", "list", "counter")
    seq = listed.stdout.split()[0].lstrip("#")
    out = await cli(subprocess_env, "dlq", "replay", "counter", "--seq", seq)
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith(f"replayed #{seq} -> ")
    out = await cli(subprocess_env, "dlq", "replay", "counter", "--seq", seq)
    assert out.returncode == 1 and f"no dead letter #{seq}" in out.stderr


async def test_dlq_list_shows_a_huge_poison_payload_as_one_short_line(
    mesh: Mesh, subprocess_env: dict[str, str]
) -> None:
    huge = b'{"type":"Bogus","pad":"' + b"x" * 100_000 + b'"}'
    async with running_worker(mesh, Counter) as worker:
        await mesh.ref("counter", "h").tell(huge)
        await eventually(lambda: worker.dead_lettered == 1)
    out = await cli(subprocess_env, "dlq", "list", "counter")
    assert out.returncode == 0, out.stderr
    [line] = out.stdout.splitlines()
    assert "BadMessage [bad_message]" in line
    assert line.endswith('{"type":"Bogus","pad":"' + "x" * (200 - 23) + "...")
