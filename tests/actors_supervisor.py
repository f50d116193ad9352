"""Test actors and helpers for the supervisor's tests.

`Ledger` records every message it handles, by id, in an append-only file (the
path in LEDGER_PATH): one line "<id> <pid> <deliveries>" per handling. Tests
read it to prove each acknowledged message was handled, and to see duplicates
instead of guessing at them from a count.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any, ClassVar, Self

import aiohttp
import msgspec

from actormesh import Actor, Context, Event, MailboxConfig, Mesh, Message
from actormesh.lowlevel import MeshFile

ROOT = Path(__file__).resolve().parents[1]
TOKEN = "test-dashboard-token-0123456789"


class Work(Message):
    id: str
    ms: int = 0


class Hang(Message):
    """Hangs forever on its first delivery (a stuck handler; heartbeats go on)."""

    id: str


class Block(Message):
    """Blocks the event loop (time.sleep), then records."""

    id: str
    ms: int


class Ledger(Actor):
    actor_type = "ledger"
    keyless = True
    # A short ack_wait: what a killed worker held comes back within seconds.
    mailbox: ClassVar[MailboxConfig] = MailboxConfig(ack_wait=2.0, max_deliver=50, backoff=(0.2,))

    async def work(self, msg: Work, ctx: Context) -> None:
        if msg.ms:
            await asyncio.sleep(msg.ms / 1000)
        record(msg.id, ctx.deliveries)

    async def hang(self, msg: Hang, ctx: Context) -> None:
        if ctx.deliveries == 1:
            await asyncio.Event().wait()
        record(msg.id, ctx.deliveries)

    async def block(self, msg: Block, ctx: Context) -> None:
        time.sleep(msg.ms / 1000)  # noqa: ASYNC251 - blocking the loop is the point
        record(msg.id, ctx.deliveries)


def record(msg_id: str, deliveries: int) -> None:
    path = os.environ["LEDGER_PATH"]
    # O_APPEND: lines from several worker processes never interleave.
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, f"{msg_id} {os.getpid()} {deliveries}\n".encode())
    finally:
        os.close(fd)


def read_ledger(path: Path) -> list[tuple[str, int, int]]:
    if not path.exists():
        return []
    out = []
    for line in path.read_text().splitlines():
        msg_id, pid, deliveries = line.split()
        out.append((msg_id, int(pid), int(deliveries)))
    return out


# -- helpers -----------------------------------------------------------------------


def worker_env(**extra: str) -> dict[str, str]:
    """Environment for worker and supervisor processes: the repository root on the path."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH", "")) if p)
    env.setdefault("ACTORMESH_LOG_LEVEL", "WARNING")
    env.update(extra)
    return env


def meshfile(prefix: str, groups: list[dict[str, Any]], **supervisor: Any) -> MeshFile:
    section = {"heartbeat_interval": 0.25, "heartbeat_misses": 3, "intensity": 100,
               "period": 60.0, "start_timeout": 20.0, "dashboard_port": 0}  # fmt: skip
    section.update(supervisor)
    return msgspec.convert(
        {"mesh": {"prefix": prefix}, "supervisor": section, "groups": groups}, MeshFile
    )


def child(name: str, *, ledger: Path | None = None, **fields: Any) -> dict[str, Any]:
    spec: dict[str, Any] = {"name": name, "actor": "tests.actors_supervisor:Ledger",
                            "shutdown_grace": 2.0}  # fmt: skip
    if ledger is not None:
        spec["env"] = {"LEDGER_PATH": str(ledger)}
    spec.update(fields)
    return spec


def options(nats_url: str, prefix: str, tmp: Path, mf: MeshFile, *, token: str = "") -> Any:
    from actormesh_supervisor import SupervisorOptions

    return SupervisorOptions(
        meshfile=mf, nats_url=nats_url, prefix=prefix, runtime_dir=tmp / "rt",
        python=sys.executable, worker_env=worker_env(), dashboard_token=token,
    )  # fmt: skip


