"""The tool commands of `actormesh`: grant, revoke, grants, tools, tool call, authz.

Each prints its result on stdout and, on failure, one line on stderr naming the
error's code and what to do, and returns the exit code (0 ok, 1 error).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import msgspec

from .._errors import (
    ToolArgumentsInvalid,
    ToolError,
    ToolFailed,
    ToolNotFound,
    ToolTimeout,
)

if TYPE_CHECKING:
    from .._mesh import Mesh
    from ._declare import ToolSpec
    from ._grants import Grant

__all__ = ["run_tool_command"]

#: What to do about each typed outcome, after the error's own message.
_HINTS: dict[type[ToolError], str] = {
    ToolNotFound: "`actormesh tools` lists the published ones",
    ToolArgumentsInvalid: "`actormesh tools --json` shows its input schema",
    ToolTimeout: "is a worker for its actor type running? (or raise --timeout)",
    ToolFailed: "the worker's log has the traceback",
}


def _fail(message: str) -> int:
    print(f"actormesh: error: {message}", file=sys.stderr)
    return 1


async def run_tool_command(args: argparse.Namespace, url: str, prefix: str) -> int:
    if args.command == "authz":
        return await _authz(args, url)
    if args.command == "tool":
        try:
            call_args = json.loads(args.json)
        except json.JSONDecodeError as exc:
            return _fail(f"bad JSON arguments: {exc}")
        if not isinstance(call_args, dict):
            return _fail('the arguments must be a JSON object, e.g. \'{"key":"a1","amount":5}\'')
        # With broker users, a client's principal is its NATS user (see `_authz`).
        args.principal = args.principal or urlsplit(url.split(",")[0]).username
        if not args.principal:
            return _fail("give --principal NAME (who calls; it needs a grant)")
    from .._mesh import Mesh

    mesh = await Mesh.connect(url, prefix=prefix, name="actormesh-cli", connect_wait=3.0)
    try:
        if args.command == "tool":
            return await _call(mesh, args, call_args)
        if args.command == "tools":
            return await _tools(mesh, args)
        return await _grants(mesh, args)
    finally:
        await mesh.close()


async def _call(mesh: Mesh, args: argparse.Namespace, call_args: dict[str, Any]) -> int:
    try:
        result = await mesh.tools.call(
            args.name, call_args, principal=args.principal, timeout=args.timeout
        )
    except ToolError as exc:
        hint = next((h for t, h in _HINTS.items() if isinstance(exc, t)), "")
        return _fail(f"{exc.code}: {exc}" + (f" ({hint})" if hint else ""))
    print(json.dumps(result))
    return 0


async def _tools(mesh: Mesh, args: argparse.Namespace) -> int:
    if args.principal:
        specs = await mesh.tools.list_available_tools(args.principal)
    else:
        specs = await mesh.tools.list_tools()
    if args.json:
        print(msgspec.json.encode(specs).decode())
        return 0
    for spec in specs:
        print(_tool_line(spec))
    return 0


def _tool_line(spec: ToolSpec) -> str:
    summary = spec.description.strip().splitlines()[0] if spec.description.strip() else ""
    flags = " [needs approval]" if spec.needs_approval else ""
    return f"{spec.name}{flags}: {summary}"


async def _grants(mesh: Mesh, args: argparse.Namespace) -> int:
    grants = mesh.tools.grants
    if args.command == "grants":
        every = await grants.all()
        if args.json:
            print(msgspec.json.encode(every).decode())
        for g in every if not args.json else ():
            print(_grant_line(g))
        return 0
    if args.command == "grant":
        grant = await grants.grant(args.principal, *args.tools, approval=args.approval)
        published = {s.name for s in await mesh.tools.list_tools()}
        from ._grants import matches

        for pattern in args.tools:
            if not any(matches([pattern], name) for name in published):
                print(
                    f"actormesh: note: {pattern!r} matches no published tool yet "
                    "(a tool appears once a worker serving its actor type has started)",
                    file=sys.stderr,
                )
    else:
        grant = await grants.revoke(args.principal, *args.tools)
    print(_grant_line(grant))
    return 0


def _grant_line(grant: Grant) -> str:
    tools = ", ".join(grant.tools) or "(nothing)"
    needs = f" (approval: {', '.join(grant.approval)})" if grant.approval else ""
    return f"{grant.principal}: {tools}{needs}"


async def _authz(args: argparse.Namespace, url: str) -> int:
    from ._authz import generate, mesh_facts

    mesh_file, users_file = Path(args.mesh_file), Path(args.users)
    stored: list[Grant] = []
    if args.from_broker:
        from .._mesh import Mesh

        prefix = mesh_facts(mesh_file).prefix
        mesh = await Mesh.connect(url, prefix=prefix, name="actormesh-authz", connect_wait=3.0)
        try:
            stored = await mesh.tools.grants.all()
        finally:
            await mesh.close()
    result = generate(mesh_file, users_file, stored=stored)
    for warning in result.warnings:
        print(f"actormesh: warning: {warning}", file=sys.stderr)
    sys.stdout.write(result.text)
    return 0
