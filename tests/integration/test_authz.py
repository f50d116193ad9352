"""Grants compiled into the broker's authorization (`actormesh authz`), on a real
nats-server running the generated config: a user whose principal has no grant
cannot even publish to the tool's mailbox; with a grant, tool calls work end to
end; a grant stored at run time reaches the broker by regenerating and reloading."""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import signal
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import nats
import nats.errors
import pytest

from actormesh import Mesh, ToolDenied
from actormesh.testing import NatsServer, ServerConfig
from tests.integration.test_compose import spawn
from tests.integration.test_tools import eventually

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
USERS = ("supervisor", "vault", "alice", "mallory")
ATTEMPTS = 200

MESH_TOML = """
[mesh]
prefix = "mesh"

[[groups]]
name = "tools"

  [[groups.children]]
  name = "vault"
  actor = "tests.actors_tools:Vault"

[[grants]]
principal = "alice"
tools = ["vault.*"]
"""

USERS_TOML = """
[server]
http_port = 0
store_dir = "{store}"

[[users]]
name = "supervisor"
role = "supervisor"

[[users]]
name = "vault"
role = "worker"
child = "vault"

[[users]]
name = "alice"
role = "client"

[[users]]
name = "mallory"
role = "client"
"""


def url(server: NatsServer, user: str) -> str:
    return f"nats://{user}:{user}-pw@127.0.0.1:{server.port}"


