"""A mesh tool exposed as an Agent Protocol agent (the host side, written here).

`AgentHost` registers the `agents` micro service (metadata `agent`, `owner`,
`session`, `protocol_version`) with a `prompt` and a `status` endpoint (queue
group `agents`) and publishes heartbeats on `agents.hb.*`. A prompt is answered
by calling the configured tool through `mesh.tools.call` as the configured
principal, so grants, deadlines, approvals and metrics apply as for any caller;
the reply streams back as the spec's chunks.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import TYPE_CHECKING, Any

import msgspec
from nats.micro import add_service
from nats.micro.service import Service, ServiceConfig

from .. import (
    ActorMeshError,
    ConfigError,
    ToolArgumentsInvalid,
    ToolDenied,
    ToolNotFound,
    ToolRejected,
    ToolTimeout,
)
from .. import __version__ as VERSION
from ._protocol import (
    PROTOCOL_VERSION,
    QUEUE_GROUP,
    SERVICE_NAME,
    Heartbeat,
    HeartbeatEndpoint,
    PromptError,
    Subjects,
    decode_prompt,
    encode_chunk,
    now_iso,
)

if TYPE_CHECKING:
    from nats.micro.request import Request

    from .. import Mesh, ToolProgress, ToolSpec

__all__ = ["AgentHost", "AgentHostConfig"]

log = logging.getLogger("actormesh.agents")

#: A nats header value is one line; the spec asks for a short description.
_MAX_DESC = 200
_ACK = encode_chunk("status", "ack")
_encoder = msgspec.json.Encoder()


class AgentHostConfig(msgspec.Struct, frozen=True, kw_only=True):
    """What to expose, and as whom."""

    #: The mesh tool that answers prompts.
    tool: str
    #: The principal the tool is called as (it needs a grant for `tool`).
    principal: str
    #: The agent's name (`agents.prompt.<agent>.<owner>.<session>`).
    agent: str
    owner: str = "actormesh"
    session: str = "default"
    description: str = ""
    #: The tool argument the prompt text goes into. None: a prompt that is a JSON
    #: object is the arguments; otherwise the tool's only string argument.
    prompt_arg: str | None = None
    #: Each tool call's timeout, seconds.
    timeout: float = 30.0
    heartbeat_interval_s: int = 30
    #: While a call runs, an `ack` status chunk this often, so a caller's
    #: stream-inactivity timeout (60 s by default in the SDKs) does not fire.
    keepalive_s: float = 15.0

    def __post_init__(self) -> None:
        Subjects.of(self.agent, self.owner, self.session)  # raises ConfigError
        if self.heartbeat_interval_s <= 0 or self.keepalive_s <= 0 or self.timeout <= 0:
            raise ConfigError(
                "heartbeat_interval_s, keepalive_s and timeout must be positive; "
                "fix the agent host config"
            )


class AgentHost:
    """Serves one agent (one session) until `stop()`; `async with` works too."""

    def __init__(self, mesh: Mesh, config: AgentHostConfig) -> None:
        self._mesh = mesh
        self.config = config
        self.subjects = Subjects.of(config.agent, config.owner, config.session)
        self._service: Service | None = None
        self._heartbeats: asyncio.Task[None] | None = None
        self._prompts: set[asyncio.Task[None]] = set()
        self._endpoints: dict[str, HeartbeatEndpoint] = {}

    @property
    def instance_id(self) -> str:
        """The micro service's instance id (= the heartbeats' `instance_id`)."""
        if self._service is None:
            raise RuntimeError("the agent host is not started")
        return self._service.id

    async def __aenter__(self) -> AgentHost:
        await self.start()
        return self

    async def __aexit__(self, *_: object) -> None:
        await self.stop()

    async def start(self) -> None:
        c, s = self.config, self.subjects
        nc = self._mesh.nc
        prompt_metadata = {
            "max_payload": _human_bytes(nc.max_payload or 1024 * 1024),
            # Attachments would have nowhere to go in a tool call.
            "attachments_ok": "false",
        }
        self._endpoints = {
            "prompt": HeartbeatEndpoint(subject=s.subject("prompt"), metadata=prompt_metadata)
        }
        service = await add_service(
            nc,
            ServiceConfig(
                name=SERVICE_NAME,
                version=VERSION,
                description=c.description or f"actormesh tool {c.tool} as an agent",
                metadata={
                    "agent": s.agent,
                    "owner": s.owner,
                    "session": s.session,
                    "protocol_version": PROTOCOL_VERSION,
                    "actormesh.tool": c.tool,
                },
            ),
        )
        self._service = service
        await service.add_endpoint(
            name="prompt",
            subject=s.subject("prompt"),
            handler=self._on_prompt,
            queue_group=QUEUE_GROUP,
            metadata=prompt_metadata,
        )
        await service.add_endpoint(
            name="status",
            subject=s.subject("status"),
            handler=self._on_status,
            queue_group=QUEUE_GROUP,
        )
        # Registered at the server before start() returns: a caller may prompt at once.
        await nc.flush()
        self._heartbeats = asyncio.create_task(self._beat(), name=f"agent-hb-{s.agent}")
        log.info("agent %s serving tool %s", s.subject("prompt"), c.tool)

    async def stop(self) -> None:
        if self._heartbeats is not None:
            self._heartbeats.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._heartbeats
            self._heartbeats = None
        if self._service is not None:
            await self._service.stop()
            self._service = None
        for task in list(self._prompts):
            task.cancel()
        await asyncio.gather(*self._prompts, return_exceptions=True)

    def heartbeat(self) -> Heartbeat:
        """The §8.3 payload, fresh (heartbeats and the status reply)."""
        s = self.subjects
        return Heartbeat(
            agent=s.agent,
            owner=s.owner,
            session=s.session,
            instance_id=self.instance_id,
            ts=now_iso(),
            interval_s=self.config.heartbeat_interval_s,
            endpoints=self._endpoints,
        )

    async def _beat(self) -> None:
        subject = self.subjects.subject("hb")
        while True:
            try:
                await self._mesh.nc.publish(subject, _encoder.encode(self.heartbeat()))
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # a broker blip costs one beat, never the agent
                log.warning("agent heartbeat on %s failed: %s", subject, exc)
            await asyncio.sleep(self.config.heartbeat_interval_s)

    async def _on_status(self, req: Request) -> None:
        await req.respond(_encoder.encode(self.heartbeat()))

    async def _on_prompt(self, req: Request) -> None:
        # nats.micro awaits a handler before taking the endpoint's next request:
        # each prompt runs in a task of its own so slow tools do not queue.
        task = asyncio.create_task(self._serve(req), name=f"agent-prompt-{req.subject}")
        self._prompts.add(task)
        task.add_done_callback(self._prompts.discard)

    async def _serve(self, req: Request) -> None:
        keepalive: asyncio.Task[None] | None = None
        try:
            text, attachments = decode_prompt(req.data)
            if attachments:
                raise PromptError("400", "attachments are not supported by this agent")
            args = await self._arguments(text)
            await req.respond(_ACK)  # §6.4: the leading ack, before the work
            keepalive = asyncio.create_task(self._keepalive(req))
            result = await self._mesh.tools.call(
                self.config.tool,
                args,
                principal=self.config.principal,
                timeout=self.config.timeout,
                on_progress=lambda p: self._progress(req, p),
            )
            await _stop(keepalive)
            await req.respond(encode_chunk("response", _as_text(result)))
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            await _stop(keepalive)
            code, desc = _error_frame(exc)
            # Best effort, as the terminator: a requester gone is no error of ours.
            with contextlib.suppress(Exception):
                await req.respond_error(code, desc)
        finally:
            await _stop(keepalive)
            # §6.5/§9.3: every stream ends with a zero-byte message without headers.
            with contextlib.suppress(Exception):
                await req.respond(b"")

    async def _arguments(self, text: str) -> dict[str, Any]:
        """The tool's arguments for a prompt (see `AgentHostConfig.prompt_arg`)."""
        if self.config.prompt_arg is not None:
            return {self.config.prompt_arg: text}
        if text.lstrip().startswith("{"):
            with contextlib.suppress(msgspec.DecodeError):
                args = msgspec.json.decode(text)
                if isinstance(args, dict):
                    return args
        try:
            spec = await self._mesh.tools.spec(self.config.tool)
        except ToolNotFound as exc:
            raise PromptError("404", str(exc)) from None
        name = _only_string_arg(spec)
        if name is None:
            raise PromptError(
                "400",
                f"tool {spec.name} takes no single text argument: "
                "send its arguments as a JSON object",
            )
        return {name: text}

    async def _keepalive(self, req: Request) -> None:
        while True:
            await asyncio.sleep(self.config.keepalive_s)
            await req.respond(_ACK)

    async def _progress(self, req: Request, progress: ToolProgress) -> None:
        # An extension chunk type: a caller that does not know it drops it (§6.6).
        await req.respond(encode_chunk("progress", {"tool": progress.tool, "data": progress.data}))


