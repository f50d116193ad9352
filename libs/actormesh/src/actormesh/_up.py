"""`actormesh up`: the embedded broker plus the mesh declared in mesh.toml."""

from __future__ import annotations

import asyncio
import contextlib
import importlib.util
import logging
import os
import shlex
import shutil
import signal
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from ._meshfile import BrokerSection, GrantSpec, MeshFile
from ._server import NatsServer, ServerConfig
from ._settings import Settings, redact, server_list

if TYPE_CHECKING:
    from ._cluster import NatsCluster
    from ._mesh import Mesh

__all__ = ["apply_grants", "up"]

log = logging.getLogger("actormesh.up")

#: Seconds before `up` restarts an embedded cluster node that died: long enough
#: to watch the others elect new leaders without it.
NODE_RESTART_DELAY = 5.0


async def up(meshfile: MeshFile, settings: Settings, *, config_path: Path) -> int:
    """Run broker + supervisor (which runs the workers) until Ctrl-C; returns an exit code."""
    url, server = await _broker(meshfile, settings)

    if meshfile.grants:
        try:
            await _grant_at_start(url, meshfile)
        except Exception as exc:
            print(f"actormesh: could not apply mesh.toml's [[grants]]: {exc!r}", file=sys.stderr)
            if server:
                await server.stop()
            return 1

    env = dict(
        os.environ,
        NATS_URL=url,
        ACTORMESH_PREFIX=meshfile.mesh.prefix,
        ACTORMESH_REPLICAS=str(meshfile.mesh.replicas),
        ACTORMESH_PLACEMENT_TAGS=",".join(meshfile.mesh.placement_tags),
    )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)

    if importlib.util.find_spec("actormesh_supervisor") is None:
        print(
            "actormesh: the supervisor package (actormesh-supervisor) is not installed",
            file=sys.stderr,
        )
        if server:
            await server.stop()
        return 1
    sup = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "actormesh_supervisor",
        "--config",
        str(config_path),
        env=env,
    )
    s = meshfile.supervisor
    print(
        f"actormesh: supervisor pid {sup.pid}; dashboard http://{s.dashboard_host}:"
        f"{s.dashboard_port}/",
        flush=True,
    )
    print(f"actormesh: workers: {', '.join(c.name for _, c in meshfile.children()) or 'none'}")
    cli = _cli_name()
    print(
        # user-7, as in the README: the assistant's examples there count user-42 from 0.
        f'actormesh: try  {cli} tell counter user-7 \'{{"type":"Inc","by":1}}\'  '
        f'and  {cli} ask counter user-7 \'{{"type":"Get"}}\''
    )
    if any(c.actor == "actormesh_assistant:Assistant" for _, c in meshfile.children()):
        print(
            f"actormesh: and  {cli} tool call assistant.run "
            '\'{"task":"count","key":"user-42","times":3}\' --principal cli'
        )
    print("actormesh: Ctrl-C stops everything", flush=True)

    keeper = _keep_nodes_up(server)
    waiter = asyncio.ensure_future(sup.wait())
    stopper = asyncio.ensure_future(stop.wait())
    await asyncio.wait({waiter, stopper}, return_when=asyncio.FIRST_COMPLETED)
    code = 0
    if not waiter.done():
        print("\nactormesh: stopping (workers drain, then the broker stops) ...", flush=True)
        with contextlib.suppress(ProcessLookupError):
            sup.send_signal(signal.SIGTERM)
        try:
            await asyncio.wait_for(asyncio.shield(waiter), 60)
        except TimeoutError:
            sup.kill()
            await waiter
    else:
        code = waiter.result() or 0
        print(f"actormesh: the supervisor exited with {code}", file=sys.stderr)
    stopper.cancel()
    await _stop_broker(server, keeper)
    print("actormesh: stopped", flush=True)
    return code


async def _broker(
    meshfile: MeshFile, settings: Settings
) -> tuple[str, NatsServer | NatsCluster | None]:
    """The broker's URL(s), and the embedded server or cluster if `up` runs one."""
    url = settings.nats_url or meshfile.broker.servers()
    if not url:
        server = await _start_broker(meshfile)
        return server.url, server
    server_list(url)  # BadServerUrl names a bad one before anything starts
    source = "NATS_URL" if settings.nats_url else "mesh.toml [broker] url"
    print(f"actormesh: using the broker at {redact(url)} ({source})", flush=True)
    return url, None


async def _stop_broker(
    server: NatsServer | NatsCluster | None, keeper: asyncio.Task[None] | None
) -> None:
    if keeper is not None:
        keeper.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await keeper
    if server is not None:
        await server.stop()


