"""`actormesh-supervisor` / `python -m actormesh_supervisor`: the one place that
reads the environment and the command line."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import signal
import sys
from collections.abc import Coroutine, Mapping
from pathlib import Path
from typing import Any

import msgspec

from actormesh import ActorMeshError
from actormesh.lowlevel import Settings, configure_logging, load_meshfile

from ._options import SupervisorOptions
from ._service import Service
from ._token import generate_token, read_token_file

__all__ = ["main", "options_from"]

log = logging.getLogger("actormesh.supervisor")


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="actormesh-supervisor",
        description="Supervise the worker groups of mesh.toml: heartbeats, OTP restarts, "
        "escalation, and a dashboard.",
    )
    p.add_argument("--config", default="mesh.toml", help="the mesh file (default mesh.toml)")
    p.add_argument("--nats-url", help="broker URL (default: $NATS_URL or nats://127.0.0.1:4222)")
    p.add_argument("--prefix", help="subject prefix (default: $ACTORMESH_PREFIX or [mesh] prefix)")
    p.add_argument(
        "--runtime-dir",
        help="state file and dashboard token (default: $ACTORMESH_RUNTIME_DIR or .actormesh)",
    )
    p.add_argument("--dashboard-host", help="override supervisor.dashboard_host")
    p.add_argument("--dashboard-port", type=int, help="override supervisor.dashboard_port (0: any)")
    p.add_argument("--no-dashboard", action="store_true", help="run without the dashboard")
    return p


def options_from(args: argparse.Namespace, env: Mapping[str, str]) -> SupervisorOptions:
    settings = Settings.from_env(env)
    meshfile = load_meshfile(args.config)
    section = meshfile.supervisor
    if args.dashboard_host is not None:
        section = msgspec.structs.replace(section, dashboard_host=args.dashboard_host)
    if args.dashboard_port is not None:
        section = msgspec.structs.replace(section, dashboard_port=args.dashboard_port)
    meshfile = msgspec.structs.replace(meshfile, supervisor=section)
    runtime_dir = Path(args.runtime_dir or env.get("ACTORMESH_RUNTIME_DIR") or ".actormesh")
    token = ""
    if not args.no_dashboard:
        if env.get("ACTORMESH_DASHBOARD_TOKEN"):
            token = env["ACTORMESH_DASHBOARD_TOKEN"]
        elif env.get("ACTORMESH_DASHBOARD_TOKEN_FILE"):
            token = read_token_file(env["ACTORMESH_DASHBOARD_TOKEN_FILE"])
        else:
            path = runtime_dir / "dashboard-token"
            token = generate_token(path)
            print(f"actormesh-supervisor: dashboard login token written to {path} (mode 0600)",
                  flush=True)  # fmt: skip
    return SupervisorOptions(
        meshfile=meshfile,
        nats_url=args.nats_url or settings.url,
        prefix=args.prefix or env.get("ACTORMESH_PREFIX") or meshfile.mesh.prefix,
        runtime_dir=runtime_dir,
        python=sys.executable,
        worker_env=dict(env),
        dashboard_token=token,
        nats_creds=settings.creds,
    )


async def serve(options: SupervisorOptions) -> int:
    """Run until SIGTERM or SIGINT, then drain the workers and return 0."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, stop.set)
    service = Service(options)
    try:
        await service.start()
    except ActorMeshError as exc:
        log.error("cannot start: %s", exc)
        return 1
    if service.url:
        print(f"actormesh-supervisor: dashboard {service.url}", flush=True)
    await _first(stop.wait(), service.exit_requested.wait())
    log.info("stopping: draining the workers")
    await service.stop()
    return service.exit_code


async def _first(*waits: Coroutine[Any, Any, Any]) -> None:
    """Until the first of `waits` is done (the others are cancelled)."""
    tasks = [asyncio.ensure_future(w) for w in waits]
    try:
        await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in tasks:
            task.cancel()


def _run(coro: Coroutine[Any, Any, int]) -> int:
    try:
        import uvloop
    except ImportError:
        return asyncio.run(coro)
    return uvloop.run(coro)


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    env = dict(os.environ)
    settings = Settings.from_env(env)
    configure_logging(settings.log_level, settings.log_format)
    try:
        options = options_from(args, env)
    except (ActorMeshError, ValueError) as exc:
        print(f"actormesh-supervisor: error: {exc}", file=sys.stderr)
        return 1
    try:
        return _run(serve(options))
    except KeyboardInterrupt:
        return 130