def _only_string_arg(spec: ToolSpec) -> str | None:
    props = spec.input_schema.get("properties", {})
    strings = [k for k, v in props.items() if isinstance(v, dict) and v.get("type") == "string"]
    required = spec.input_schema.get("required", [])
    if len(strings) == 1 and set(required) <= set(strings):
        return str(strings[0])
    return None


def _as_text(result: Any) -> str:
    return result if isinstance(result, str) else _encoder.encode(result).decode()


async def _stop(task: asyncio.Task[None] | None) -> None:
    if task is not None and not task.done():
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


_HTTPISH: tuple[tuple[type[Exception], str], ...] = (
    (ToolNotFound, "404"),
    (ToolArgumentsInvalid, "400"),
    (ToolDenied, "403"),
    (ToolRejected, "403"),
    (ToolTimeout, "504"),
)


def _error_frame(exc: Exception) -> tuple[str, str]:
    """The §9 error frame for a failed call: an HTTP-like code, and the mesh's
    error code first in the description so a caller can tell them apart."""
    if isinstance(exc, PromptError):
        return exc.code, _one_line(exc.description)
    if isinstance(exc, ActorMeshError):
        code = next((c for t, c in _HTTPISH if isinstance(exc, t)), "500")
        return code, _one_line(f"{exc.code}: {exc}")
    log.exception("agent prompt failed")
    return "500", "internal error"


def _one_line(text: str) -> str:
    flat = " | ".join(line.strip() for line in text.splitlines() if line.strip())
    return flat if len(flat) <= _MAX_DESC else flat[: _MAX_DESC - 3] + "..."


def _human_bytes(n: int) -> str:
    for unit, size in (("GB", 1024**3), ("MB", 1024**2), ("KB", 1024)):
        if n >= size and n % size == 0:
            return f"{n // size}{unit}"
    return f"{n}B"
