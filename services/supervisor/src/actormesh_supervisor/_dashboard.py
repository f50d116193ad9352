"""The dashboard: one page (plain HTML/CSS/JS from `_static/`), a JSON API,
server-sent events, /metrics and /healthz, on aiohttp.

GET never changes state. Every POST needs a session (or a bearer token), and
session POSTs also need the CSRF token and a same-origin Origin/Referer.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import Awaitable, Callable
from importlib import resources
from typing import Any, Literal

import msgspec
from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST

from actormesh import ActorMeshError, Mesh
from actormesh.lowlevel import (
    ControlRequest,
    DeadLetterNotFound,
    DeadLetters,
    check_actor_type,
    check_key,
    list_parked,
    release_parked,
)

from ._auth import COOKIE, Auth
from ._errors import SupervisorError
from ._lifecycle import PROBES, Lifecycle
from ._metrics import metrics_registry, render
from ._search import SearchError, SearchQuery, search
from ._series import CAPACITY, SeriesStore
from ._snapshot import snapshot
from ._supervisor import Supervisor
from ._timeline import TimelineEntry

__all__ = ["Dashboard"]

log = logging.getLogger("actormesh.supervisor.dashboard")

_to_builtins = msgspec.to_builtins
_STATIC = {
    "app.js": "text/javascript", "app.css": "text/css", "lifecycle.js": "text/javascript",
    "charts.js": "text/javascript", "search.js": "text/javascript",
    "traces.js": "text/javascript", "charts.css": "text/css",
    "vendor/uPlot.iife.min.js": "text/javascript", "vendor/uPlot.min.css": "text/css",
}  # fmt: skip
# Everything the page loads comes from here; nothing inline, nothing remote.
_CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'"
)
_PUBLIC = frozenset({"/", "/healthz", "/api/session", "/api/login", "/favicon.ico", *PROBES})

_APPROVAL_STATES: dict[str, Literal["pending", "approved", "rejected", "expired"]] = {
    "pending": "pending", "approved": "approved", "rejected": "rejected", "expired": "expired",
}  # fmt: skip

_SUP: web.AppKey[Supervisor] = web.AppKey("supervisor", Supervisor)
_AUTH: web.AppKey[Auth] = web.AppKey("auth", Auth)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def _json(data: Any, status: int = 200) -> web.Response:
    return web.json_response(data, status=status, dumps=lambda d: json.dumps(d, default=str))


def _error(status: int, message: str) -> web.Response:
    return _json({"error": message}, status=status)


@web.middleware
async def _security(request: web.Request, handler: Handler) -> web.StreamResponse:
    auth = request.app[_AUTH]
    path = request.path
    public = path in _PUBLIC or path.startswith("/static/")
    if request.method in ("GET", "HEAD"):
        if not public and not auth.can_read(request):
            return _error(401, "log in to see this")
    elif auth.bearer(request):
        pass  # a token in a header is never sent by a browser on its own: no CSRF
    elif not auth.same_origin(request):
        return _error(403, "cross-origin request refused")
    elif path != "/api/login":
        session = auth.session(request)
        if session is None:
            return _error(401, "log in first")
        if not auth.csrf_ok(request, session):
            return _error(403, "missing or wrong CSRF token")
    response = await handler(request)
    headers = response.headers
    headers.setdefault("Content-Security-Policy", _CSP)
    headers.setdefault("X-Content-Type-Options", "nosniff")
    headers.setdefault("X-Frame-Options", "DENY")
    headers.setdefault("Referrer-Policy", "same-origin")
    if path.startswith("/api/"):
        headers.setdefault("Cache-Control", "no-store")
    return response


class Dashboard:
    """Serve the dashboard of one supervisor on host:port (port 0 picks one)."""

    def __init__(self, sup: Supervisor, *, host: str, port: int, auth: Auth) -> None:
        self.sup = sup
        self.host = host
        self.port = port
        self.auth = auth
        self.url = ""
        self._runner: web.AppRunner | None = None
        self._closing = asyncio.Event()
        #: The charts' last 15 minutes (bounded: see `_series.py`).
        self.series = SeriesStore()
        self._sampler: asyncio.Task[None] | None = None
        self.app = self._build()

    def _build(self) -> web.Application:
        app = web.Application(middlewares=[_security], client_max_size=64 * 1024)
        app[_SUP] = self.sup
        app[_AUTH] = self.auth
        r = app.router
        r.add_get("/", self._index)
        r.add_get("/static/{name:(?:vendor/)?[A-Za-z0-9_.-]+}", self._static)
        r.add_get("/healthz", self._healthz)
        r.add_get("/metrics", self._metrics)
        r.add_get("/api/session", self._session)
        r.add_post("/api/login", self._login)
        r.add_post("/api/logout", self._logout)
        r.add_get("/api/state", self._state)
        r.add_get("/api/events", self._events)
        r.add_get("/api/stream", self._stream)
        r.add_get("/api/dlq", self._dlq_list)
        r.add_get("/api/dlq/{seq:\\d+}", self._dlq_get)
        r.add_post("/api/dlq/{seq:\\d+}/replay", self._dlq_replay)
        r.add_post("/api/dlq/purge", self._dlq_purge)
        r.add_get("/api/parked/{actor_type}", self._parked_list)
        r.add_post("/api/parked/{actor_type}/release", self._parked_release)
        r.add_get("/api/workers/{worker}/stats", self._worker_stats)
        r.add_post("/api/workers/{worker}/restart", self._worker_restart)
        r.add_post("/api/workers/{worker}/drain", self._worker_drain)
        r.add_post("/api/groups/{group}/restart", self._group_restart)
        r.add_get("/api/series", self._series)
        r.add_get("/api/search", self._search)
        r.add_get("/api/approvals", self._approvals_list)
        r.add_post("/api/approvals/{id:[A-Za-z0-9_=.-]+}/{decision:approve|reject}", self._decide)
        Lifecycle(self.sup).add_routes(r)  # pause/resume, stop an instance, probes
        self._registry = metrics_registry(self.sup)
        return app

    async def start(self) -> str:
        # SSE handlers end on `_closing`; a short shutdown timeout covers the rest.
        self._runner = web.AppRunner(self.app, access_log=None, shutdown_timeout=2.0)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, self.port)
        await site.start()
        port = self.port
        sockets = getattr(site._server, "sockets", None) or []
        if sockets:
            port = int(sockets[0].getsockname()[1])
        host = f"[{self.host}]" if ":" in self.host else self.host
        self.port = port
        self.url = f"http://{host}:{port}/"
        self._sampler = asyncio.create_task(self._sample_loop(), name="dashboard-series")
        return self.url

    async def _sample_loop(self) -> None:
        """One chart point a second, on the second (wall clock)."""
        while True:
            await asyncio.sleep(1.0 - time.time() % 1.0)
            try:
                self.series.sample(self.sup, time.time(), time.monotonic())
            except Exception:
                log.exception("sampling the chart series failed")

    async def stop(self) -> None:
        self._closing.set()
        if self._sampler is not None:
            sampler, self._sampler = self._sampler, None
            sampler.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await sampler
        if self._runner is not None:
            runner, self._runner = self._runner, None
            try:
                async with asyncio.timeout(10.0):
                    await runner.cleanup()
            except TimeoutError:
                log.warning("the dashboard did not shut down within 10s")

    # -- page ----------------------------------------------------------------------------

    async def _index(self, request: web.Request) -> web.Response:
        return web.Response(body=_asset("index.html"), content_type="text/html", charset="utf-8")

    async def _static(self, request: web.Request) -> web.Response:
        name = request.match_info["name"]
        if name not in _STATIC:
            raise web.HTTPNotFound()
        return web.Response(
            body=_asset(name), content_type=_STATIC[name], charset="utf-8",
            headers={"Cache-Control": "no-cache"},
        )  # fmt: skip

    async def _healthz(self, request: web.Request) -> web.Response:
        sup = self.sup
        connected = sup.mesh is not None and sup.mesh.connected
        ok = connected and sup.status in ("starting", "running")
        body = {
            "status": "ok" if ok else "unavailable",
            "supervisor": "failed" if sup.failed else sup.status,
            "nats": "connected" if connected else "disconnected",
            "failed_groups": [g.spec.name for g in sup.groups.values() if g.failed],
        }
        return _json(body, status=200 if ok else 503)

    async def _metrics(self, request: web.Request) -> web.Response:
        body = render(self._registry)
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})

    # -- session -------------------------------------------------------------------------

    async def _session(self, request: web.Request) -> web.Response:
        session = self.auth.session(request)
        return _json(
            {
                "authenticated": session is not None,
                "csrf": session.csrf if session else "",
                "read_open": self.auth.can_read(request),
            }
        )

    async def _login(self, request: web.Request) -> web.Response:
        client = request.remote or "?"
        now = time.monotonic()
        if self.auth.throttled(client, now):
            return _error(429, "too many failed logins: wait a minute")
        try:
            body = await request.json()
            token = str(body.get("token", "")) if isinstance(body, dict) else ""
        except ValueError:
            token = ""
        if not token or not self.auth.token_ok(token):
            self.auth.failed_login(client, now)
            return _error(401, "wrong token")
        session = self.auth.login()
        response = _json({"authenticated": True, "csrf": session.csrf})
        response.set_cookie(
            COOKIE, session.id, httponly=True, samesite="Strict", path="/",
            secure=request.secure, max_age=int(self.auth.session_ttl),
        )  # fmt: skip
        return response

    async def _logout(self, request: web.Request) -> web.Response:
        session = self.auth.session(request)
        if session is not None:
            self.auth.logout(session)
        response = _json({"authenticated": False})
        response.del_cookie(COOKIE, path="/")
        return response

    # -- reads ---------------------------------------------------------------------------

    async def _state(self, request: web.Request) -> web.Response:
        return _json(snapshot(self.sup))

    async def _events(self, request: web.Request) -> web.Response:
        limit = _int(request.query.get("limit"), 200, 1, 1000)
        kind = request.query.get("kind", "")
        entries = [e for e in self.sup.timeline.entries if not kind or e.event.kind == kind]
        return _json([_entry(e) for e in entries[-limit:]])

    async def _stream(self, request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(
            headers={
                "Content-Type": "text/event-stream",
                "Cache-Control": "no-store",
                "X-Accel-Buffering": "no",
            }
        )
        await response.prepare(request)
        queue = self.sup.listen()
        closing = asyncio.ensure_future(self._closing.wait())
        try:
            await _send(response, "state", snapshot(self.sup))
            last = time.monotonic()
            while not self._closing.is_set():
                wait = max(0.0, 1.0 - (time.monotonic() - last))
                getter = asyncio.ensure_future(queue.get())
                done, _ = await asyncio.wait({getter, closing}, timeout=wait,
                                             return_when=asyncio.FIRST_COMPLETED)  # fmt: skip
                if getter in done:
                    entry = getter.result()
                    await _send(response, "event", _entry(entry), event_id=entry.id)
                else:
                    getter.cancel()
                if time.monotonic() - last >= 1.0:
                    await _send(response, "state", snapshot(self.sup))
                    last = time.monotonic()
        except (ConnectionResetError, ConnectionError):
            pass  # the browser went away
        finally:
            closing.cancel()
            self.sup.unlisten(queue)
        return response

    async def _dlq_list(self, request: web.Request) -> web.Response:
        dlq = self._dlq()
        actor_type = request.query.get("actor_type") or None
        limit = _int(request.query.get("limit"), 100, 1, 500)
        items = await dlq.list(actor_type, limit=limit)
        return _json([_to_builtins(d) for d in reversed(items)])

    async def _dlq_get(self, request: web.Request) -> web.Response:
        try:
            item = await self._dlq().get(int(request.match_info["seq"]))
        except ActorMeshError as exc:
            return _error(404, str(exc))
        return _json(_to_builtins(item))

    async def _series(self, request: web.Request) -> web.Response:
        """The charts' series: `?seconds=` (up to 900) and `?actor_type=` narrow them."""
        seconds = _int(request.query.get("seconds"), CAPACITY, 1, CAPACITY)
        actor_type = request.query.get("actor_type", "")
        return _json(self.series.view(seconds=seconds, actor_type=actor_type))

    async def _search(self, request: web.Request) -> web.Response:
        """Peek into a mailbox or the dead letters (read-only: see `_search.py`):
        `?where=mailbox|dlq&actor_type=...&by=key|id|seq&q=...&limit=...`."""
        q = request.query
        query = SearchQuery(
            where=q.get("where", "mailbox"),  # type: ignore[arg-type]  # checked in search
            by=q.get("by", "key"),  # type: ignore[arg-type]
            value=q.get("q", ""),
            actor_type=q.get("actor_type", ""),
            limit=_int(q.get("limit"), 20, 1, 100),
        )
        try:
            result = await search(self._mesh().js, self._mesh().subjects, query)
        except SearchError as exc:
            return _error(exc.status, exc.message)
        return _json(_to_builtins(result))

    # -- actions -------------------------------------------------------------------------

    async def _dlq_replay(self, request: web.Request) -> web.Response:
        seq = int(request.match_info["seq"])
        try:
            receipt = await self._dlq().replay(seq)
        except DeadLetterNotFound as exc:
            return _error(404, f"cannot replay dead letter {seq}: {exc}")
        except ActorMeshError as exc:
            return _error(409, str(exc))
        except Exception as exc:
            if isinstance(exc, asyncio.CancelledError):
                raise
            return _error(404, f"cannot replay dead letter {seq}: {exc!r}")
        log.info("dead letter %d replayed to %s #%d", seq, receipt.stream, receipt.seq)
        return _json({"replayed": seq, "stream": receipt.stream, "seq": receipt.seq})

    async def _dlq_purge(self, request: web.Request) -> web.Response:
        body = await _body(request)
        actor_type = str(body.get("actor_type") or "") or None
        if actor_type is None and body.get("all") is not True:
            return _error(400, 'give {"actor_type": ...} or {"all": true}')
        purged = await self._dlq().purge(actor_type)
        log.info("purged %d dead letters (%s)", purged, actor_type or "all types")
        return _json({"purged": purged, "actor_type": actor_type})

    async def _parked_list(self, request: web.Request) -> web.Response:
        """The parked keys of an actor type, each with its waiting messages."""
        actor_type = request.match_info["actor_type"]
        try:
            check_actor_type(actor_type)
        except ActorMeshError as exc:
            return _error(400, str(exc))
        keys = await list_parked(self._mesh(), actor_type)
        return _json({"actor_type": actor_type, "keys": keys})

    async def _parked_release(self, request: web.Request) -> web.Response:
        """Release one parked key (`{"key": ...}`) or all of a type's (`{"all": true}`)."""
        actor_type = request.match_info["actor_type"]
        body = await _body(request)
        key = str(body.get("key") or "") or None
        if key is None and body.get("all") is not True:
            return _error(400, 'give {"key": ...} or {"all": true}')
        try:
            check_actor_type(actor_type)
            if key is not None:
                check_key(key)
        except ActorMeshError as exc:
            return _error(400, str(exc))
        moved = await release_parked(self._mesh(), actor_type, key)
        log.info("released %s/%s: %d messages back", actor_type, key or "*", moved)
        return _json({"actor_type": actor_type, "key": key, "released": moved})

    async def _worker_stats(self, request: web.Request) -> web.Response:
        worker = request.match_info["worker"]
        try:
            reply = await self.sup.control(worker, ControlRequest(op="stats"))
        except SupervisorError as exc:
            return _error(504, str(exc))
        return _json(_to_builtins(reply))

    async def _worker_restart(self, request: web.Request) -> web.Response:
        worker = request.match_info["worker"]
        try:
            self.sup.restart_worker(worker)
        except SupervisorError as exc:
            return _error(404 if "no supervised" in str(exc) else 409, str(exc))
        log.info("operator restart of %s queued", worker)
        return _json({"queued": "restart", "worker": worker}, status=202)

    async def _worker_drain(self, request: web.Request) -> web.Response:
        worker = request.match_info["worker"]
        try:
            reply = await self.sup.drain_worker(worker)
        except SupervisorError as exc:
            return _error(404 if "no supervised" in str(exc) else 504, str(exc))
        if not reply.ok:
            return _error(409, reply.error or "refused")
        return _json({"queued": "drain", "worker": worker}, status=202)

    async def _group_restart(self, request: web.Request) -> web.Response:
        group = request.match_info["group"]
        try:
            self.sup.restart_group(group)
        except SupervisorError as exc:
            return _error(404 if "no group" in str(exc) else 409, str(exc))
        log.info("operator restart of group %s queued", group)
        return _json({"queued": "restart", "group": group}, status=202)

    # -- approvals ----------------------------------------------------------------------

    async def _approvals_list(self, request: web.Request) -> web.Response:
        """Tool calls waiting for an operator (`?state=all` for decided ones too)."""
        state = request.query.get("state", "pending")
        if state != "all" and state not in _APPROVAL_STATES:
            return _error(400, "state is one of pending, approved, rejected, expired, all")
        approvals = self._mesh().tools.approvals
        found = await approvals.list(state=_APPROVAL_STATES.get(state))
        now = time.time()
        return _json([_approval(a, now) for a in reversed(found)])

    async def _decide(self, request: web.Request) -> web.Response:
        """Approve or reject one pending call (`{"reason": ...}` optional)."""
        approval_id = request.match_info["id"]
        decision = request.match_info["decision"]
        reason = str((await _body(request)).get("reason") or "")[:500]
        # Who decided, as far as the dashboard knows: the token is shared, so the
        # channel and the client's address are all there is.
        channel = "API token" if self.auth.bearer(request) else "dashboard"
        by = f"operator@{request.remote or 'unknown'} ({channel})"
        approvals = self._mesh().tools.approvals
        decide = approvals.approve if decision == "approve" else approvals.reject
        try:
            decided = await decide(approval_id, by=by, reason=reason)
        except ActorMeshError as exc:  # an ApprovalError: unknown (404) or decided (409)
            return _error(409 if getattr(exc, "state", "") else 404, exc.message)
        log.info("approval %s (%s) %s by %s", approval_id, decided.tool, decided.state, by)
        return _json(_approval(decided, time.time()))

    def _dlq(self) -> DeadLetters:
        return DeadLetters(self._mesh())

    def _mesh(self) -> Mesh:
        if self.sup.mesh is None:
            raise web.HTTPServiceUnavailable(text="not connected to NATS yet")
        return self.sup.mesh


