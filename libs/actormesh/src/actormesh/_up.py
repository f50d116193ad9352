"""`actormesh up`: the embedded broker plus the mesh declared in mesh.toml."""

from __future__ import annotations

import asyncio
import contextlib
import importlib.util
import logging
import os
import signal
import sys
from pathlib import Path

from ._meshfile import MeshFile
from ._server import NatsServer, ServerConfig
from ._settings import Settings

__all__ = ["up"]

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
    print(
        'actormesh: try  actormesh tell counter user-42 \'{"type":"Inc","by":1}\'  '
        'and  actormesh ask counter user-42 \'{"type":"Get"}\''
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
