"""Restart backends behind one interface: `process` spawns the worker processes
itself, `none` only observes. (`docker` is in `_docker.py`.)"""

from __future__ import annotations

import abc
import asyncio
import contextlib
import json
import logging
import os
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

from actormesh.lowlevel import ChildSpec

from ._errors import BackendError
from ._options import BackendName, SupervisorOptions
from ._views import Slot

__all__ = [
    "Backend",
    "ExitCallback",
    "Found",
    "NoneBackend",
    "ProcessBackend",
    "pid_alive",
    "pid_runs",
]

log = logging.getLogger("actormesh.supervisor.backend")

#: (worker id, generation, exit code or None when it is not known)
ExitCallback = Callable[[str, int, int | None], None]


@dataclass(frozen=True, kw_only=True, slots=True)
class Found:
    """A worker a backend found already running (or present but stopped)."""

    worker_id: str
    child: str
    pid: int | None = None
    running: bool = True
    #: The backend's own handle: a container id for docker.
    ref: str = ""


class Backend(abc.ABC):
    """How the supervisor starts, stops and restarts workers.

    What a backend can do is said by its capabilities (the class attributes
    below); the supervisor asks them rather than which backend it has.
    """

    name: ClassVar[BackendName]
    #: False for `none`: failures are reported and counted, never acted on.
    can_restart: ClassVar[bool] = True
    #: True when worker ids come from mesh.toml (`<child>-<n>`); False when the
    #: backend discovers them (docker containers, or heartbeats for `none`).
    fixed_slots: ClassVar[bool] = True
    #: True when the workers are this machine's processes, spawned by the backend:
    #: their exit codes come from it (not from their last heartbeat), a pid in a
    #: heartbeat can be checked before adopting, and the supervisor drains them
    #: when it stops (other workers outlive their supervisor).
    spawns_processes: ClassVar[bool] = False
    #: True when a worker no discovery listed is adopted on its first heartbeat
    #: for a supervised child (`none`, which discovers nothing itself).
    adopts_by_heartbeat: ClassVar[bool] = False

    def __init__(self) -> None:
        self._on_exit: ExitCallback | None = None

    def bind(self, on_exit: ExitCallback) -> None:
        self._on_exit = on_exit

    def _exited(self, worker_id: str, generation: int, code: int | None) -> None:
        if self._on_exit is not None:
            self._on_exit(worker_id, generation, code)

    async def discover(self, children: list[ChildSpec]) -> list[Found]:
        """Workers that already run (a restarted supervisor adopts them)."""
        return []

    @abc.abstractmethod
    async def launch(self, slot: Slot, child: ChildSpec) -> int | None:
        """Start the slot's worker; returns its pid when known."""

    @abc.abstractmethod
    async def terminate(self, slot: Slot, grace: float) -> None:
        """Stop gracefully: SIGTERM (the worker drains), `grace` seconds, then kill."""

    async def kill(self, slot: Slot) -> None:
        """Fence a worker declared dead: it must not come back and handle messages."""
        await self.terminate(slot, 0.0)

    async def restart(self, slot: Slot, child: ChildSpec, grace: float) -> int | None:
        await self.terminate(slot, grace)
        return await self.launch(slot, child)

    def adopt(self, slot: Slot, found: Found) -> None:
        """Watch a worker this supervisor did not start."""
        return None

    def alive(self, slot: Slot) -> bool | None:
        """Whether the worker still runs, when the backend can tell without heartbeats."""
        return None

    async def close(self) -> None:
        """Forget the workers (they keep running); called on supervisor exit."""
        return None

    def remove_state(self) -> None:
        """After a clean stop: forget what a next supervisor would adopt."""
        return None


class NoneBackend(Backend):
    """Observe and escalate only: the workers are someone else's to restart."""

    name = "none"
    can_restart = False
    fixed_slots = False
    adopts_by_heartbeat = True

    async def launch(self, slot: Slot, child: ChildSpec) -> int | None:
        return None

    async def terminate(self, slot: Slot, grace: float) -> None:
        return None