async def api_get(svc: Any, path: str, **params: Any) -> Any:
    """GET the supervisor's `api/<path>` with the dashboard token as bearer: its JSON
    (a 200 asserted)."""
    headers = {"Authorization": f"Bearer {TOKEN}"}
    async with (
        aiohttp.ClientSession() as http,
        http.get(svc.url + "api/" + path, params=params, headers=headers) as r,
    ):
        assert r.status == 200, await r.text()
        return await r.json()


def toml_text(mf: MeshFile) -> str:
    """mesh.toml for `mf` (msgspec writes TOML only with tomli_w, which we lack)."""

    def value(v: Any) -> str:
        if isinstance(v, bool):
            return "true" if v else "false"
        if isinstance(v, int | float):
            return repr(v)
        if isinstance(v, str):
            return json.dumps(v)
        if isinstance(v, list):
            return "[" + ", ".join(value(x) for x in v) + "]"
        if isinstance(v, dict):
            return "{ " + ", ".join(f"{json.dumps(k)} = {value(x)}" for k, x in v.items()) + " }"
        raise TypeError(v)

    def scalars(d: dict[str, Any]) -> list[str]:
        return [f"{k} = {value(v)}" for k, v in d.items() if k not in ("groups", "children")]

    data = msgspec.to_builtins(mf)
    lines: list[str] = []
    for section in ("mesh", "broker", "supervisor"):
        lines += [f"[{section}]", *scalars(data[section]), ""]
    for group in data["groups"]:
        lines += ["[[groups]]", *scalars(group), ""]
        for c in group["children"]:
            lines += ["[[groups.children]]", *scalars(c), ""]
    return "\n".join(lines)


async def wait_until(
    predicate: Callable[[], bool], timeout: float, *, what: str = "condition"
) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        await asyncio.sleep(0.02)


class EventLog:
    """Every event of a mesh, as it is published (core subscription), with arrival time."""

    def __init__(self) -> None:
        self.events: list[tuple[float, Event]] = []
        self._mesh: Mesh | None = None

    @classmethod
    @contextlib.asynccontextmanager
    async def listen(cls, url: str, prefix: str) -> AsyncIterator[EventLog]:
        log = cls()
        mesh = await Mesh.connect(url, prefix=prefix, name="test-events")
        decode = msgspec.json.Decoder(Event).decode

        async def on_msg(msg: Any) -> None:
            log.events.append((time.monotonic(), decode(msg.data)))

        await mesh.nc.subscribe(f"{prefix}.sys.evt.>", cb=on_msg)
        log._mesh = mesh
        try:
            yield log
        finally:
            await mesh.close()

    def of(self, kind: str, *, source_prefix: str = "supervisor:", **match: str) -> list[Event]:
        return [
            e
            for _, e in self.events
            if e.kind == kind
            and e.source.startswith(source_prefix)
            and all(getattr(e, k) == v for k, v in match.items())
        ]

    def first_at(self, kind: str, **match: str) -> float | None:
        for at, e in self.events:
            if e.kind == kind and all(getattr(e, k) == v for k, v in match.items()):
                return at
        return None

    async def wait(self, kind: str, count: int = 1, timeout: float = 20.0, **match: str) -> None:
        await wait_until(
            lambda: len(self.of(kind, **match)) >= count, timeout,
            what=f"{count} {kind} event(s) {match}",
        )  # fmt: skip


