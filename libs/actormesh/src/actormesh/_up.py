"""`actormesh up`: the embedded broker plus the mesh declared in mesh.toml."""

from __future__ import annotations

import asyncio
import contextlib
import importlib.util
import logging
import os
import shutil
import signal
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from ._meshfile import GrantSpec, MeshFile
from ._server import NatsServer, ServerConfig
from ._settings import Settings

if TYPE_CHECKING:
    from ._mesh import Mesh

__all__ = ["apply_grants", "up"]

log = logging.getLogger("actormesh.up")


async def up(meshfile: MeshFile, settings: Settings, *, config_path: Path) -> int:
    """Run broker + supervisor (which runs the workers) until Ctrl-C; returns an exit code."""
    server: NatsServer | None = None
    url = settings.nats_url
    if url is None:
        b = meshfile.broker
        store = Path(b.store_dir)
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
        url = server.url
        print(f"actormesh: broker ready at {url}", flush=True)
    else:
        print(f"actormesh: using the broker at {url} (NATS_URL)", flush=True)

    if meshfile.grants:
        try:
            await _grant_at_start(url, meshfile)
        except Exception as exc:
            print(f"actormesh: could not apply mesh.toml's [[grants]]: {exc!r}", file=sys.stderr)
            if server:
                await server.stop()
            return 1

    env = dict(os.environ, NATS_URL=url, ACTORMESH_PREFIX=meshfile.mesh.prefix)
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
        f'actormesh: try  {cli} tell counter user-42 \'{{"type":"Inc","by":1}}\'  '
        f'and  {cli} ask counter user-42 \'{{"type":"Get"}}\''
    )
    if any(c.actor == "actormesh_assistant:Assistant" for _, c in meshfile.children()):
        print(
            f"actormesh: and  {cli} tool call assistant.run "
            '\'{"task":"count","key":"user-42","times":3}\' --principal cli'
        )
    print("actormesh: Ctrl-C stops everything", flush=True)

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
    if server is not None:
        await server.stop()
    print("actormesh: stopped", flush=True)
    return code


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
        await apply_grants(mesh, meshfile.grants)
    for spec in meshfile.grants:
        tools = [*spec.tools, *(f"{t} (approval)" for t in spec.approval)]
        print(f"actormesh: grant {spec.principal}: {', '.join(tools)}", flush=True)


def _cli_name() -> str:
    """How to run the CLI from here: `actormesh` if that is on PATH and this one,
    else its path (`.venv/bin/actormesh` after `make up`)."""
    cli = Path(sys.executable).with_name("actormesh")
    if shutil.which("actormesh") == str(cli) or not cli.exists():
        return "actormesh"
    try:
        return os.path.relpath(cli)
    except ValueError:
        return str(cli)
