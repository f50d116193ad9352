"""A continuous pull from a durable JetStream consumer, with its own liveness check.

nats-py's `fetch` is one request at a time; this keeps pull requests open for
as many messages as the worker has room for and renews them as messages are
settled (what nats.go's `Consume` does). Pulls carry an idle heartbeat: if
neither a message nor a heartbeat arrives for two intervals, the server has
lost our pulls (broker restart, leader change, a reconnect nats-py did not
tell us about) and we issue new ones. This is the fix for pull consumers that
go quiet after a server reboot.

On a cluster, a consumer whose leader changes ends our pulls with a 409
("Leadership Change") if the old leader could say so, and silently if it died:
either way we ask again, the silent case after two heartbeat intervals. While
no leader is elected a pull meets no responders (503): we ask again after a
growing pause (`_UNAVAILABLE_*`), not in a tight loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import Callable, Coroutine
from typing import Any

from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription

from ._nats import Client

__all__ = ["PullConsumer"]

log = logging.getLogger("actormesh.consumer")

#: Pauses before asking again after a pull met no consumer leader (503).
_UNAVAILABLE_FIRST = 0.05
_UNAVAILABLE_MAX = 1.0


class PullConsumer:
    def __init__(
        self,
        nc: NATS,
        *,
        stream: str,
        durable: str,
        on_msg: Callable[[Msg], None],
        capacity: int,
        expires: float,
        idle_heartbeat: float,
        on_stall: Callable[[], Coroutine[Any, Any, None]] | None = None,
        api_prefix: str = "$JS.API",
    ) -> None:
        self._nc = nc
        self._next_subject = f"{api_prefix}.CONSUMER.MSG.NEXT.{stream}.{durable}"
        self._on_msg = on_msg
        self._on_stall = on_stall
        self.capacity = capacity
        self._expires = expires
        self._hb = idle_heartbeat
        #: Messages asked for and not yet delivered (or expired).
        self.requested = 0
        #: Messages delivered to us and not yet settled by the worker.
        self.held = 0
        self.last_activity = time.monotonic()
        self.resets = 0
        self._inbox = ""
        self._sub: Subscription | None = None
        self._task: asyncio.Task[None] | None = None
        self._wake = asyncio.Event()
        self._paused = False
        self._side_tasks: set[asyncio.Task[None]] = set()
        #: The pause before asking again after the last 503 (0: none met lately).
        self._unavailable = 0.0
        #: Pulls that met no consumer leader (503), for stats and tests.
        self.unavailable = 0

    async def start(self) -> None:
        self._inbox = self._nc.new_inbox()
        self._sub = await self._nc.subscribe(
            self._inbox, cb=self._deliver, pending_msgs_limit=-1, pending_bytes_limit=-1
        )
        if isinstance(self._nc, Client):
            # Nothing here waits: the read loop may call it (see `deliver_directly`).
            self._nc.deliver_directly(self._sub, self.deliver)
        self._task = asyncio.create_task(self._pump(), name="actormesh-pull")

    def pause(self) -> None:
        """Stop asking for messages (drain); what was asked for may still arrive."""
        self._paused = True
        self._wake.set()

    async def stop(self) -> None:
        self._paused = True
        for task in [self._task, *self._side_tasks]:
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        self._task = None
        if self._sub is not None:
            if isinstance(self._nc, Client):
                self._nc.deliver_queued(self._sub)
            with contextlib.suppress(Exception):
                await self._sub.unsubscribe()
            self._sub = None

    def settled(self, n: int = 1) -> None:
        """The worker is done with `n` delivered messages: room for more."""
        self.held -= n
        if self.requested + self.held <= self.capacity // 2:
            self._wake.set()

    def reset(self) -> None:
        """Forget open pulls (after a reconnect they are gone) and ask again."""
        self.requested = 0
        self.resets += 1
        self.last_activity = time.monotonic()
        self._wake.set()

    async def _deliver(self, msg: Msg) -> None:
        self.deliver(msg)

    def deliver(self, msg: Msg) -> None:
        """A message on our pull inbox: a status, or one for the worker."""
        self.last_activity = time.monotonic()
        headers = msg.headers
        if headers is not None and not msg.data and "Status" in headers:
            status = headers["Status"]
            if status == "100":
                self._unavailable = 0.0
                return  # idle heartbeat: the pull is alive
            if status == "503":
                self._no_leader()
                return
            # 404 no messages, 408 request expired, 409 exceeded limits / consumer gone:
            # the request is over; the server says how much of it went unused.
            pending = headers.get("Nats-Pending-Messages")
            if pending is not None:
                self.requested = max(0, self.requested - int(pending))
            else:
                self.requested = 0
            if status == "409":
                desc = headers.get("Description", "")
                log.info("pull ended by server: 409 %s", desc)
                if "Deleted" in desc:
                    self._recover()
            self._wake.set()
            return
        if self.requested > 0:
            self.requested -= 1
        self.held += 1
        self._unavailable = 0.0
        self._on_msg(msg)

    def _no_leader(self) -> None:
        """Our pull met no responders: the consumer has no leader now (a cluster
        electing one, or its node down). Ask again after a pause that grows."""
        self.requested = 0
        self.unavailable += 1
        delay = self._unavailable = min(
            max(self._unavailable * 2, _UNAVAILABLE_FIRST), _UNAVAILABLE_MAX
        )
        if self.unavailable == 1 or delay == _UNAVAILABLE_MAX:
            log.info("pull met no consumer leader (503): asking again in %.2fs", delay)
        asyncio.get_running_loop().call_later(delay, self._wake.set)

    async def _pump(self) -> None:
        expires_ns = int(self._expires * 1e9)
        hb_ns = int(self._hb * 1e9)
        while True:
            room = self.capacity - self.requested - self.held
            if (
                not self._paused
                and room > 0
                and (room >= self.capacity // 2 or self.requested == 0)
            ):
                self.requested += room
                req = json.dumps({"batch": room, "expires": expires_ns, "idle_heartbeat": hb_ns})
                try:
                    await self._nc.publish(self._next_subject, req.encode(), reply=self._inbox)
                except Exception as exc:
                    # Disconnected with a full buffer, or closed: try again shortly.
                    log.debug("pull request not sent: %r", exc)
                    self.requested = max(0, self.requested - room)
                    await asyncio.sleep(self._hb)
                    continue
            self._wake.clear()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self._hb):
                    await self._wake.wait()
            silent = time.monotonic() - self.last_activity
            if self.requested > 0 and silent > 2.5 * self._hb and not self._paused:
                log.warning(
                    "no message or heartbeat on our pull for %.1fs: pulls were lost "
                    "(broker restart?); asking again",
                    silent,
                )
                self.reset()
                self._recover()

    def _recover(self) -> None:
        """Have `on_stall` check the stream and consumer beside the pulls, not
        before them: during a cluster's election the JetStream API may take many
        seconds to answer, while a pull may be served as soon as a leader is."""
        if self._on_stall is None or self._side_tasks:
            return  # a check is under way
        # Held here: the loop keeps only a weak reference to its tasks.
        task = asyncio.get_running_loop().create_task(self._on_stall())
        self._side_tasks.add(task)
        task.add_done_callback(self._side_tasks.discard)
