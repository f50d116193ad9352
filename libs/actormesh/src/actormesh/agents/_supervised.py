"""Agent hosts and bridges as supervised children (`[[agents]]`, `[agent_bridge]`).

A child of the supervisor is known by its heartbeats, drained by its control
subject and listed in the dashboard: that is what a worker does. An agent host
serves a micro service, not an actor, and a bridge may serve no agent yet, so
under a supervisor each also runs a small keyless actor of its own
(`agent_host-<name>`, `agent_bridge`: an underscore, which agent names never
have, so no bridged agent's `agent-<name>` type can collide), whose worker
carries the heartbeats and the drain, and whose one handler says what the
process serves. The process ends when that worker is drained (SIGTERM or the
supervisor's stop), and fails (exit 1, a restart) if its own work ends first.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import Callable, Coroutine
from typing import TYPE_CHECKING, Any

import msgspec

from .. import Actor, Message, Worker, WorkerConfig

if TYPE_CHECKING:
    from .. import Mesh

__all__ = ["Served", "WhatServed", "gateway_class", "run_supervised", "supervisor_child"]


class WhatServed(Message):
    """What this agent process serves."""


class Served(msgspec.Struct, frozen=True, kw_only=True):
    #: "host" or "bridge".
    role: str
    #: The host's prompt subject, or the bridge's tools.
    serves: list[str]


def supervisor_child(given: str) -> str:
    """The child name (`--supervisor-child`, or the environment a `command` child gets)."""
    return given or os.environ.get("ACTORMESH_SUPERVISOR_CHILD", "")


def gateway_class(actor_type: str, role: str, serves: Callable[[], list[str]]) -> type[Actor]:
    """The keyless actor type whose worker stands for this process."""

    async def what_served(self: Actor, msg: WhatServed) -> Served:
        return Served(role=role, serves=serves())

    what_served.__annotations__ = {"msg": WhatServed, "return": Served}
    name = "Gateway_" + actor_type.replace("-", "_")
    return type(
        name, (Actor,), {"actor_type": actor_type, "keyless": True, "what_served": what_served}
    )


async def run_supervised(
    mesh: Mesh,
    gateway: type[Actor],
    work: Coroutine[Any, Any, object],
    *,
    child: str,
    worker_id: str | None,
    heartbeat_interval: float | None,
) -> int:
    """Run `work` beside the gateway's worker until the worker is drained (0), or
    until `work` ends by itself (1: the supervisor restarts the process)."""
    fields: dict[str, Any] = {
        "worker_id": worker_id or os.environ.get("ACTORMESH_WORKER_ID") or None,
        "supervisor_child": child,
    }
    if heartbeat_interval is not None:
        fields["heartbeat_interval"] = heartbeat_interval
    worker = Worker(mesh, gateway, WorkerConfig(**fields))
    running = asyncio.ensure_future(worker.run())
    serving = asyncio.ensure_future(work)
    await asyncio.wait({serving, running}, return_when=asyncio.FIRST_COMPLETED)
    if running.done():
        serving.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await serving
        return running.result()
    worker.request_drain(grace=0.0)
    await running
    serving.result()  # its error, if it failed
    return 1
