"""The wire of the Synadia Agent Protocol for NATS (protocol 0.3), written from the
spec and the reference SDKs (`synadia-ai-agents`, `synadia-ai-agent-service`), which
we do not import: subjects, the request envelope, the streamed chunks and the
heartbeat payload.

Subjects are `agents.{verb}.{agent}.{owner}.{session}`, verb `prompt`, `status` or
`hb`. A prompt's reply stream is: a `{"type":"status","data":"ack"}` chunk first,
then `{"type":"response","data":...}` chunks, then a zero-byte message with no
headers (the terminator); an error is a micro error frame (the
`Nats-Service-Error-Code` header) followed by the terminator.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Any, Literal

import msgspec

from .. import ConfigError

__all__ = [
    "PROTOCOL_VERSION",
    "QUEUE_GROUP",
    "SERVICE_NAME",
    "ChunkKind",
    "Heartbeat",
    "HeartbeatEndpoint",
    "PromptError",
    "Subjects",
    "decode_chunk",
    "decode_prompt",
    "encode_chunk",
    "now_iso",
]

#: `metadata.protocol_version` (MAJOR.MINOR only).
PROTOCOL_VERSION = "0.3"
#: Every agent registers the micro service of this name.
SERVICE_NAME = "agents"
#: The queue group of the prompt and status endpoints, so instances load-balance.
QUEUE_GROUP = "agents"
ERROR_CODE_HEADER = "Nats-Service-Error-Code"
ERROR_HEADER = "Nats-Service-Error"

_AGENT_RE = re.compile(r"^[a-z0-9-]+$")
_TOKEN_RE = re.compile(r"^[a-z0-9_-]+$")

ChunkKind = Literal["response", "status", "query", "other"]


class PromptError(Exception):
    """A prompt the agent refused or failed: the spec's error frame (§9)."""

    def __init__(self, code: str, description: str) -> None:
        super().__init__(f"agent error {code}: {description}")
        self.code = code
        self.description = description


class Subjects(msgspec.Struct, frozen=True, kw_only=True):
    """The identifying tokens of one agent (session) and its subjects."""

    agent: str
    owner: str
    session: str

    @classmethod
    def of(cls, agent: str, owner: str, session: str) -> Subjects:
        """Checked tokens (the spec's §2 grammar); a bad one is a ConfigError."""
        if not _AGENT_RE.fullmatch(agent):
            raise ConfigError(
                f"agent name {agent!r} must be lowercase letters, digits and '-' "
                "(the Agent Protocol's subject grammar); rename it"
            )
        for what, token in (("owner", owner), ("session", session)):
            if not _TOKEN_RE.fullmatch(token):
                raise ConfigError(
                    f"agent {what} {token!r} must be lowercase letters, digits, '-' and '_'; "
                    "rename it"
                )
        return cls(agent=agent, owner=owner, session=session)

    def subject(self, verb: Literal["prompt", "status", "hb"]) -> str:
        return f"agents.{verb}.{self.agent}.{self.owner}.{self.session}"


class HeartbeatEndpoint(msgspec.Struct, frozen=True, kw_only=True):
    subject: str
    metadata: dict[str, str]


class Heartbeat(msgspec.Struct, frozen=True, kw_only=True):
    """The §8.3 heartbeat payload; the `status` endpoint answers the same shape."""

    agent: str
    owner: str
    session: str
    instance_id: str
    ts: str
    interval_s: int
    protocol_version: str = PROTOCOL_VERSION
    endpoints: dict[str, HeartbeatEndpoint] | None = None


class _Envelope(msgspec.Struct, kw_only=True):
    # Unknown top-level fields are tolerated (§5.6): no forbid_unknown_fields here.
    prompt: str
    attachments: list[dict[str, Any]] | None = None


_envelope = msgspec.json.Decoder(_Envelope)
_encoder = msgspec.json.Encoder()


def now_iso() -> str:
    """UTC ISO 8601 with seconds and a `Z`, as heartbeats carry it."""
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def decode_prompt(payload: bytes) -> tuple[str, int]:
    """The prompt text and the number of attachments of a request (§5.3: a body
    whose first non-blank byte is `{` is the JSON envelope, anything else is the
    prompt as UTF-8 text). Raises PromptError 400 when malformed."""
    if not payload:
        raise PromptError("400", "zero-byte prompt")
    if payload.lstrip()[:1] == b"{":
        try:
            env = _envelope.decode(payload)
        except msgspec.ValidationError as exc:
            raise PromptError("400", f"malformed envelope: {exc}") from None
        if not env.prompt:
            raise PromptError("400", "the envelope's prompt is empty")
        return env.prompt, len(env.attachments or ())
    try:
        return payload.decode(), 0
    except UnicodeDecodeError:
        raise PromptError("400", "the prompt is neither JSON nor UTF-8 text") from None


def encode_chunk(kind: Literal["response", "status"] | str, data: Any) -> bytes:
    """One non-terminating chunk, `{"type": kind, "data": data}` (§6.2)."""
    return _encoder.encode({"type": kind, "data": data})


def decode_chunk(payload: bytes) -> tuple[ChunkKind, Any]:
    """A chunk's kind and data; `other` for a type this side does not know (§6.6:
    ignored). Raises PromptError when the chunk is not a typed JSON object."""
    try:
        obj = msgspec.json.decode(payload)
    except msgspec.DecodeError:
        raise PromptError("502", "the agent sent a chunk that is not JSON") from None
    if not isinstance(obj, dict) or not isinstance(obj.get("type"), str):
        raise PromptError("502", "the agent sent a chunk without a string `type`")
    kind, data = obj["type"], obj.get("data")
    if kind == "response":
        text = data.get("text") if isinstance(data, dict) else data
        if not isinstance(text, str):
            raise PromptError("502", "the agent sent a response chunk without text")
        return "response", text
    if kind in ("status", "query"):
        return kind, data
    return "other", data
