"""The docker backend against a stub of the Docker Engine API on a unix socket.

No Docker engine runs here, so a small aiohttp server speaks the endpoints the
backend uses (GET /containers/json with a label filter, POST .../restart,
/start, /stop, /kill). Its "containers" are real worker processes, so the whole
loop runs: a container's worker dies, heartbeats stop, the supervisor asks the
engine to restart the container, the stub starts a new worker, heartbeats resume.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import sys
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from aiohttp import web

from actormesh_supervisor import DockerClient, DockerError, Supervisor
from tests.actors_supervisor import (
    EventLog,
    kill_quietly,
    meshfile,
    options,
    wait_until,
    worker_env,
)

pytestmark = pytest.mark.integration


@dataclass
class _Container:
    id: str
    name: str
    labels: dict[str, str]
    argv: list[str]
    env: dict[str, str]
    proc: asyncio.subprocess.Process | None = None

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.returncode is None

    async def start(self) -> None:
        self.proc = await asyncio.create_subprocess_exec(
            *self.argv, env=self.env, start_new_session=True
        )

    async def stop(self, grace: float) -> None:
        if not self.running:
            return
        assert self.proc is not None
        self.proc.send_signal(signal.SIGTERM)
        try:
            async with asyncio.timeout(grace):
                await self.proc.wait()
        except TimeoutError:
            self.proc.kill()
            await self.proc.wait()


@dataclass
class EngineStub:
    containers: dict[str, _Container] = field(default_factory=dict)
    calls: list[tuple[str, str, dict[str, str]]] = field(default_factory=list)

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_get("/containers/json", self.list)
        app.router.add_post("/containers/{id}/{op}", self.op)
        return app

    async def list(self, request: web.Request) -> web.Response:
        self.calls.append(("GET", request.path, dict(request.query)))
        wanted = json.loads(request.query.get("filters", "{}")).get("label", [])
        out = []
        for c in self.containers.values():
            if all(c.labels.get(w.split("=", 1)[0]) == w.split("=", 1)[1] for w in wanted):
                out.append({"Id": c.id, "Names": [f"/{c.name}"], "Labels": c.labels,
                            "State": "running" if c.running else "exited"})  # fmt: skip
        return web.json_response(out)

    async def op(self, request: web.Request) -> web.Response:
        self.calls.append(("POST", request.path, dict(request.query)))
        c = self.containers.get(request.match_info["id"])
        if c is None:
            return web.json_response({"message": "No such container"}, status=404)
        op = request.match_info["op"]
        grace = float(request.query.get("t", "10"))
        if op == "restart":
            await c.stop(grace)
            await c.start()
        elif op == "start":
            if c.running:
                return web.Response(status=304)
            await c.start()
        elif op == "stop":
            if not c.running:
                return web.Response(status=304)
            await c.stop(grace)
        elif op == "kill":
            if not c.running:
                return web.json_response({"message": "not running"}, status=409)
            await c.stop(0.0)
        else:
            return web.json_response({"message": f"unknown op {op}"}, status=404)
        return web.Response(status=204)


async def test_docker_backend_restarts_a_dead_container(
    nats_url: str, mesh_prefix: str, tmp_path: Path
) -> None:
    ledger = tmp_path / "ledger.txt"
    engine = EngineStub()
    for n in ("a", "b"):
        name = f"ledger-{n}"
        engine.containers[f"c0ffee{n}"] = _Container(
            id=f"c0ffee{n}", name=name,
            labels={"actormesh.child": "ledger", "actormesh.prefix": mesh_prefix},
            argv=[sys.executable, "-m", "actormesh", "--nats-url", nats_url, "--prefix",
                  mesh_prefix, "worker", "tests.actors_supervisor:Ledger", "--worker-id", name,
                  "--supervisor-child", "ledger", "--heartbeat-interval", "0.25"],
            env=worker_env(LEDGER_PATH=str(ledger)),
        )  # fmt: skip
    # A container of another mesh, with the same child name: not ours.
    engine.containers["f00"] = _Container(
        id="f00", name="other", labels={"actormesh.child": "ledger", "actormesh.prefix": "zz"},
        argv=["true"], env={},
    )  # fmt: skip
    sock = tmp_path / "docker.sock"
    runner = web.AppRunner(engine.app())
    await runner.setup()
    await web.UnixSite(runner, str(sock)).start()
    for c in list(engine.containers.values())[:2]:
        await c.start()
    group = {"name": "g", "backoff_min": 0.01,
             "children": [{"name": "ledger", "actor": "tests.actors_supervisor:Ledger",
                           "shutdown_grace": 2.0}]}  # fmt: skip
    mf = meshfile(mesh_prefix, [group], backend="docker", docker_socket=str(sock))
    sup = Supervisor(options(nats_url, mesh_prefix, tmp_path, mf))
    try:
        async with EventLog.listen(nats_url, mesh_prefix) as events, sup:
            assert sorted(sup.slots) == ["ledger-a", "ledger-b"]
            await wait_until(
                lambda: all(s.state == "running" for s in sup.slots.values())
                and all(w in sup.views for w in sup.slots), 20, what="both containers heartbeating",
            )  # fmt: skip
            assert ("GET", "/containers/json") in [(m, p) for m, p, _ in engine.calls]
            query = next(q for m, p, q in engine.calls if p == "/containers/json")
            assert json.loads(query["filters"]) == {"label": ["actormesh.child=ledger"]}
            victim = engine.containers["c0ffeea"]
            assert victim.proc is not None
            old_pid = victim.proc.pid
            os.kill(old_pid, signal.SIGKILL)  # the container's process dies
            await events.wait("failed", worker="ledger-a", timeout=10)
            await events.wait("restarted", worker="ledger-a", timeout=10)
            assert ("POST", "/containers/c0ffeea/restart", {"t": "0"}) in engine.calls
            await wait_until(lambda: sup.slots["ledger-a"].state == "running", 20,
                             what="the restarted container heartbeating")  # fmt: skip
            assert sup.views["ledger-a"].hb.pid == victim.proc.pid != old_pid
            assert not any(p.endswith("/restart") and "c0ffeeb" in p for _, p, _ in engine.calls)
            # An operator restart goes through the engine too, with the child's grace.
            sup.restart_worker("ledger-b")
            await events.wait("restarted", worker="ledger-b", timeout=20)
            assert ("POST", "/containers/c0ffeeb/restart", {"t": "2"}) in engine.calls
    finally:
        for c in engine.containers.values():
            with contextlib.suppress(ProcessLookupError):
                await c.stop(1.0)
        kill_quietly([c.proc.pid for c in engine.containers.values() if c.proc is not None])
        await runner.cleanup()


async def test_docker_client_reports_engine_errors(tmp_path: Path) -> None:
    engine = EngineStub()
    sock = tmp_path / "docker.sock"
    runner = web.AppRunner(engine.app())
    await runner.setup()
    await web.UnixSite(runner, str(sock)).start()
    client = DockerClient(str(sock))
    try:
        with pytest.raises(DockerError) as err:
            await client.restart("nope", 1.0)
        assert err.value.status == 404
        assert "No such container" in str(err.value)
        assert await client.containers({"actormesh.child": "x"}) == []
    finally:
        await client.close()
        await runner.cleanup()
    missing = DockerClient(str(tmp_path / "absent.sock"))
    try:
        with pytest.raises(DockerError, match="cannot reach the engine"):
            await missing.containers({})
    finally:
        await missing.close()
