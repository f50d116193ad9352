"""Lifecycle control over HTTP: pause and resume an actor type, stop (passivate)
one actor instance, list a worker's instances; and the probes `/alive` and
`/ready`.

The work is the library's (`actormesh.lowlevel`: JetStream consumer pause, the
worker's `passivate` control command); this module turns it into routes, checks
the names, and records each action on the timeline. Draining a worker is
`/api/workers/{w}/drain` in `_dashboard`. The routes sit behind the dashboard's
security middleware like every other: a POST needs a session with its CSRF token
and a same-origin Origin, or the bearer token.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

import msgspec
from aiohttp import web

from actormesh import ActorMeshError, Event, Mesh, NoSuchActorType
from actormesh.lowlevel import (
    NotPausable,
    WorkerUnreachable,
    check_actor_type,
    check_key,
    list_instances,
    passivate_instance,
    pause_actor_type,
    pause_state,
    resume_actor_type,
)

from ._supervisor import Supervisor

__all__ = ["PROBES", "Lifecycle"]

log = logging.getLogger("actormesh.supervisor.lifecycle")

#: Open without login, like /healthz: an orchestrator's probes carry no token.
PROBES = frozenset({"/alive", "/ready"})
#: How long /ready waits for JetStream to answer.
READY_TIMEOUT = 2.0

_to_builtins = msgspec.to_builtins
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def _json(data: Any, status: int = 200) -> web.Response:
    return web.json_response(data, status=status, dumps=lambda d: json.dumps(d, default=str))


def _error(status: int, message: str) -> web.Response:
    return _json({"error": message}, status=status)


class Lifecycle:
    """The lifecycle routes and probes of one supervisor's dashboard."""

    def __init__(self, sup: Supervisor) -> None:
        self.sup = sup

    def add_routes(self, router: web.UrlDispatcher) -> None:
        r = router
        r.add_get("/alive", self._alive)
        r.add_get("/ready", self._ready)
        r.add_get("/api/types/{actor_type}/lifecycle", self._type_lifecycle)
        r.add_post("/api/types/{actor_type}/pause", self._pause)
        r.add_post("/api/types/{actor_type}/resume", self._resume)
        r.add_post("/api/types/{actor_type}/instances/{key}/stop", self._stop_instance)
        r.add_get("/api/workers/{worker}/instances", self._instances)

    # -- probes -----------------------------------------------------------------------

    async def _alive(self, request: web.Request) -> web.Response:
        """The process is up and its event loop answers: nothing else is checked."""
        return _json({"alive": True, "uptime": round(time.time() - self.sup.started_at, 1)})

    async def _ready(self, request: web.Request) -> web.Response:
        """Connected to NATS, JetStream answers, and the supervisor has started its
        groups (adopted or started every worker): 200, else 503 with the reasons."""
        sup = self.sup
        checks: dict[str, bool] = {
            "nats": sup.mesh is not None and sup.mesh.connected,
            "jetstream": False,
            "groups_started": sup.status == "running",
        }
        if checks["nats"] and sup.mesh is not None:
            checks["jetstream"] = await _jetstream_ok(sup.mesh)
        ready = all(checks.values())
        body = {
            "ready": ready,
            "checks": checks,
            "supervisor": "failed" if sup.failed else sup.status,
        }
        return _json(body, status=200 if ready else 503)

    # -- actor types ------------------------------------------------------------------

    async def _type_lifecycle(self, request: web.Request) -> web.Response:
        """The type's pause state (from the server) and its workers' lifecycle."""
        actor_type = request.match_info["actor_type"]
        mesh = self._mesh()
        try:
            check_actor_type(actor_type)
            state = await pause_state(mesh, actor_type)
        except NoSuchActorType as exc:
            return _error(404, str(exc))
        except NotPausable:
            return _json({"actor_type": actor_type, "paused": False, "consumers": {},
                          "until": None, "workers": self._workers(actor_type)})  # fmt: skip
        except ActorMeshError as exc:
            return _error(400, str(exc))
        body: dict[str, Any] = _to_builtins(state)
        body["workers"] = self._workers(actor_type)
        return _json(body)

    async def _pause(self, request: web.Request) -> web.Response:
        """Pause the type (`{"seconds": N}` for a pause that ends by itself)."""
        actor_type = request.match_info["actor_type"]
        body = await _body(request)
        seconds = body.get("seconds")
        if seconds is not None and (
            isinstance(seconds, bool) or not isinstance(seconds, (int, float)) or seconds <= 0
        ):
            return _error(400, '"seconds" is a positive number (or leave it out: until resumed)')
        return await self._act(
            request, actor_type, "paused",
            lambda mesh: pause_actor_type(
                mesh, actor_type, seconds=float(seconds) if seconds is not None else None
            ),
        )  # fmt: skip

    async def _resume(self, request: web.Request) -> web.Response:
        actor_type = request.match_info["actor_type"]
        return await self._act(
            request, actor_type, "resumed", lambda mesh: resume_actor_type(mesh, actor_type)
        )

    async def _act(
        self,
        request: web.Request,
        actor_type: str,
        kind: str,
        action: Callable[[Mesh], Awaitable[Any]],
    ) -> web.Response:
        mesh = self._mesh()
        try:
            check_actor_type(actor_type)
            state = await action(mesh)
        except NoSuchActorType as exc:
            return _error(404, str(exc))
        except NotPausable as exc:
            return _error(409, str(exc))
        except ActorMeshError as exc:
            return _error(400, str(exc))
        detail = {"until": str(state.until)} if state.until else {}
        await self._event(kind, actor_type, request, detail=detail)
        log.info("actor type %s %s by %s", actor_type, kind, _who(request))
        return _json(_to_builtins(state))

    # -- instances --------------------------------------------------------------------

    async def _stop_instance(self, request: web.Request) -> web.Response:
        """Passivate one instance now; the next message to its key activates it."""
        actor_type = request.match_info["actor_type"]
        key = request.match_info["key"]
        mesh = self._mesh()
        try:
            check_actor_type(actor_type)
            check_key(key)
        except ActorMeshError as exc:
            return _error(400, str(exc))
        workers = self._workers(actor_type)
        names = [w["worker"] for w in workers if w["status"] in ("running", "starting")]
        if not names:
            return _error(404, f"no running worker of {actor_type!r}")
        replies = await passivate_instance(mesh, actor_type, key, workers=names)
        stopped = [w for w, r in replies.items() if r.ok and r.instances]
        refused = {w: r.error for w, r in replies.items() if not r.ok}
        if stopped:
            await self._event("passivated", actor_type, request, detail={"key": key,
                              "worker": stopped[0]})  # fmt: skip
        status = 200 if stopped or not refused else 409
        body = {
            "actor_type": actor_type,
            "key": key,
            "state": "passivated" if stopped else "not_active",
            "workers": stopped,
            "refused": refused,
        }
        return _json(body, status=status)

    async def _instances(self, request: web.Request) -> web.Response:
        worker = request.match_info["worker"]
        view = self.sup.views.get(worker)
        actor_type = view.hb.actor_type if view is not None else ""
        try:
            reply = await list_instances(self._mesh(), worker, actor_type=actor_type)
        except WorkerUnreachable as exc:
            return _error(504, str(exc))
        if not reply.ok:
            return _error(409, reply.error)
        return _json({"worker": worker, "instances": _to_builtins(reply.instances)})

    # -- helpers ----------------------------------------------------------------------

    def _workers(self, actor_type: str) -> list[dict[str, Any]]:
        """The type's workers as their last heartbeats describe them."""
        now = time.monotonic()
        out = []
        for worker_id, view in sorted(self.sup.views.items()):
            hb = view.hb
            if hb.actor_type != actor_type or view.age(now) > self.sup.dead_after:
                continue
            out.append({"worker": worker_id, "status": hb.status, "paused": hb.paused,
                        "lifecycle": lifecycle_of(hb.status, hb.paused),
                        "instances": hb.instances, "passivated": hb.passivated})  # fmt: skip
        return out

    async def _event(
        self, kind: str, actor_type: str, request: web.Request, *, detail: dict[str, str]
    ) -> None:
        sup = self.sup
        evt = Event(
            kind=kind,
            at=time.time(),
            source=f"supervisor:{sup.sup.name}",
            actor_type=actor_type,
            reason=f"operator ({_who(request)})",
            detail={**detail, "operator": "1"},
        )
        await sup.timeline.publish(evt)

    def _mesh(self) -> Mesh:
        if self.sup.mesh is None:
            raise web.HTTPServiceUnavailable(text="not connected to NATS yet")
        return self.sup.mesh


def lifecycle_of(status: str, paused: bool) -> str:
    """A worker's lifecycle in one word: starting, running, paused, draining, stopped,
    escalated (paused is a running worker whose mailbox consumer is paused)."""
    return "paused" if paused and status == "running" else status


def _who(request: web.Request) -> str:
    channel = "API token" if request.headers.get("Authorization") else "dashboard"
    return f"{request.remote or 'unknown'} via {channel}"


async def _jetstream_ok(mesh: Mesh) -> bool:
    try:
        async with asyncio.timeout(READY_TIMEOUT):
            await mesh.js.account_info()
    except asyncio.CancelledError:
        raise
    except Exception as exc:
        log.debug("readiness: JetStream did not answer: %r", exc)
        return False
    return True


async def _body(request: web.Request) -> dict[str, Any]:
    if not request.can_read_body:
        return {}
    try:
        body = await request.json()
    except ValueError:
        return {}
    return body if isinstance(body, dict) else {}
