"""`actormesh mcp`: serve the mesh's tools over MCP, on stdio or streamable HTTP.

The CLI builds its parser from here on every run: nothing of the `mcp` SDK (nor
uvicorn) is imported until the command runs.

Under a supervisor (`--supervisor-child`, or `ACTORMESH_SUPERVISOR_CHILD` as a
`command` child gets it), the HTTP server also runs a worker of its own
(`_gateway`): the supervisor sees it by its heartbeats, drains it on stop and
restarts it when it dies, as it does any worker.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import signal
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from actormesh import ConfigError, Mesh, __version__

from ._auth import BearerAuth, init_tokens, load_tokens

__all__ = ["add_mcp_parser", "run_mcp"]


def add_mcp_parser(sub: Any) -> None:
    """The `mcp` subcommand's arguments (on the CLI's subparsers)."""
    m = sub.add_parser("mcp", help="serve the mesh's tools over MCP (stdio or streamable HTTP)")
    how = m.add_mutually_exclusive_group(required=True)
    how.add_argument("--stdio", action="store_true", help="one client on stdin/stdout")
    how.add_argument("--http", action="store_true", help="streamable HTTP, bearer tokens")
    m.add_argument("--principal", help="--stdio: who the client calls as (it needs grants)")
    m.add_argument(
        "--tokens", help="--http: TOML/JSON file with a [tokens] table: token = principal"
    )
    m.add_argument(
        "--config",
        metavar="MESH_TOML",
        help="--http: take tokens from this mesh file's [mcp] section (`tokens_file`, "
        "`tokens`), besides --tokens",
    )
    m.add_argument(
        "--init-tokens",
        metavar="PRINCIPAL",
        help="--http: if the tokens file (--tokens, else [mcp] tokens_file) does not exist, "
        "create it (mode 600) with one random token for PRINCIPAL",
    )
    m.add_argument("--host", default="127.0.0.1", help="--http: address (default loopback)")
    m.add_argument("--port", type=int, default=8790, help="--http: port (default 8790)")
    m.add_argument("--path", default="/mcp", help="--http: the endpoint's path")
    m.add_argument(
        "--call-timeout", type=float, default=30.0, help="each tool call's deadline (seconds)"
    )
    m.add_argument("--worker-id", default=None, help="supervised: this process's worker id")
    m.add_argument("--supervisor-child", default="", help="supervised: the child's name")
    m.add_argument("--heartbeat-interval", type=float, default=None)


def _fail(message: str) -> int:
    print(f"actormesh: error: {message}", file=sys.stderr)
    return 1


async def run_mcp(args: argparse.Namespace, url: str, prefix: str) -> int:
    if args.stdio and not args.principal:
        return _fail("give --principal NAME with --stdio (who the client calls as)")
    if args.http and not (args.tokens or args.config):
        return _fail(
            "give --tokens FILE or --config MESH_TOML with --http (see `actormesh mcp --help`)"
        )
    tokens = _http_tokens(args) if args.http else {}
    mesh = await Mesh.connect(url, prefix=prefix, name="actormesh-mcp", connect_wait=3.0)
    tracer, flush = _tracing(mesh)
    try:
        if args.stdio:
            return await _stdio(mesh, args, tracer)
        return await _http(mesh, args, tokens, tracer)
    finally:
        flush()
        await mesh.close()


def _tracing(mesh: Mesh) -> tuple[Any, Callable[[], None]]:
    """Traces as the OTEL_* environment says (none configured: no tracer, no cost):
    the server's own `tools/call` spans, and the mesh's spans of each call, through
    one OpenTelemetry SDK provider; and what flushes it at exit."""
    from actormesh.observability import TracingConfig

    config = TracingConfig.from_env(os.environ)
    if not config.enabled:
        return None, lambda: None
    from actormesh.observability import build_tracer_provider, instrument

    provider = build_tracer_provider(config, service_name="actormesh-mcp")
    instrument(mesh, provider)
    return provider.get_tracer("actormesh.mcp", __version__), provider.shutdown


def _http_tokens(args: argparse.Namespace) -> dict[str, str]:
    """The token → principal mapping: the --tokens file, and the mesh file's `[mcp]`
    section (its tokens file and its own `tokens`). Never printed nor logged."""
    section = None
    if args.config:
        from actormesh._meshfile import load

        section = load(args.config).mcp
    files = [Path(args.tokens)] if args.tokens else []
    if section is not None and section.tokens_file:
        files.append(Path(section.tokens_file))
    if args.init_tokens and files and init_tokens(files[0], args.init_tokens):
        print(
            f"actormesh mcp: created {files[0]} with a token for {args.init_tokens!r} "
            "(read it there)",
            file=sys.stderr,
        )
    tokens: dict[str, str] = {}
    for path in files:
        tokens.update(load_tokens(path))
    if section is not None:
        tokens.update(section.tokens)
    if not tokens:
        raise ConfigError(
            f"{args.config}: no MCP tokens: give [mcp] tokens_file or a [mcp.tokens] table"
        )
    return tokens


async def _stdio(mesh: Mesh, args: argparse.Namespace, tracer: Any) -> int:
    from mcp.server.stdio import stdio_server

    from ._server import build_server, fixed_principal

    server = build_server(
        mesh,
        principal_of=fixed_principal(args.principal),
        call_timeout=args.call_timeout,
        version=__version__,
        tracer=tracer,
    )
    async with stdio_server() as (read, write):
        await server.run(read, write, server.create_initialization_options())
    return 0


async def _http(mesh: Mesh, args: argparse.Namespace, tokens: dict[str, str], tracer: Any) -> int:
    import uvicorn

    from ._server import build_server, http_principal

    server = build_server(
        mesh,
        principal_of=http_principal,
        call_timeout=args.call_timeout,
        version=__version__,
        tracer=tracer,
    )
    app = server.streamable_http_app(streamable_http_path=args.path, host=args.host)
    config = uvicorn.Config(
        BearerAuth(app, tokens),
        host=args.host,
        port=args.port,
        log_level="warning",
        # The access log names paths only, but keep requests out of the logs anyway:
        # nothing of a request (its token least of all) is worth a line per call.
        access_log=False,
        lifespan="on",
    )
    endpoint = f"http://{args.host}:{args.port}{args.path}"
    child = args.supervisor_child or os.environ.get("ACTORMESH_SUPERVISOR_CHILD", "")
    # Supervised, the worker owns the signals (SIGTERM drains it, then HTTP stops).
    http = _uvicorn_server(config, own_signals=not child)
    print(f"actormesh mcp: serving on {endpoint}", file=sys.stderr, flush=True)
    if child:
        return await _supervised(mesh, args, http, child, endpoint)
    await http.serve()
    return 0 if http.started else 1


async def _supervised(
    mesh: Mesh, args: argparse.Namespace, http: Any, child: str, endpoint: str
) -> int:
    from actormesh import Worker, WorkerConfig

    from ._gateway import McpGateway

    McpGateway.url = endpoint
    fields: dict[str, Any] = {
        "worker_id": args.worker_id or os.environ.get("ACTORMESH_WORKER_ID") or None,
        "supervisor_child": child,
    }
    if args.heartbeat_interval is not None:
        fields["heartbeat_interval"] = args.heartbeat_interval
    worker = Worker(mesh, McpGateway, WorkerConfig(**fields))
    serving = asyncio.ensure_future(http.serve())
    running = asyncio.ensure_future(worker.run())
    await asyncio.wait({serving, running}, return_when=asyncio.FIRST_COMPLETED)
    if running.done():
        http.should_exit = True
        await serving
        return running.result()
    # The HTTP server stopped by itself: stop the worker too, and fail (a restart).
    worker.request_drain(grace=0.0)
    await running
    serving.result()
    return 1


def _uvicorn_server(config: Any, *, own_signals: bool) -> Any:
    import uvicorn

    class Server(uvicorn.Server):
        """uvicorn's server, stopping on SIGTERM/SIGINT by returning: uvicorn's own
        handling re-raises the signal once stopped, which would kill the process
        before the mesh connection is closed (and exit -15 for a clean stop)."""

        @contextlib.contextmanager
        def capture_signals(self) -> Iterator[None]:
            if not own_signals:
                yield
                return
            loop = asyncio.get_running_loop()
            for sig in (signal.SIGTERM, signal.SIGINT):
                loop.add_signal_handler(sig, self._stop)
            try:
                yield
            finally:
                for sig in (signal.SIGTERM, signal.SIGINT):
                    loop.remove_signal_handler(sig)

        def _stop(self) -> None:
            self.force_exit = self.should_exit  # a second signal: do not wait for clients
            self.should_exit = True

    return Server(config)