async def _start_broker(meshfile: MeshFile) -> NatsServer | NatsCluster:
    """The embedded broker: one nats-server, or `[broker] nodes` of them as a cluster."""
    b = meshfile.broker
    store = Path(b.store_dir)
    if b.nodes > 1:
        return await _start_cluster(b, replicas=meshfile.mesh.replicas)
    server = NatsServer(
        ServerConfig(
            host=b.host,
            port=b.port,
            store_dir=store,
            sync_always=b.sync_always,
            max_payload=b.max_payload,
        )
    )
    print(f"actormesh: starting nats-server (JetStream, store {store}/) ...", flush=True)
    await server.start()
    print(f"actormesh: broker ready at {server.url}", flush=True)
    return server


async def _start_cluster(b: BrokerSection, *, replicas: int) -> NatsCluster:
    # Imported here: only a cluster needs it (the test harness's `NatsCluster`:
    # nodes on loopback that can be killed and restarted).
    from ._cluster import NatsCluster

    n = b.nodes
    cluster = NatsCluster(
        n,
        store_root=b.store_dir,
        host=b.host,
        ports=[b.port + i if b.port else 0 for i in range(n)],
        cluster_ports=[b.cluster_port + i for i in range(n)] if b.cluster_port else None,
        sync_always=b.sync_always,
        max_payload=b.max_payload,
        max_file_store=None,
    )
    print(
        f"actormesh: starting a {n}-node nats-server cluster (JetStream, stores "
        f"{b.store_dir}/n1..n{n}) ...",
        flush=True,
    )
    await cluster.start()
    for name, s in zip(cluster.names, cluster.servers, strict=True):
        print(f"actormesh: node {name} pid {s.pid} at {s.url}, routes on port {s.cluster_port}")
    print(f"actormesh: broker ready at {cluster.url}", flush=True)
    print(f"actormesh: in another shell, export NATS_URL={cluster.url}")
    print(
        "actormesh: try failover: kill -9 a node's pid (it is restarted after "
        f"{NODE_RESTART_DELAY:g}s), or kill -STOP / -CONT it",
        flush=True,
    )
    if replicas < 2:
        print(
            "actormesh: note: [mesh] replicas = 1 keeps each stream on one node; "
            f"set replicas = {min(n, 3)} so the mesh survives losing a node",
            flush=True,
        )
    return cluster


def _keep_nodes_up(server: NatsServer | NatsCluster | None) -> asyncio.Task[None] | None:
    """An embedded cluster's nodes come back after a crash (a `kill -9` to try
    failover): restarted on their ports and stores after a few seconds."""
    if server is None or isinstance(server, NatsServer):
        return None

    def say(text: str) -> None:
        print(f"actormesh: {text}", flush=True)

    return asyncio.ensure_future(server.keep_alive(delay=NODE_RESTART_DELAY, say=say))


async def apply_grants(mesh: Mesh, grants: list[GrantSpec]) -> None:
    """Add mesh.toml's `[[grants]]` to the grants bucket (idempotent)."""
    for spec in grants:
        if spec.tools:
            await mesh.tools.grants.grant(spec.principal, *spec.tools)
        if spec.approval:
            await mesh.tools.grants.grant(spec.principal, *spec.approval, approval=True)


async def _grant_at_start(url: str, meshfile: MeshFile) -> None:
    """Before any worker starts, so the example's first call is not denied."""
    from ._mesh import Mesh

    async with await Mesh.connect(
        url, prefix=meshfile.mesh.prefix, name="actormesh-up", connect_wait=5.0
    ) as mesh:
        mesh.replication = meshfile.mesh.replication()
        await apply_grants(mesh, meshfile.grants)
    for spec in meshfile.grants:
        tools = [*spec.tools, *(f"{t} (approval)" for t in spec.approval)]
        print(f"actormesh: grant {spec.principal}: {', '.join(tools)}", flush=True)


def _cli_name() -> str:
    """How a second shell at the repository root runs the CLI, as the README writes it.

    Under `uv run` (`make up`), `uv run actormesh`: uv put `.venv/bin` on the PATH
    of this process only, so a bare `actormesh` would not be found in that shell.
    uv's own path when `uv` is not on PATH (make installed it in ~/.local/bin).
    Otherwise `actormesh` if that is on PATH and this one, else its path."""
    uv = os.environ.get("UV", "")
    if uv and Path(uv).is_file():
        found = shutil.which("uv")
        same = found is not None and os.path.samefile(found, uv)
        return f"{'uv' if same else shlex.quote(uv)} run actormesh"
    cli = Path(sys.executable).with_name("actormesh")
    if shutil.which("actormesh") == str(cli) or not cli.exists():
        return "actormesh"
    try:
        return os.path.relpath(cli)
    except ValueError:
        return str(cli)
