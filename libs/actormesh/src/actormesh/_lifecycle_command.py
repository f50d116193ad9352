"""The lifecycle commands: `actormesh pause`, `resume`, `lifecycle`, `stop-instance`,
`instances`, `drain`.

They talk to the broker (JetStream consumer pause) and to the workers' control
subjects, so they work with or without a supervisor. One difference: `drain`
asked of a worker directly is a graceful stop, and a supervisor restarts a
`permanent` child after it; `--dashboard URL` asks the supervisor instead
(`POST /api/workers/{w}/drain`), which drains it for good.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import msgspec

from ._errors import ActorMeshError

__all__ = ["LIFECYCLE_COMMANDS", "add_lifecycle_parsers", "run_lifecycle_command"]

LIFECYCLE_COMMANDS = ("pause", "resume", "lifecycle", "stop-instance", "instances", "drain")


def add_lifecycle_parsers(sub: Any) -> None:
    p = sub.add_parser(
        "pause", help="pause an actor type: its messages wait in the mailbox (actormesh pause T)"
    )
    p.add_argument("actor_type")
    p.add_argument(
        "--for", dest="seconds", type=float, default=None, metavar="SECONDS",
        help="resume by itself after this long (default: until `actormesh resume`)",
    )  # fmt: skip
    r = sub.add_parser("resume", help="resume a paused actor type: its waiting messages flow")
    r.add_argument("actor_type")
    lc = sub.add_parser("lifecycle", help="an actor type's pause state and workers")
    lc.add_argument("actor_type")
    lc.add_argument("--json", action="store_true")
    s = sub.add_parser(
        "stop-instance",
        help="passivate one actor instance now (its state is kept): actormesh stop-instance T KEY",
    )
    s.add_argument("actor_type")
    s.add_argument("key")
    i = sub.add_parser("instances", help="a worker's instances: active or passivated")
    i.add_argument("worker")
    i.add_argument("--type", dest="actor_type", default="", help="its actor type, if known")
    d = sub.add_parser("drain", help="drain a worker: finish its messages, then stop")
    d.add_argument("worker")
    d.add_argument("--grace", type=float, default=None, help="seconds to finish in-flight work")
    d.add_argument(
        "--type", metavar="ACTOR_TYPE",
        help="the worker's actor type (default: the start of its id): a broker with "
        "users lets it answer only under its type",
    )  # fmt: skip
    d.add_argument(
        "--dashboard", metavar="URL",
        help="ask this supervisor instead (drains for good: not restarted)",
    )  # fmt: skip
    d.add_argument(
        "--token-file", type=Path, metavar="PATH",
        help="the dashboard token, for --dashboard (e.g. .actormesh/dashboard-token)",
    )  # fmt: skip


async def run_lifecycle_command(args: argparse.Namespace, url: str, prefix: str) -> int:
    if args.command == "drain" and args.dashboard:
        return await asyncio.to_thread(_drain_via_dashboard, args)
    from ._mesh import Mesh

    mesh = await Mesh.connect(url, prefix=prefix, name="actormesh-cli", connect_wait=3.0)
    try:
        return await _run(mesh, args)
    finally:
        await mesh.close()


async def _run(mesh: Any, args: argparse.Namespace) -> int:
    from . import _lifecycle as lc

    cmd = args.command
    if cmd in ("pause", "resume"):
        if cmd == "pause":
            state = await lc.pause_actor_type(mesh, args.actor_type, seconds=args.seconds)
        else:
            state = await lc.resume_actor_type(mesh, args.actor_type)
        print(_pause_line(state))
        return 0
    if cmd == "lifecycle":
        return await _lifecycle(mesh, args)
    if cmd == "stop-instance":
        replies = await lc.passivate_instance(mesh, args.actor_type, args.key)
        stopped = [w for w, r in replies.items() if r.ok and r.instances]
        for worker, reply in replies.items():
            if not reply.ok:
                print(f"actormesh: {worker}: {reply.error}", file=sys.stderr)
        if stopped:
            print(f"{args.actor_type}/{args.key} passivated in {', '.join(stopped)}: "
                  "the next message to it activates it again")  # fmt: skip
            return 0
        if any(not r.ok for r in replies.values()):
            return 1
        print(f"{args.actor_type}/{args.key} is not active in any worker (nothing to stop)")
        return 0
    if cmd == "instances":
        reply = await lc.list_instances(mesh, args.worker, actor_type=args.actor_type)
        if not reply.ok:
            print(f"actormesh: error: {reply.error}", file=sys.stderr)
            return 1
        for inst in reply.instances:
            print(f"{inst.key}\t{inst.state}")
        return 0
    return await _drain(mesh, args)


def _pause_line(state: Any) -> str:
    if not state.paused:
        return f"{state.actor_type}: running (not paused)"
    until = "until resumed"
    if state.until is not None:
        until = "until " + time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(state.until))
    return f"{state.actor_type}: paused {until}; its messages wait in the mailbox"


async def _lifecycle(mesh: Any, args: argparse.Namespace) -> int:
    from . import _lifecycle as lc
    from ._wire import Heartbeat

    try:
        state = await lc.pause_state(mesh, args.actor_type)
    except lc.NotPausable:
        state = lc.PauseState(actor_type=args.actor_type, paused=False)
    beats: dict[str, Heartbeat] = {}
    decode = msgspec.json.Decoder(Heartbeat).decode

    async def on_hb(msg: Any) -> None:
        try:
            hb = decode(msg.data)
        except (msgspec.DecodeError, msgspec.ValidationError):
            return
        beats[hb.worker] = hb

    sub = await mesh.nc.subscribe(mesh.subjects.heartbeat(args.actor_type, "*"), cb=on_hb)
    await asyncio.sleep(2.0)  # one heartbeat interval and some
    await sub.unsubscribe()
    if args.json:
        out = msgspec.to_builtins(state)
        out["workers"] = {w: _worker_state(hb) for w, hb in sorted(beats.items())}
        print(json.dumps(out))
        return 0
    print(_pause_line(state))
    for worker, hb in sorted(beats.items()):
        s = _worker_state(hb)
        print(f"  {worker}\t{s['lifecycle']}\tinstances {s['instances']}, "
              f"passivated {s['passivated']}, in flight {s['in_flight']}")  # fmt: skip
    if not beats:
        print("  (no worker heartbeat heard in 2s)")
    return 0


def _worker_state(hb: Any) -> dict[str, Any]:
    paused = hb.paused and hb.status == "running"
    return {
        "lifecycle": "paused" if paused else hb.status,
        "instances": hb.instances,
        "passivated": hb.passivated,
        "in_flight": hb.in_flight,
    }


async def _drain(mesh: Any, args: argparse.Namespace) -> int:
    from ._lifecycle import drain_worker

    reply = await drain_worker(mesh, args.worker, grace=args.grace, actor_type=args.type or "")
    if not reply.ok:
        print(f"actormesh: error: {reply.error}", file=sys.stderr)
        return 1
    print(f"{args.worker} draining: it finishes its messages and stops "
          "(a supervisor restarts a permanent child; --dashboard drains for good)")  # fmt: skip
    return 0


def _drain_via_dashboard(args: argparse.Namespace) -> int:
    if args.token_file is None:
        raise ActorMeshError("--dashboard needs --token-file (the dashboard token)")
    token = args.token_file.read_text(encoding="utf-8").strip()
    base = args.dashboard.rstrip("/")
    if not base.startswith(("http://", "https://")):
        raise ActorMeshError(f"--dashboard wants an http(s) URL, not {args.dashboard!r}")
    req = urllib.request.Request(  # noqa: S310 (the scheme is checked just above)
        f"{base}/api/workers/{args.worker}/drain",
        method="POST",
        headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
        data=b"{}",
    )
    try:
        with urllib.request.urlopen(req, timeout=10.0) as resp:  # noqa: S310
            body = json.loads(resp.read() or b"{}")
    except urllib.error.HTTPError as exc:
        detail = exc.read().decode(errors="replace")
        print(f"actormesh: error: {exc.code} {detail}", file=sys.stderr)
        return 1
    print(f"{body.get('worker', args.worker)}: drain queued by the supervisor")
    return 0