def _asset(name: str) -> bytes:
    return resources.files(__package__).joinpath("_static", name).read_bytes()


def _approval(approval: Any, now: float) -> dict[str, Any]:
    """An `Approval` as the page shows it: its state counting expiry, the time left."""
    data: dict[str, Any] = _to_builtins(approval)
    data["state"] = approval.effective_state(now)
    data["left"] = None if approval.deadline is None else max(0.0, approval.deadline - now)
    return data


def _entry(entry: TimelineEntry) -> dict[str, Any]:
    data: dict[str, Any] = _to_builtins(entry.event)
    data["id"] = entry.id
    return data


async def _send(
    response: web.StreamResponse, event: str, data: Any, *, event_id: int | None = None
) -> None:
    head = f"id: {event_id}\n" if event_id is not None else ""
    payload = json.dumps(data, default=str, separators=(",", ":"))
    await response.write(f"{head}event: {event}\ndata: {payload}\n\n".encode())


async def _body(request: web.Request) -> dict[str, Any]:
    if not request.can_read_body:
        return {}
    with contextlib.suppress(ValueError):
        body = await request.json()
        if isinstance(body, dict):
            return body
    return {}


def _int(raw: str | None, default: int, low: int, high: int) -> int:
    try:
        value = int(raw) if raw is not None else default
    except ValueError:
        value = default
    return max(low, min(high, value))
