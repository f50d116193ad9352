"""The `actormesh` command: worker, tell, ask, dlq, up; tools: grant, revoke, grants,
tools, tool call, authz; lifecycle: pause, resume, lifecycle, stop-instance, instances,
drain."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from collections.abc import Coroutine
from pathlib import Path
from typing import Any

from ._config import FullPolicy, WorkerConfig
from ._errors import ActorMeshError, AskTimeout, NoSuchActorType, PrioritiesOff, RemoteError
from ._logging import configure_logging
from ._settings import Settings

__all__ = ["main"]

_WORKER_DEFAULTS = WorkerConfig()
_TOOL_COMMANDS = ("grant", "revoke", "grants", "tools", "tool", "authz")
_LIFECYCLE_COMMANDS = ("pause", "resume", "lifecycle", "stop-instance", "instances", "drain")


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="actormesh", description=__doc__)
    p.add_argument(
        "--nats-url",
        help="broker URL, or a cluster's separated by commas "
        "(default: $NATS_URL or nats://127.0.0.1:4222)",
    )
    p.add_argument("--prefix", help="subject prefix (default: $ACTORMESH_PREFIX or mesh)")
    sub = p.add_subparsers(dest="command", required=True)

    w = sub.add_parser("worker", help="serve one actor type: actormesh worker pkg.mod:Class")
    w.add_argument("target", help="module:Class of an actormesh.Actor subclass")
    w.add_argument("--concurrency", type=int, default=_WORKER_DEFAULTS.concurrency)
    w.add_argument("--prefetch", type=int, default=_WORKER_DEFAULTS.prefetch)
    w.add_argument("--worker-id")
    w.add_argument("--drain-grace", type=float, default=_WORKER_DEFAULTS.drain_grace)
    w.add_argument("--heartbeat-interval", type=float, default=_WORKER_DEFAULTS.heartbeat_interval)
    w.add_argument("--ack-sync", action="store_true", help="double ack: exactly-once consume")
    w.add_argument(
        "--update-mailbox",
        action="store_true",
        help="apply changed mailbox settings to an existing stream",
    )
    w.add_argument("--supervisor-child", default="")
    w.add_argument("--metrics-port", type=int, default=None)
    w.add_argument(
        "--partition",
        type=int,
        default=None,
        help="partition to serve, for an actor whose mailbox has partitions > 1",
    )

    for name, helptext in (("tell", "send a message"), ("ask", "send and print the reply")):
        c = sub.add_parser(name, help=f"{helptext}: actormesh {name} TYPE KEY JSON")
        c.add_argument("actor_type")
        c.add_argument("key")
        c.add_argument("json", help='the message, e.g. \'{"type":"Inc","by":1}\'')
        c.add_argument("--msg-id", help="idempotency key (Nats-Msg-Id)")
        c.add_argument(
            "--priority",
            choices=("high", "normal", "low"),
            default="normal",
            help="for a mailbox with priorities (MailboxConfig(priorities=True))",
        )
        if name == "ask":
            c.add_argument("--timeout", type=float, default=5.0)
        else:
            c.add_argument(
                "--wait-if-full",
                type=float,
                default=0.0,
                metavar="SECONDS",
                help="keep retrying this long while the mailbox is full",
            )

    d = sub.add_parser("dlq", help="dead letters: list, replay, purge")
    d.add_argument("action", choices=("list", "replay", "purge"))
    d.add_argument("actor_type", nargs="?")
    d.add_argument("--seq", type=int, action="append", help="dead letter sequence (replay)")
    d.add_argument("--limit", type=int, default=50)

    u = sub.add_parser("up", help="run the embedded broker, the supervisor and the workers")
    u.add_argument("--config", default="mesh.toml")
    _tool_parsers(sub)
    from ._lifecycle_command import add_lifecycle_parsers

    add_lifecycle_parsers(sub)
    from .mcp import add_mcp_parser  # light: the `mcp` SDK loads only when it runs

    add_mcp_parser(sub)
    from .mcp._client_command import add_mcp_client_parser

    add_mcp_client_parser(sub)
    from .agents._command import add_agent_parsers  # light: the work loads when it runs

    add_agent_parsers(sub)
    return p


def _tool_parsers(sub: Any) -> None:
    g = sub.add_parser("grant", help="let a principal call tools: actormesh grant P TOOL...")
    g.add_argument("principal", help="an actor type, or an external principal (a NATS user)")
    g.add_argument("tools", nargs="+", metavar="TOOL", help="tool names or patterns (vault.*)")
    g.add_argument("--approval", action="store_true", help="each call waits for an operator")

    r = sub.add_parser("revoke", help="take tools back: actormesh revoke P [TOOL...] (all if none)")
    r.add_argument("principal")
    r.add_argument("tools", nargs="*", metavar="TOOL")

    gs = sub.add_parser("grants", help="list every principal's grants")
    gs.add_argument("--json", action="store_true", help="print the grants as JSON")

    t = sub.add_parser("tools", help="list the published tools")
    t.add_argument("--principal", help="only the tools this principal may call")
    t.add_argument("--json", action="store_true", help="print the specs with their schemas")

    tc = sub.add_parser("tool", help="call a tool: actormesh tool call NAME JSON --principal P")
    tsub = tc.add_subparsers(dest="tool_command", required=True)
    call = tsub.add_parser("call", help="call a tool and print its JSON result")
    call.add_argument("name", help="the tool, e.g. vault.deposit")
    call.add_argument("json", nargs="?", default="{}", help='arguments, e.g. \'{"key":"a"}\'')
    call.add_argument(
        "--principal",
        help="who calls (needs a grant); default: the user in the broker URL, if any",
    )
    call.add_argument("--timeout", type=float, default=30.0)

    a = sub.add_parser(
        "authz",
        help="print a nats.conf whose users may publish only to the tools they are granted",
    )
    a.add_argument("--mesh-file", default="mesh.toml", help="the mesh's children (actor types)")
    a.add_argument("--users", required=True, help="the broker's users and grants (TOML)")
    a.add_argument(
        "--from-broker",
        action="store_true",
        help="add the grants stored in the mesh's grants bucket (--nats-url) to the file's",
    )


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    settings = Settings.from_env()
    configure_logging(settings.log_level, settings.log_format)
    url = args.nats_url or settings.url
    prefix = args.prefix or settings.prefix
    try:
        if args.command == "worker":
            return _run(_worker(args, url, prefix, settings))
        if args.command in ("tell", "ask"):
            return _run(_send(args, url, prefix))
        if args.command == "dlq":
            return _run(_dlq(args, url, prefix))
        if args.command in _TOOL_COMMANDS or args.command in _LIFECYCLE_COMMANDS:
            return _run(_operator_command(args, url, prefix))
        if args.command == "mcp":
            from .mcp import run_mcp

            return _run(run_mcp(args, url, prefix))
        if args.command == "mcp-client":
            from .mcp._client_command import run_mcp_client

            return _run(run_mcp_client(args, url, prefix))
        if args.command in ("agent-host", "agent-bridge", "agents"):
            from .agents._command import run_agent_command

            return _run(run_agent_command(args, url, prefix))
        if args.command == "up":
            from ._meshfile import load
            from ._up import up

            config_path = Path(args.config)
            meshfile = load(config_path)
            if args.nats_url:
                settings = Settings.from_env({"NATS_URL": args.nats_url})
            return _run(up(meshfile, settings, config_path=config_path))
    except ActorMeshError as exc:
        print(f"actormesh: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    return 2


async def _operator_command(args: argparse.Namespace, url: str, prefix: str) -> int:
    """The tool and lifecycle commands, their modules loaded only when they run."""
    if args.command in _LIFECYCLE_COMMANDS:
        from ._lifecycle_command import run_lifecycle_command

        return await run_lifecycle_command(args, url, prefix)
    from ._tools._commands import run_tool_command

    return await run_tool_command(args, url, prefix)


def _run(coro: Coroutine[Any, Any, int]) -> int:
    try:
        import uvloop
    except ImportError:
        return asyncio.run(coro)
    return uvloop.run(coro)


async def _connect(url: str, prefix: str, name: str = "actormesh-cli") -> Any:
    from ._mesh import Mesh

    return await Mesh.connect(url, prefix=prefix, name=name, connect_wait=3.0)


async def _worker(args: argparse.Namespace, url: str, prefix: str, settings: Settings) -> int:
    from ._loader import load_actor
    from ._worker import Worker

    actor = load_actor(args.target)
    config = WorkerConfig(
        concurrency=args.concurrency,
        prefetch=args.prefetch,
        worker_id=args.worker_id,
        drain_grace=args.drain_grace,
        heartbeat_interval=args.heartbeat_interval,
        ack_sync=args.ack_sync,
        update_mailbox=args.update_mailbox,
        supervisor_child=args.supervisor_child,
        metrics_port=args.metrics_port,
        partition=args.partition,
    )
    from ._mesh import Mesh

    mesh = await Mesh.connect(url, prefix=prefix, name=f"worker-{args.target}")
    if settings.replication is not None:
        mesh.replication = settings.replication
    try:
        worker = Worker(mesh, actor, config)
        # Imported here: `actormesh tell` must not pay for OpenTelemetry or aiohttp.
        import os

        from .observability import instrument_worker

        obs = await instrument_worker(
            worker, env=os.environ, metrics_port=args.metrics_port, api_spans=True
        )
        try:
            return await worker.run()
        finally:
            await obs.close()
    finally:
        await mesh.close()


async def _send(args: argparse.Namespace, url: str, prefix: str) -> int:
    try:
        payload = json.loads(args.json)
    except json.JSONDecodeError as exc:
        print(f"actormesh: error: bad JSON message: {exc}", file=sys.stderr)
        return 1
    if not isinstance(payload, dict) or "type" not in payload:
        print(
            'actormesh: error: the message must be a JSON object with a "type", '
            'e.g. {"type":"Inc","by":1}',
            file=sys.stderr,
        )
        return 1
    mesh = await _connect(url, prefix)
    try:
        ref = mesh.ref(args.actor_type, args.key)
        data = args.json.encode()
        if args.command == "tell":
            receipt = await ref.tell(
                data,
                msg_id=args.msg_id,
                full_policy=FullPolicy(wait=args.wait_if_full),
                priority=args.priority,
            )
            dup = " (duplicate: already stored)" if receipt.duplicate else ""
            print(f"stored in {receipt.stream} as #{receipt.seq}{dup}")
            return 0
        try:
            value = await ref.ask(
                data, timeout=args.timeout, msg_id=args.msg_id, priority=args.priority
            )
        except AskTimeout as exc:
            print(
                f"actormesh: error: {exc}. Is a worker for {args.actor_type!r} running?",
                file=sys.stderr,
            )
            return 1
        except RemoteError as exc:
            print(f"actormesh: remote error: {exc}", file=sys.stderr)
            return 1
        print(json.dumps(value))
        return 0
    except (NoSuchActorType, PrioritiesOff) as exc:
        print(f"actormesh: error: {exc}", file=sys.stderr)
        return 1
    finally:
        await mesh.close()


#: Characters of a dead letter's payload `dlq list` shows (`dlq replay` sends it whole).
PREVIEW = 200


async def _dlq(args: argparse.Namespace, url: str, prefix: str) -> int:
    from ._dlq import DeadLetterNotFound, DeadLetters

    mesh = await _connect(url, prefix)
    try:
        dlq = DeadLetters(mesh)
        if args.action == "list":
            for dl in await dlq.list(args.actor_type, limit=args.limit):
                # One line per dead letter: a poison payload can be megabytes.
                preview = dl.payload if len(dl.payload) <= PREVIEW else dl.payload[:PREVIEW] + "..."
                print(
                    f"#{dl.seq} {dl.original_subject} {dl.error_type} [{dl.error_code}] "
                    f"after {dl.deliveries} deliveries: {dl.error_message} :: {preview}"
                )
            return 0
        if args.action == "replay":
            if not args.seq:
                print("actormesh: error: give --seq N (repeatable)", file=sys.stderr)
                return 1
            for seq in args.seq:
                try:
                    r = await dlq.replay(seq)
                except DeadLetterNotFound as exc:
                    print(f"actormesh: error: {exc} (`actormesh dlq list` shows them)",
                          file=sys.stderr)  # fmt: skip
                    return 1
                print(f"replayed #{seq} -> {r.stream} #{r.seq}")
            return 0
        n = await dlq.purge(args.actor_type)
        print(f"purged {n} dead letters")
        return 0
    finally:
        await mesh.close()
