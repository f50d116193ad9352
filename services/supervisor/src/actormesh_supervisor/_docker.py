"""The `docker` backend: restart containers through the Docker Engine API, spoken
over its unix socket with aiohttp.

Containers are found by label: `actormesh.child=<child>` (and, when present,
`actormesh.prefix` must match the mesh's prefix). A container's worker id is its
`actormesh.worker` label or else its name; the worker inside must heartbeat
with that id (`--worker-id`). The supervisor does not create containers (compose
does); it restarts, stops and starts the ones it finds.
"""

from __future__ import annotations

import json
import logging
from typing import Any

import aiohttp

from actormesh.lowlevel import ChildSpec

from ._backends import Backend, Found
from ._errors import DockerError
from ._views import Slot

__all__ = ["DockerBackend", "DockerClient"]

log = logging.getLogger("actormesh.supervisor.docker")

LABEL_CHILD = "actormesh.child"
LABEL_PREFIX = "actormesh.prefix"
LABEL_WORKER = "actormesh.worker"


class DockerClient:
    """The few Docker Engine API calls the backend needs."""

    def __init__(self, socket_path: str, *, timeout: float = 30.0) -> None:
        self.socket_path = socket_path
        self.timeout = timeout
        self._session: aiohttp.ClientSession | None = None

    def _http(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(
                connector=aiohttp.UnixConnector(path=self.socket_path),
                # The host is ignored over a unix socket; Docker wants a valid one.
                base_url="http://docker",
            )
        return self._session

    async def request(
        self, method: str, path: str, *, params: dict[str, str] | None = None,
        timeout: float | None = None, ok: tuple[int, ...] = (),
    ) -> Any:  # fmt: skip
        try:
            async with self._http().request(
                method, path, params=params,
                timeout=aiohttp.ClientTimeout(total=timeout or self.timeout),
            ) as resp:  # fmt: skip
                body = await resp.read()
                if resp.status >= 400 and resp.status not in ok:
                    raise DockerError(
                        f"docker {method} {path}: {resp.status} {_message(body)}",
                        status=resp.status,
                    )
                if body and resp.content_type == "application/json":
                    return json.loads(body)
                return None
        except (aiohttp.ClientError, OSError, TimeoutError) as exc:
            raise DockerError(
                f"docker {method} {path}: cannot reach the engine at {self.socket_path}: {exc!r}"
            ) from exc

    async def containers(self, labels: dict[str, str]) -> list[dict[str, Any]]:
        filters = {"label": [f"{k}={v}" for k, v in labels.items()]}
        out = await self.request(
            "GET", "/containers/json", params={"all": "1", "filters": json.dumps(filters)}
        )
        return list(out or [])

    async def restart(self, container: str, grace: float) -> None:
        # The engine waits up to t seconds after SIGTERM, then kills: the same
        # contract as the process backend's shutdown_grace.
        t = max(0, round(grace))
        await self.request(
            "POST", f"/containers/{container}/restart", params={"t": str(t)}, timeout=t + 30
        )

    async def stop(self, container: str, grace: float) -> None:
        t = max(0, round(grace))
        # 304: already stopped.
        await self.request(
            "POST", f"/containers/{container}/stop", params={"t": str(t)}, timeout=t + 30,
            ok=(304,),
        )  # fmt: skip

    async def start(self, container: str) -> None:
        await self.request("POST", f"/containers/{container}/start", ok=(304,))

    async def kill(self, container: str) -> None:
        # 409: not running, which is what we wanted.
        await self.request("POST", f"/containers/{container}/kill", ok=(409,))

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None


def _message(body: bytes) -> str:
    try:
        return str(json.loads(body).get("message", ""))[:300]
    except (ValueError, AttributeError):
        return body[:300].decode(errors="replace")


class DockerBackend(Backend):
    name = "docker"
    fixed_slots = False

    def __init__(self, socket_path: str, *, prefix: str) -> None:
        super().__init__()
        self.client = DockerClient(socket_path)
        self.prefix = prefix
        #: worker id -> container id
        self._containers: dict[str, str] = {}

    async def discover(self, children: list[ChildSpec]) -> list[Found]:
        found: list[Found] = []
        for child in children:
            for c in await self.client.containers({LABEL_CHILD: child.name}):
                labels = c.get("Labels") or {}
                if labels.get(LABEL_PREFIX, self.prefix) != self.prefix:
                    continue
                names = c.get("Names") or []
                worker_id = labels.get(LABEL_WORKER) or (names[0].lstrip("/") if names else "")
                if not worker_id:
                    continue
                self._containers[worker_id] = str(c["Id"])
                found.append(
                    Found(
                        worker_id=worker_id,
                        child=child.name,
                        running=c.get("State") == "running",
                        ref=str(c["Id"]),
                    )
                )
        found.sort(key=lambda f: f.worker_id)
        return found

    def _id(self, slot: Slot) -> str:
        try:
            return self._containers[slot.worker_id]
        except KeyError:
            raise DockerError(f"no container known for worker {slot.worker_id}") from None

    async def launch(self, slot: Slot, child: ChildSpec) -> int | None:
        await self.client.start(self._id(slot))
        return None

    async def terminate(self, slot: Slot, grace: float) -> None:
        await self.client.stop(self._id(slot), grace)

    async def kill(self, slot: Slot) -> None:
        await self.client.kill(self._id(slot))

    async def restart(self, slot: Slot, child: ChildSpec, grace: float) -> int | None:
        log.info("restarting container %s of %s", self._id(slot)[:12], slot.worker_id)
        await self.client.restart(self._id(slot), grace)
        return None

    def adopt(self, slot: Slot, found: Found) -> None:
        if found.ref:
            self._containers[slot.worker_id] = found.ref

    async def close(self) -> None:
        await self.client.close()
