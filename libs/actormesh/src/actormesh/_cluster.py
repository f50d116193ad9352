"""An N-node NATS JetStream cluster on loopback, from real `nats-server` processes.

For tests of replication and failover, and for `actormesh up` with
``[broker] nodes = 3``. Each node is an `actormesh._server.NatsServer` with its
own name (n1, n2, ...), store directory and client port; the nodes route to one
another on cluster ports chosen before they start (routes must name them).
A node can be killed (SIGKILL), restarted on the same ports and store, paused
(SIGSTOP) and resumed. The cluster is ready when every running node answers a
JetStream API request, which only a cluster with a metadata leader does.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import socket
import tempfile
import time
import uuid
from collections.abc import Callable, Sequence
from pathlib import Path

import nats
from nats.aio.client import Client
from nats.js import JetStreamContext

from ._errors import ActorMeshError
from ._server import NatsServer, ServerConfig

__all__ = ["NatsCluster", "free_ports"]

#: A free port picked before a node binds it can be taken in between (rarely):
#: the whole start is tried again on fresh ports this many times.
_START_ATTEMPTS = 3
_POLL = 0.1


def free_ports(n: int, host: str = "127.0.0.1") -> list[int]:
    """`n` distinct ports that were free a moment ago (all bound at once, then released)."""
    socks = []
    try:
        for _ in range(n):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            socks.append(s)
            s.bind((host, 0))
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


class NatsCluster:
    """A JetStream cluster of `nodes` nats-servers on `host`; an async context manager.

    `store_root` holds one directory per node (a temporary one if not given).
    `ports` and `cluster_ports` fix the client and route ports (one per node);
    by default client ports are random (read back from each node's log) and
    cluster ports are picked free before the start. `server_tags` gives each
    node its tags (for placement), e.g. ``[["az1"], ["az2"], ["az3"]]``.
    """

    def __init__(
        self,
        nodes: int = 3,
        *,
        store_root: str | Path | None = None,
        name: str = "actormesh",
        host: str = "127.0.0.1",
        ports: Sequence[int] | None = None,
        cluster_ports: Sequence[int] | None = None,
        sync_always: bool = False,
        max_payload: int = 1024 * 1024,
        max_file_store: int | None = 1 << 40,
        server_tags: Sequence[Sequence[str]] | None = None,
        ready_timeout: float = 30.0,
        binary: str | None = None,
    ) -> None:
        if nodes < 1:
            raise ActorMeshError(f"a cluster needs at least one node, not {nodes}")
        for what, given in (
            ("ports", ports),
            ("cluster_ports", cluster_ports),
            ("server_tags", server_tags),
        ):
            if given is not None and len(given) != nodes:
                raise ActorMeshError(f"{what}: give one per node ({nodes}), not {len(given)}")
        self.nodes = nodes
        self.cluster_name = name
        self.host = host
        self.names = [f"n{i + 1}" for i in range(nodes)]
        self.ready_timeout = ready_timeout
        self._ports = list(ports) if ports is not None else [0] * nodes
        self._fixed_cluster_ports = list(cluster_ports) if cluster_ports is not None else None
        self._sync_always = sync_always
        self._max_payload = max_payload
        self._max_file_store = max_file_store
        self._tags = [tuple(t) for t in server_tags] if server_tags else [()] * nodes
        self._binary = binary
        self._tmp: tempfile.TemporaryDirectory[str] | None = None
        if store_root is None:
            self._tmp = tempfile.TemporaryDirectory(prefix="actormesh-cluster-")
            store_root = self._tmp.name
        self.store_root = Path(store_root)
        self.servers: list[NatsServer] = []
        self._paused: set[int] = set()

    # -- where it is -------------------------------------------------------------

    @property
    def urls(self) -> list[str]:
        """One client URL per node (the ports stay the same across restarts)."""
        return [s.url for s in self.servers]

    @property
    def url(self) -> str:
        """Every node's URL, comma-separated: for NATS_URL, --nats-url and
        `Mesh.connect` (nats-py's own `nats.connect` takes the list, `urls`)."""
        return ",".join(self.urls)

    def index_of(self, name: str) -> int:
        """The index of the node called `name` (e.g. a stream leader's)."""
        try:
            return self.names.index(name)
        except ValueError:
            raise ActorMeshError(f"no node {name!r} in this cluster ({self.names})") from None

    def running(self, i: int) -> bool:
        """Node `i` has a process (it may be paused)."""
        return self.servers[i].pid is not None

    # -- lifecycle ---------------------------------------------------------------

    async def start(self) -> None:
        """Start every node and wait for the cluster to be ready."""
        for attempt in range(_START_ATTEMPTS):
            cluster_ports = self._fixed_cluster_ports or free_ports(self.nodes, self.host)
            self.servers = [self._server(i, cluster_ports) for i in range(self.nodes)]
            try:
                await asyncio.gather(*(s.start() for s in self.servers))
                break
            except ActorMeshError:
                await self._stop_all(kill=True)
                if self._fixed_cluster_ports is not None or attempt == _START_ATTEMPTS - 1:
                    raise
        await self.wait_ready()

    def _server(self, i: int, cluster_ports: list[int]) -> NatsServer:
        routes = tuple(
            f"nats-route://{self.host}:{p}" for j, p in enumerate(cluster_ports) if j != i
        )
        config = ServerConfig(
            host=self.host,
            port=self._ports[i],
            store_dir=self.store_root / self.names[i],
            sync_always=self._sync_always,
            max_payload=self._max_payload,
            max_file_store=self._max_file_store,
            server_name=self.names[i],
            cluster_name=self.cluster_name,
            cluster_port=cluster_ports[i],
            routes=routes,
            server_tags=self._tags[i],
        )
        return NatsServer(config, binary=self._binary)

    async def stop(self) -> None:
        """Stop every node (SIGTERM; paused ones are resumed first so they can exit)."""
        for i in list(self._paused):
            self.resume(i)
        await self._stop_all(kill=False)

    async def _stop_all(self, *, kill: bool) -> None:
        await asyncio.gather(*(s.stop(kill=kill) for s in self.servers), return_exceptions=True)

    async def kill(self, i: int) -> None:
        """SIGKILL node `i` (a crash) and wait for it to exit."""
        self._paused.discard(i)
        await self.servers[i].stop(kill=True)

    async def restart(self, i: int) -> None:
        """Start node `i` again on its client and cluster ports and its store, then
        wait for the cluster to be ready (the node answering too)."""
        if self.running(i):
            await self.kill(i)
        await self.servers[i].start()
        await self.wait_ready()

    def pause(self, i: int) -> None:
        """SIGSTOP node `i`: it holds its sockets but answers nothing."""
        pid = self.servers[i].pid
        if pid is None:
            raise ActorMeshError(f"node {self.names[i]} is not running")
        os.kill(pid, signal.SIGSTOP)
        self._paused.add(i)

    def resume(self, i: int) -> None:
        """SIGCONT node `i` after `pause`."""
        pid = self.servers[i].pid
        self._paused.discard(i)
        if pid is not None:
            os.kill(pid, signal.SIGCONT)

    async def keep_alive(self, *, delay: float = 5.0, say: Callable[[str], object] = print) -> None:
        """Restart any node whose process dies on its own (not by `kill` or `stop`)
        after `delay` seconds, on its ports and store, until cancelled; `say` tells
        what happens. `actormesh up` runs it so a node killed while trying
        failover comes back, as a service manager would bring it back."""
        await asyncio.gather(*(self._keep(i, delay, say) for i in range(self.nodes)))

    async def _keep(self, i: int, delay: float, say: Callable[[str], object]) -> None:
        server, name = self.servers[i], self.names[i]
        while (code := await server.wait_exit()) is not None:
            say(f"node {name} exited ({code}); restarting it in {delay:g}s")
            await asyncio.sleep(delay)
            try:
                await server.start()
            except ActorMeshError as exc:
                say(f"node {name} could not restart: {exc}")
                return
            say(f"node {name} is back (pid {server.pid}) at {server.url}")

    # -- readiness ---------------------------------------------------------------

    async def wait_ready(self, timeout: float | None = None) -> None:
        """Wait until every running, unpaused node answers `$JS.API.INFO` without an
        error (the cluster has a metadata leader and the node reaches it), and a
        stream with a replica on each of them can be placed: the leader knows them
        all (until it does, such a create says "no suitable peers for placement")."""
        limit = self.ready_timeout if timeout is None else timeout
        live = [i for i in range(self.nodes) if self.running(i) and i not in self._paused]
        deadline = time.monotonic() + limit
        for i in live:
            await self._wait_node(i, deadline, limit)
        if len(live) > 1:
            await self._wait_placeable(self.servers[live[0]].url, len(live), deadline, limit)

    async def _wait_placeable(self, url: str, replicas: int, deadline: float, limit: float) -> None:
        name = f"AMPROBE_{uuid.uuid4().hex[:8]}"
        config = json.dumps(
            {"name": name, "subjects": [f"_amprobe.{name}"], "storage": "memory",
             "num_replicas": replicas}
        ).encode()  # fmt: skip
        last = "no answer"
        nc = await nats.connect(url, connect_timeout=2, name="cluster-ready")
        try:
            while time.monotonic() < deadline:
                try:
                    msg = await nc.request(f"$JS.API.STREAM.CREATE.{name}", config, timeout=2)
                except (nats.errors.Error, TimeoutError) as exc:
                    last = repr(exc)
                else:
                    answer = json.loads(msg.data)
                    if "error" not in answer:
                        with contextlib.suppress(nats.errors.Error, TimeoutError):
                            await nc.request(f"$JS.API.STREAM.DELETE.{name}", b"", timeout=2)
                        return
                    last = json.dumps(answer["error"])
                await asyncio.sleep(_POLL)
        finally:
            await nc.close()
        raise ActorMeshError(
            f"JetStream cluster not ready within {limit:g}s: an R{replicas} stream "
            f"cannot be placed yet ({last})"
        )

    async def _wait_node(self, i: int, deadline: float, limit: float) -> None:
        last = "no answer"
        while time.monotonic() < deadline:
            last = await _js_info(self.servers[i].url)
            if not last:
                return
            await asyncio.sleep(_POLL)
        raise ActorMeshError(
            f"JetStream cluster not ready within {limit:g}s: node {self.names[i]} "
            f"({self.servers[i].url}) answered {last}"
        )

    async def stream_leader(
        self, js_or_nc: JetStreamContext | Client, stream: str, *, timeout: float = 30.0
    ) -> str:
        """The server name of `stream`'s leader (waiting out an election)."""
        # A raw request with a short timeout: during an election a stream info
        # request goes unanswered, and the context's default timeout is 5 s.
        if isinstance(js_or_nc, Client):
            nc, prefix = js_or_nc, "$JS.API"
        else:
            nc, prefix = js_or_nc._nc, js_or_nc._prefix
        deadline = time.monotonic() + timeout
        last = "no answer"
        while time.monotonic() < deadline:
            try:
                msg = await nc.request(f"{prefix}.STREAM.INFO.{stream}", b"", timeout=1)
            except (nats.errors.Error, TimeoutError) as exc:
                last = repr(exc)
            else:
                info = json.loads(msg.data)
                leader = info.get("cluster", {}).get("leader")
                if leader:
                    return str(leader)
                last = json.dumps(info.get("error") or info.get("cluster"))
            await asyncio.sleep(_POLL)
        raise ActorMeshError(f"stream {stream!r} has no leader after {timeout:g}s ({last})")

    async def __aenter__(self) -> NatsCluster:
        try:
            await self.start()
        except BaseException:
            await self.stop()
            self._cleanup()
            raise
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()
        self._cleanup()

    def _cleanup(self) -> None:
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None


async def _js_info(url: str) -> str:
    """'' if the node at `url` answers `$JS.API.INFO` without error, else what it said."""

    async def quiet(exc: Exception) -> None:
        pass

    try:
        nc = await nats.connect(
            url, allow_reconnect=False, connect_timeout=2, error_cb=quiet, name="cluster-ready"
        )
    except (OSError, nats.errors.Error, TimeoutError) as exc:
        return repr(exc)
    try:
        msg = await nc.request("$JS.API.INFO", b"", timeout=0.5)
    except (nats.errors.Error, TimeoutError) as exc:
        return repr(exc)
    finally:
        with contextlib.suppress(Exception):
            await nc.close()
    answer = json.loads(msg.data)
    return json.dumps(answer["error"]) if "error" in answer else ""