class SupervisorProcess:
    """`python -m actormesh_supervisor` as a real process, with its log in a file."""

    #: Start it in a process group of its own (SIGKILL to the group takes its workers too).
    new_session = False

    def __init__(self, tmp: Path, mf: MeshFile, nats_url: str, prefix: str, *, name: str) -> None:
        self.tmp = tmp
        self.config = tmp / "mesh.toml"
        self.config.write_text(toml_text(mf))
        self.runtime = tmp / "rt"
        self.log = tmp / f"{name}.log"
        self.nats_url = nats_url
        self.prefix = prefix
        self.proc: asyncio.subprocess.Process | None = None
        self.url = ""
        self.sup_name = mf.supervisor.name

    async def start(self, **env: str) -> Self:
        url_file = self.runtime / f"dashboard-{self.prefix}-{self.sup_name}.url"
        with contextlib.suppress(FileNotFoundError):
            url_file.unlink()
        with open(self.log, "ab") as log:  # noqa: ASYNC230 - opening a log file is instant
            self.proc = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "actormesh_supervisor", "--config", str(self.config),
                "--nats-url", self.nats_url, "--prefix", self.prefix,
                "--runtime-dir", str(self.runtime),
                env=worker_env(ACTORMESH_DASHBOARD_TOKEN=TOKEN, ACTORMESH_LOG_LEVEL="INFO", **env),
                stdout=log, stderr=log, cwd=ROOT, start_new_session=self.new_session,
            )  # fmt: skip
        await wait_until(url_file.exists, 30, what=f"{self.sup_name}'s dashboard URL file")
        self.url = url_file.read_text().strip()
        return self

    async def state(self) -> dict[str, Any]:
        async with aiohttp.ClientSession() as http, http.get(self.url + "api/state") as resp:
            resp.raise_for_status()
            data: dict[str, Any] = await resp.json()
            return data

    async def workers(self) -> dict[str, dict[str, Any]]:
        return {w["id"]: w for w in (await self.state())["workers"]}

    async def wait_running(self, ids: list[str], timeout: float = 30.0) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while True:
            with contextlib.suppress(aiohttp.ClientError):
                ws = await self.workers()
                if all(ws.get(i, {}).get("health") == "ok" and ws[i]["supervised"] for i in ids):
                    return ws
            if time.monotonic() > deadline:
                raise AssertionError(f"workers {ids} not all ok after {timeout}s: {self.tail()}")
            await asyncio.sleep(0.1)

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)

    async def terminate(self, timeout: float = 30.0) -> int:
        assert self.proc is not None
        if self.proc.returncode is None:
            self.proc.send_signal(signal.SIGTERM)
        async with asyncio.timeout(timeout):
            return await self.proc.wait()

    async def wait(self) -> int:
        assert self.proc is not None
        return await self.proc.wait()

    def tail(self, lines: int = 40) -> str:
        try:
            return "\n".join(self.log.read_text().splitlines()[-lines:])
        except FileNotFoundError:
            return ""


def pid_gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True
    return stat.rsplit(")", 1)[1].split()[0] in ("Z", "X")


def kill_quietly(pids: list[int]) -> None:
    """Test cleanup: nothing a failed test started may outlive it."""
    for pid in pids:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, signal.SIGKILL)


async def tell_all(
    mesh: Mesh, ids: list[str], *, ms: int = 0, rate: float = 0.0,
    on_sent: Callable[[str], Awaitable[None]] | None = None,
) -> list[str]:  # fmt: skip
    """Tell Work(id) for each id (acked by JetStream); returns the ids acked."""
    ref = mesh.ref("ledger", None)
    acked = []
    for msg_id in ids:
        await ref.tell(msg_id_payload(msg_id, ms), msg_id=msg_id)
        acked.append(msg_id)
        if on_sent is not None:
            await on_sent(msg_id)
        if rate:
            await asyncio.sleep(1.0 / rate)
    return acked


def msg_id_payload(msg_id: str, ms: int) -> bytes:
    return json.dumps({"type": "Work", "id": msg_id, "ms": ms}).encode()


def snapshot_workers(sup: Any) -> dict[str, dict[str, Any]]:
    from actormesh_supervisor._snapshot import snapshot

    return {w["id"]: w for w in snapshot(sup)["workers"]}