def authz(env: dict[str, str], tmp: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    argv = [sys.executable, "-m", "actormesh", "authz", "--mesh-file", str(tmp / "mesh.toml"),
            "--users", str(tmp / "users.toml"), *extra]  # fmt: skip
    return subprocess.run(argv, env=env, capture_output=True, text=True, timeout=60, check=False)


@pytest.fixture
def env(monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    for user in USERS:
        # The generated config reads each password from <USER>_PASSWORD.
        monkeypatch.setenv(f"{user.upper()}_PASSWORD", f"{user}-pw")
    out = dict(os.environ, PYTHONPATH=str(ROOT), ACTORMESH_PREFIX="mesh")
    out.pop("NATS_URL", None)
    return out


@contextlib.asynccontextmanager
async def generated_broker(
    tmp: Path, env: dict[str, str], mesh_toml: str, users_toml: str
) -> AsyncIterator[NatsServer]:
    """A nats-server running the config `actormesh authz` generates for the files."""
    (tmp / "mesh.toml").write_text(mesh_toml)
    (tmp / "users.toml").write_text(users_toml.format(store=tmp / "js"))
    out = authz(env, tmp)
    assert out.returncode == 0, out.stderr
    (tmp / "nats.conf").write_text(out.stdout)
    async with NatsServer(ServerConfig(config_file=tmp / "nats.conf")) as server:
        yield server


@pytest.fixture
async def broker(tmp_path: Path, env: dict[str, str]) -> AsyncIterator[NatsServer]:
    async with generated_broker(tmp_path, env, MESH_TOML, USERS_TOML) as server:
        yield server


@contextlib.asynccontextmanager
async def worker_as(
    server: NatsServer, user: str, target: str, env: dict[str, str], tmp: Path
) -> AsyncIterator[subprocess.Popen[bytes]]:
    """A worker process connected as `user`; its log must show no permission refused."""
    log_path = tmp / f"{user}.log"
    log = log_path.open("wb")
    argv = [sys.executable, "-m", "actormesh", "worker", target]
    worker = spawn(argv, dict(env, NATS_URL=url(server, user)), log)
    try:
        yield worker
    finally:
        worker.terminate()
        try:
            await asyncio.to_thread(worker.wait, 30)
        except subprocess.TimeoutExpired:
            worker.kill()
            await asyncio.to_thread(worker.wait, 30)
        log.close()
    text = log_path.read_text()
    assert not refusals(text), text[-2000:]


def refusals(log_text: str) -> list[str]:
    """The permission refusals a worker's log shows, but that of its id-only control
    subject: a worker listens there too for senders that do not name its type yet,
    and a broker with users refuses it (only `<prefix>.sys.ctl.<type>.<id>` is its)."""
    return [
        line
        for line in log_text.splitlines()
        if "permissions violation" in line
        and not re.search(r'subscription to "[a-z0-9_-]+\.sys\.ctl\.[^".]+"', line)
    ]


@pytest.fixture
async def vault_worker(
    broker: NatsServer, env: dict[str, str], tmp_path: Path
) -> AsyncIterator[subprocess.Popen[bytes]]:
    async with worker_as(broker, "vault", "tests.actors_tools:Vault", env, tmp_path) as worker:
        yield worker


async def call_when_ready(mesh: Mesh, name: str, args: dict[str, object], principal: str) -> object:
    """Retry while the worker starts and its live grants load."""
    last: Exception | None = None
    for _ in range(100):
        try:
            return await mesh.tools.call(name, args, principal=principal, timeout=2)
        except Exception as exc:  # not yet published, not yet served, not yet granted
            last = exc
            await asyncio.sleep(0.1)
    raise AssertionError(f"{name} never answered: {last!r}")


async def refused_publishes(server: NatsServer, user: str, subject: str) -> tuple[int, int]:
    """Publish ATTEMPTS JetStream messages forging alice as the principal; returns
    (PubAcks received, permissions violations the broker reported)."""
    violations: list[str] = []

    async def on_error(exc: Exception) -> None:
        if "permissions violation" in str(exc).lower():
            violations.append(str(exc))

    nc = await nats.connect(url(server, user), error_cb=on_error)
    js = nc.jetstream()
    headers = {"Am-Principal": "alice", "Am-Tool": "vault.deposit"}
    body = b'{"type":"Deposit","amount":1000}'
    try:
        results = await asyncio.gather(
            *(js.publish(subject, body, headers=headers, timeout=3) for _ in range(ATTEMPTS)),
            return_exceptions=True,
        )
        await eventually(lambda: len(violations) >= ATTEMPTS)
    finally:
        await nc.close()
    acks = [r for r in results if not isinstance(r, Exception)]
    errors = [r for r in results if isinstance(r, Exception)]
    assert all(isinstance(e, (nats.errors.TimeoutError, nats.errors.NoRespondersError))
               for e in errors), errors[:3]  # fmt: skip
    return len(acks), len(violations)


async def test_broker_refuses_a_principal_without_a_grant(
    broker: NatsServer, vault_worker: subprocess.Popen[bytes], env: dict[str, str], tmp_path: Path
) -> None:
    sup = await Mesh.connect(url(broker, "supervisor"), prefix="mesh")
    alice = await Mesh.connect(url(broker, "alice"), prefix="mesh")
    try:
        # The mesh file's grants, as the supervisor applies them when the mesh starts.
        await sup.tools.grants.grant("alice", "vault.*")
        deposit = {"key": "k1", "amount": 5}
        assert await call_when_ready(alice, "vault.deposit", deposit, "alice") == 5
        before = (await sup.js.stream_info("MESH_MBOX_VAULT")).state.last_seq
        # A client lists the tools and reads its own grant (only its own).
        available = {t.name for t in await alice.tools.list_available_tools("alice")}
        assert available == {"vault.balance", "vault.boom", "vault.deposit", "vault.nap"}

        # Mallory has no grant: the broker refuses every publish to vault's mailbox,
        # even with alice named in the principal header.
        acks, violations = await refused_publishes(broker, "mallory", "mesh.mbox.vault.k1")
        assert (acks, violations) == (0, ATTEMPTS)
        # The micro endpoint (relayed into the mailbox by the worker) is closed too.
        nc = await nats.connect(url(broker, "mallory"))
        forged = {"Am-Key": "k1", "Am-Principal": "alice"}
        with pytest.raises((nats.errors.TimeoutError, nats.errors.NoRespondersError)):
            await nc.request("mesh.svc.vault.deposit", b'{"amount":1}', headers=forged, timeout=1)
        await nc.close()
        assert (await sup.js.stream_info("MESH_MBOX_VAULT")).state.last_seq == before
        assert await alice.tools.call("vault.balance", {"key": "k1"}, principal="alice") == 5
        # From the shell, the principal defaults to the broker user.
        shell = await asyncio.to_thread(
            subprocess.run,
            [sys.executable, "-m", "actormesh", "tool", "call", "vault.balance", '{"key":"k1"}'],
            env=dict(env, NATS_URL=url(broker, "alice")),
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert (shell.returncode, shell.stdout.strip()) == (0, "5"), shell.stderr
        assert not vault_worker.poll()

        # A grant stored at run time reaches the broker: regenerate, reload.
        await sup.tools.grants.grant("mallory", "vault.balance")
        out = authz(dict(env, NATS_URL=url(broker, "supervisor")), tmp_path, "--from-broker")
        assert out.returncode == 0, out.stderr
        assert "could call vault.boom as 'alice'" in out.stderr  # the header caveat
        (tmp_path / "nats.conf").write_text(out.stdout)
        assert broker.pid is not None
        os.kill(broker.pid, signal.SIGHUP)
        mallory = await Mesh.connect(url(broker, "mallory"), prefix="mesh")
        try:
            balance = await call_when_ready(mallory, "vault.balance", {"key": "k1"}, "mallory")
            assert balance == 5
            # Within the mailbox, the worker decides per tool.
            with pytest.raises(ToolDenied):
                await mallory.tools.call(
                    "vault.deposit", {"key": "k1", "amount": 1}, principal="mallory"
                )
        finally:
            await mallory.close()
    finally:
        await alice.close()
        await sup.close()


AGENT_MESH = """
[mesh]
prefix = "mesh"

[[groups]]
name = "examples"

  [[groups.children]]
  name = "counter"
  actor = "actormesh_counter:Counter"

  [[groups.children]]
  name = "echo"
  actor = "actormesh_echo:EchoService"

  [[groups.children]]
  name = "assistant"
  actor = "actormesh_assistant:Assistant"

[[grants]]
principal = "assistant"
tools = ["counter.add", "counter.read", "echo.say"]

[[grants]]
principal = "cli"
tools = ["assistant.run"]
"""

AGENT_USERS = """
[server]
http_port = 0
store_dir = "{store}"

[[users]]
name = "supervisor"
role = "supervisor"

[[users]]
name = "counter"
role = "worker"
child = "counter"

[[users]]
name = "echo"
role = "worker"
child = "echo"

[[users]]
name = "assistant"
role = "worker"
child = "assistant"

[[users]]
name = "cli"
role = "client"
"""


async def test_an_agent_calls_tools_of_other_types_under_generated_permissions(
    tmp_path: Path, env: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    for user in ("counter", "echo", "assistant", "cli"):
        monkeypatch.setenv(f"{user.upper()}_PASSWORD", f"{user}-pw")
    env = dict(env, **{k: v for k, v in os.environ.items() if k.endswith("_PASSWORD")})
    async with contextlib.AsyncExitStack() as stack:
        server = await stack.enter_async_context(
            generated_broker(tmp_path, env, AGENT_MESH, AGENT_USERS)
        )
        for user, target in (
            ("counter", "actormesh_counter:Counter"),
            ("echo", "actormesh_echo:EchoService"),
            ("assistant", "actormesh_assistant:Assistant"),
        ):
            await stack.enter_async_context(worker_as(server, user, target, env, tmp_path))
        sup = await Mesh.connect(url(server, "supervisor"), prefix="mesh")
        stack.push_async_callback(sup.close)
        await sup.tools.grants.grant("assistant", "counter.add", "counter.read", "echo.say")
        await sup.tools.grants.grant("cli", "assistant.run")
        cli = await Mesh.connect(url(server, "cli"), prefix="mesh")
        stack.push_async_callback(cli.close)
        run = {"task": "count", "key": "k1", "times": 2}
        report = await call_when_ready(cli, "assistant.run", run, "cli")
        assert isinstance(report, dict) and report["value"] == 2, report
        assert [s["tool"] for s in report["steps"]] == ["counter.add", "counter.add", "echo.say"]
