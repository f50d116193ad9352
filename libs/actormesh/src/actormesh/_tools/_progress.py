"""Progress events: what a tool's handler (or one it calls, at any depth) reports
to the original caller while the caller waits.

`mesh.tools.call(..., on_progress=cb)` subscribes an inbox of its own and sends
it in the `Am-Progress-To` header; `ctx.tools.progress(data)` publishes a
`ToolProgress` there, and `ctx.tools.call` carries the header on to the calls the
handler makes, so events from nested calls reach the same caller. Events are
core NATS messages (no ack, no storage): one lost to a broken connection is not
sent again. From one handler they arrive in the order sent; the caller's
callback has run for all of them by the time the call returns (one broker).
"""

from __future__ import annotations

import asyncio
import inspect
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any

import msgspec

if TYPE_CHECKING:
    from nats.aio.client import Client
    from nats.aio.msg import Msg

__all__ = ["OnProgress", "ToolProgress", "progress_inbox"]

log = logging.getLogger("actormesh.tools")


class ToolProgress(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """One progress event, as published to the caller's inbox."""

    #: The tool whose handler reported it (a nested call's own tool, not the caller's).
    tool: str
    #: That call's id (`gen_ai.tool.call.id`).
    call_id: str
    #: What the handler passed to `ctx.tools.progress`: any JSON value.
    data: Any = None


#: The caller's callback: a plain function or a coroutine function.
OnProgress = Callable[[ToolProgress], Awaitable[None] | None]

_decoder = msgspec.json.Decoder(ToolProgress)
encode = msgspec.json.Encoder().encode


@asynccontextmanager
async def progress_inbox(nc: Client, on_progress: OnProgress) -> AsyncIterator[str]:
    """An inbox whose events go to `on_progress`, one at a time, in arrival order.

    On a normal exit, the events already on their way are delivered first (a
    round trip to the broker, then the callback's queue drained)."""

    async def deliver(msg: Msg) -> None:
        try:
            event = _decoder.decode(msg.data)
        except msgspec.DecodeError as exc:
            log.warning("progress event on %s does not decode: %s", msg.subject, exc)
            return
        try:
            result = on_progress(event)
            if inspect.isawaitable(result):
                await result
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("the progress callback of a %s call raised", event.tool)

    sub = await nc.subscribe(nc.new_inbox(), cb=deliver)
    try:
        yield sub.subject
    except BaseException:
        await sub.unsubscribe()
        raise
    await sub.drain()  # type: ignore[no-untyped-call]
