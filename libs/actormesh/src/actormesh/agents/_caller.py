"""Calling Agent Protocol agents (the caller side, written here): discovery through
`$SRV.INFO.agents`, and one prompt as a streamed request.

A prompt publishes the envelope `{"prompt": ...}` to the agent's prompt subject
with a fresh inbox as the reply subject, then reads the stream: `status` chunks
(the leading `ack`, keep-alives), `response` chunks (their texts concatenated are
the answer), unknown chunk types ignored (§6.6), until the zero-byte terminator
without headers; a micro error frame fails the prompt with its code.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

import msgspec

from ._protocol import ERROR_CODE_HEADER, ERROR_HEADER, SERVICE_NAME, PromptError, decode_chunk

if TYPE_CHECKING:
    from nats.aio.client import Client
    from nats.aio.msg import Msg

__all__ = ["AgentInfo", "discover_agents", "prompt_agent"]

#: The SDKs' default: a stream silent this long is dead.
DEFAULT_INACTIVITY = 60.0
#: Discovery returns once no instance answered for this long.
DISCOVER_STALL = 0.5

OnText = Callable[[str], Awaitable[None]]


class AgentInfo(msgspec.Struct, frozen=True, kw_only=True):
    """One agent instance, as its `$SRV.INFO` reply describes it (§4.3)."""

    instance_id: str
    agent: str
    owner: str
    session: str
    description: str
    prompt_subject: str


class _Endpoint(msgspec.Struct):
    name: str
    subject: str


class _Info(msgspec.Struct):
    id: str
    name: str
    description: str = ""
    metadata: dict[str, str] | None = None
    endpoints: list[_Endpoint] | None = None


_info = msgspec.json.Decoder(_Info)


async def discover_agents(
    nc: Client, *, stall: float = DISCOVER_STALL, max_wait: float = 2.0
) -> list[AgentInfo]:
    """The agents reachable on `nc`: every `agents` micro service instance with the
    protocol's metadata and a `prompt` endpoint; others are skipped."""
    inbox = nc.new_inbox()
    replies: list[bytes] = []
    sub = await nc.subscribe(inbox)
    try:
        await nc.publish(f"$SRV.INFO.{SERVICE_NAME}", b"", reply=inbox)
        end = time.monotonic() + max_wait
        while (left := end - time.monotonic()) > 0:
            try:
                msg = await sub.next_msg(timeout=min(stall, left))
            except TimeoutError:
                break
            replies.append(msg.data)
    finally:
        with contextlib.suppress(Exception):
            await sub.unsubscribe()
    found = (_agent_info(r) for r in replies)
    return sorted((a for a in found if a is not None), key=lambda a: (a.agent, a.instance_id))


def _agent_info(raw: bytes) -> AgentInfo | None:
    try:
        info = _info.decode(raw)
    except msgspec.DecodeError:
        return None
    meta = info.metadata or {}
    prompt = next((e for e in info.endpoints or () if e.name == "prompt"), None)
    if info.name != SERVICE_NAME or prompt is None or not meta.get("agent"):
        return None
    return AgentInfo(
        instance_id=info.id,
        agent=meta["agent"],
        owner=meta.get("owner", ""),
        session=meta.get("session", "default"),
        description=info.description,
        prompt_subject=prompt.subject,
    )


async def prompt_agent(
    nc: Client,
    subject: str,
    prompt: str,
    *,
    timeout: float,
    inactivity: float = DEFAULT_INACTIVITY,
    on_text: OnText | None = None,
) -> str:
    """Prompt the agent at `subject`; its answer (the response chunks' texts).

    `on_text` gets each response chunk as it arrives. Raises `PromptError`: the
    agent's error frame, `503` when no agent listens, `504` when the stream
    stalls for `inactivity` seconds or outlasts `timeout`, `501` when the agent
    asks the caller a question (a tool call has no one to answer it)."""
    inbox = nc.new_inbox()
    sub = await nc.subscribe(inbox)
    texts: list[str] = []
    try:
        await nc.publish(subject, msgspec.json.encode({"prompt": prompt}), reply=inbox)
        end = time.monotonic() + timeout
        while True:
            left = end - time.monotonic()
            if left <= 0:
                raise PromptError("504", f"no complete answer within {timeout:g}s")
            try:
                msg = await sub.next_msg(timeout=min(inactivity, left))
            except TimeoutError:
                raise PromptError("504", f"the agent's stream stalled on {subject}") from None
            text = await _chunk(msg)
            if text is None:
                return "".join(texts)
            if text:
                texts.append(text)
                if on_text is not None:
                    await on_text(text)
    finally:
        with contextlib.suppress(Exception):
            await sub.unsubscribe()


async def _chunk(msg: Msg) -> str | None:
    """A message's response text ("" for other chunks), None at the terminator."""
    headers = msg.headers or {}
    if headers.get("Status") == "503":
        raise PromptError("503", "no agent listens on that subject")
    if ERROR_CODE_HEADER in headers:
        raise PromptError(headers[ERROR_CODE_HEADER], headers.get(ERROR_HEADER, ""))
    if not msg.data:
        if headers:
            return ""  # an empty message with headers is not the terminator (§6.5)
        return None
    kind, data = decode_chunk(msg.data)
    if kind == "response":
        return str(data)
    if kind == "query":
        raise PromptError("501", "the agent asked a question; a tool call cannot answer it")
    return ""
