"""The worker as a NATS micro service: `$SRV.PING`, `$SRV.INFO` and `$SRV.STATS`
answer with the actor type, its handlers as endpoints (with their message type,
mailbox subject and, for tools, JSON Schemas), and the worker's live stats, so
standard NATS tooling (`nats micro ls`, `nats micro info <type>`) discovers and
inspects the mesh. It uses nats-py's own `nats.micro`.

The durable mailbox stays the data path: a request to an endpoint
(`<prefix>.svc.<type>.<handler>`, JSON body; `Am-Key` header for a keyed actor;
`Am-Principal` for a tool) is sent on as an ask through the mailbox, and the
reply (or a micro error with the mesh's error code) comes back to the requester.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from typing import TYPE_CHECKING, Any

import msgspec
from nats.micro import add_service
from nats.micro.request import Request
from nats.micro.service import EndpointStats, Service, ServiceConfig

from .._actor import tag_of
from .._errors import ActorMeshError
from .._subjects import KEYLESS
from .._version import VERSION
from .._wire import Hdr

if TYPE_CHECKING:
    from .._actor import Handler
    from ._facade import Worker

__all__ = ["KEY_HEADER", "MicroService"]

log = logging.getLogger("actormesh.worker")

#: The header naming the actor key of a request to a keyed actor's endpoint.
KEY_HEADER = "Am-Key"
#: How long an endpoint request waits for the actor's reply.
REQUEST_TIMEOUT = 30.0


class MicroService:
    """Registers the worker's actor type with nats.micro while it runs."""

    def __init__(self, worker: Worker) -> None:
        self._w = worker
        self._service: Service | None = None

    async def start(self) -> None:
        w = self._w
        spec = w.spec
        subjects = w.mesh.subjects
        config = ServiceConfig(
            name=w.actor_type,
            version=VERSION,
            description=(spec.cls.__doc__ or f"actormesh actor type {w.actor_type}").strip(),
            metadata={
                "actormesh.worker": w.id,
                "actormesh.keyed": str(not spec.keyless).lower(),
                "actormesh.mailbox_stream": subjects.mailbox_stream(w.actor_type),
                "actormesh.mailbox_subject": subjects.mailbox(w.actor_type, "<key>"),
                "actormesh.partition": "" if w.partition is None else str(w.partition),
            },
            queue_group=f"{subjects.prefix}.svc.{w.actor_type}",
            stats_handler=self._stats,
        )
        try:
            service = await add_service(w.mesh.nc, config)
            for handler in spec.handlers.values():
                await service.add_endpoint(
                    name=handler.name,
                    subject=subjects.service_endpoint(w.actor_type, handler.name),
                    handler=self._forward(handler),
                    metadata=_metadata(handler),
                )
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            # Discovery is a convenience: a worker without it still serves its mailbox.
            log.warning("not registered as a NATS micro service: %r", exc)
            return
        self._service = service

    async def stop(self) -> None:
        if self._service is not None:
            with contextlib.suppress(Exception):
                await self._service.stop()
            self._service = None

    def _stats(self, endpoint: EndpointStats) -> dict[str, Any]:
        w = self._w
        return {
            "status": w.status,
            "in_flight": w.in_flight,
            "handled": w.handled,
            "failed": w.failed,
            "dead_lettered": w.dead_lettered,
            "instances": len(w._handling.instances),
            "passivated": w.passivated,
            "parked": w.parked,
            "denied": w.denied,
        }

    def _forward(self, handler: Handler) -> Any:
        w = self._w
        tag = tag_of(handler.message_type)
        keyed = not w.spec.keyless

        async def forward(req: Request) -> None:
            headers = req.headers or {}
            key = headers.get(KEY_HEADER) if keyed else KEYLESS
            if not key:
                await req.respond_error(
                    "400", f"{w.actor_type} is keyed: set the {KEY_HEADER} header"
                )
                return
            try:
                body = json.loads(req.data or b"{}")
                if not isinstance(body, dict):
                    raise ValueError("the body must be a JSON object")
                body.setdefault("type", tag)
                ref = w.mesh.ref(w.actor_type, key)
                if Hdr.PRINCIPAL in headers:
                    ref._principal = headers[Hdr.PRINCIPAL]
                result = await ref.ask(
                    json.dumps(body).encode(), timeout=REQUEST_TIMEOUT, headers=_passed(headers)
                )
            except asyncio.CancelledError:
                raise
            except ActorMeshError as exc:
                code = getattr(exc, "code", "actormesh_error")
                remote = getattr(exc, "remote_message", None)
                await req.respond_error(str(code), remote or exc.message)
                return
            except ValueError as exc:
                await req.respond_error("bad_message", f"not a JSON object: {exc}")
                return
            await req.respond(msgspec.json.encode(result))

        return forward


def _passed(headers: dict[str, str]) -> dict[str, str]:
    """The request headers an ask carries on (trace context)."""
    return {k: v for k, v in headers.items() if k in (Hdr.TRACEPARENT, Hdr.TRACESTATE)}


def _metadata(handler: Handler) -> dict[str, str]:
    meta = {"actormesh.message_type": tag_of(handler.message_type)}
    if handler.tool is not None:
        meta["actormesh.tool"] = handler.tool.name
        meta["actormesh.description"] = handler.tool.description
        meta["actormesh.input_schema"] = json.dumps(handler.tool.input_schema)
        meta["actormesh.output_schema"] = json.dumps(handler.tool.output_schema)
    return meta