def pid_alive(pid: int) -> bool:
    """Whether `pid` runs (a zombie does not: it has exited, only not been reaped)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as f:
            state = f.read().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return True
    return state not in ("Z", "X")


def pid_runs(pid: int, token: str) -> bool:
    """Whether `pid` is alive and its command line has `token` (our worker id).

    The token check guards against a reused pid: after a reboot or a long gap the
    pid in the state file may belong to something else entirely.
    """
    if not pid_alive(pid):
        return False
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            args = f.read().split(b"\0")
    except OSError:
        return True  # no /proc (not Linux): trust the heartbeat that comes next
    return token.encode() in args


@dataclass(eq=False)
class _Proc:
    pid: int
    generation: int
    child: str
    process: asyncio.subprocess.Process | None = None
    watcher: asyncio.Task[None] | None = None


class ProcessBackend(Backend):
    """Spawn each worker as `python -m actormesh ... worker module:Class`.

    Workers run in their own session, so the supervisor dying (even by SIGKILL)
    does not take them down, and a restarted supervisor adopts them from the
    state file, which records every pid this backend starts.
    """

    name = "process"
    spawns_processes = True

    def __init__(self, options: SupervisorOptions) -> None:
        super().__init__()
        self.options = options
        self._procs: dict[str, _Proc] = {}
        self._state_file = options.state_file

    # -- argv ------------------------------------------------------------------------

    def argv(self, slot: Slot, child: ChildSpec) -> list[str]:
        o = self.options
        sup = o.meshfile.supervisor
        if child.command:
            values = {
                "{worker_id}": slot.worker_id,
                "{child}": child.name,
                "{nats_url}": o.nats_url,
                "{prefix}": o.prefix,
                "{heartbeat_interval}": f"{sup.heartbeat_interval:g}",
                "{python}": o.python,
            }
            out = []
            for arg in [*child.command, *child.args]:
                for key, value in values.items():
                    arg = arg.replace(key, value)
                out.append(arg)
            return out
        # The worker drains in a little less than our grace, so it finishes its own
        # hand-back before we would have to kill it.
        drain = max(0.0, child.shutdown_grace * 0.8)
        return [
            o.python, "-m", "actormesh", "--nats-url", o.nats_url, "--prefix", o.prefix,
            "worker", child.actor, "--worker-id", slot.worker_id,
            "--supervisor-child", child.name,
            "--heartbeat-interval", f"{sup.heartbeat_interval:g}",
            "--drain-grace", f"{drain:g}",
            # Replica n serves partition n-1 of a partitioned mailbox (ignored otherwise).
            "--partition", str(slot.index - 1),
            *child.args,
        ]  # fmt: skip

    def env(self, slot: Slot, child: ChildSpec) -> dict[str, str]:
        env = dict(self.options.worker_env)
        env.update(child.env)
        env.update(
            NATS_URL=self.options.nats_url,
            ACTORMESH_PREFIX=self.options.prefix,
            ACTORMESH_WORKER_ID=slot.worker_id,
            ACTORMESH_SUPERVISOR_CHILD=child.name,
        )
        # The mesh-wide replication of mesh.toml, unless the environment sets its own.
        mesh = self.options.meshfile.mesh
        env.setdefault("ACTORMESH_REPLICAS", str(mesh.replicas))
        env.setdefault("ACTORMESH_PLACEMENT_TAGS", ",".join(mesh.placement_tags))
        return env

    # -- lifecycle -------------------------------------------------------------------

    async def discover(self, children: list[ChildSpec]) -> list[Found]:
        names = {c.name for c in children}
        found = []
        for worker_id, entry in _read_state(self._state_file).items():
            pid = entry.get("pid")
            child = entry.get("child", "")
            if not isinstance(pid, int) or child not in names:
                continue
            if pid_runs(pid, worker_id):
                found.append(Found(worker_id=worker_id, child=str(child), pid=pid))
        return found

    async def launch(self, slot: Slot, child: ChildSpec) -> int | None:
        argv = self.argv(slot, child)
        try:
            process = await asyncio.create_subprocess_exec(
                *argv,
                env=self.env(slot, child),
                stdin=asyncio.subprocess.DEVNULL,
                start_new_session=True,
            )
        except OSError as exc:
            raise BackendError(f"cannot start {slot.worker_id} ({argv[0]}): {exc}") from exc
        proc = _Proc(pid=process.pid, generation=slot.generation, child=child.name, process=process)
        proc.watcher = asyncio.get_running_loop().create_task(
            self._watch(slot.worker_id, proc, process), name=f"watch-{slot.worker_id}"
        )
        self._procs[slot.worker_id] = proc
        self._save()
        log.info("started %s (pid %d)", slot.worker_id, process.pid)
        return process.pid

    async def _watch(
        self, worker_id: str, proc: _Proc, process: asyncio.subprocess.Process
    ) -> None:
        code = await process.wait()
        if self._procs.get(worker_id) is proc:
            del self._procs[worker_id]
            self._save()
        self._exited(worker_id, proc.generation, code)

    def adopt(self, slot: Slot, found: Found) -> None:
        if found.pid is None:
            return
        self._procs[slot.worker_id] = _Proc(
            pid=found.pid, generation=slot.generation, child=slot.child
        )
        self._save()

    def alive(self, slot: Slot) -> bool | None:
        proc = self._procs.get(slot.worker_id)
        if proc is None or proc.process is not None:
            return None  # our own child: its exit is reported by the watcher
        return pid_alive(proc.pid)

    async def terminate(self, slot: Slot, grace: float) -> None:
        proc = self._procs.get(slot.worker_id)
        if proc is None:
            return
        if grace > 0:
            _signal(proc.pid, signal.SIGTERM)
            if await self._wait_gone(proc, grace):
                self._drop(slot.worker_id, proc)
                return
            log.warning("%s did not stop within %.1fs: killing it", slot.worker_id, grace)
        _signal(proc.pid, signal.SIGKILL)
        if not await self._wait_gone(proc, 10.0):
            log.error("%s (pid %d) survived SIGKILL for 10s", slot.worker_id, proc.pid)
        self._drop(slot.worker_id, proc)

    def _drop(self, worker_id: str, proc: _Proc) -> None:
        if self._procs.get(worker_id) is proc:
            del self._procs[worker_id]
            self._save()

    async def _wait_gone(self, proc: _Proc, timeout: float) -> bool:
        if proc.process is not None:
            try:
                async with asyncio.timeout(timeout):
                    await proc.process.wait()
            except TimeoutError:
                return False
            return True
        deadline = time.monotonic() + timeout
        while pid_alive(proc.pid):
            if time.monotonic() >= deadline:
                return False
            await asyncio.sleep(0.05)
        return True

    def pids(self) -> dict[str, int]:
        return {worker_id: proc.pid for worker_id, proc in self._procs.items()}

    async def close(self) -> None:
        for proc in self._procs.values():
            if proc.watcher is not None:
                proc.watcher.cancel()
        for proc in list(self._procs.values()):
            if proc.watcher is not None:
                with contextlib.suppress(asyncio.CancelledError):
                    await proc.watcher
        self._procs.clear()

    def remove_state(self) -> None:
        """After a clean stop: no workers are left for a next supervisor to adopt."""
        with contextlib.suppress(FileNotFoundError):
            self._state_file.unlink()

    def _save(self) -> None:
        # Written on every change, so a supervisor killed at any moment leaves
        # the pids of the workers it had started for the next one to adopt.
        workers = {
            worker_id: {"pid": proc.pid, "child": proc.child}
            for worker_id, proc in self._procs.items()
        }
        _write_state(self._state_file, {"version": 1, "workers": workers})


def _signal(pid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        # Our workers lead their own process group: a `command` child's
        # grandchildren get the signal too.
        if os.getpgid(pid) == pid:
            os.killpg(pid, sig)
        else:
            os.kill(pid, sig)


def _read_state(path: Path) -> dict[str, dict[str, object]]:
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as exc:
        log.warning("ignoring unreadable state file %s: %s", path, exc)
        return {}
    workers = data.get("workers") if isinstance(data, dict) else None
    if not isinstance(workers, dict):
        return {}
    return {str(k): v for k, v in workers.items() if isinstance(v, dict)}


def _write_state(path: Path, data: dict[str, object]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(data, indent=1))
    os.replace(tmp, path)
