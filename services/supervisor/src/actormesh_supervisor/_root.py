"""The root of a supervision tree across hosts (`role = "root"`).

The root runs no workers. Its children are the host supervisors, which it
knows by their heartbeats (`HostBeat`, with their trees). It acts, one thing at
a time, on three triggers: a host's group past its intensity, a host supervisor
past its own intensity (both escalated to it), and a host supervisor whose
heartbeats stopped. Each action counts against the root's own intensity
(`[supervisor] intensity` within `period`) and follows its `strategy`
(`_tree.plan`): its orders go to the hosts' control subjects. One action too
many and the root escalates as OTP's top supervisor does: it orders every host
supervisor to stop, records an `escalated` event (scope `root`; also to a
parent mesh and the webhook), and exits with code 3.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

import msgspec
from nats.aio.msg import Msg

from actormesh import Event

from ._errors import SupervisorError
from ._supervisor import Supervisor
from ._tasks import TaskSet, bounded
from ._tree import ESCALATED_EXIT, Order, Role, Trigger, host_name, plan
from ._treewire import (
    HostBeat,
    TreeCommand,
    TreeReply,
    decode_beat,
    decode_escalation,
    decode_reply,
    encode,
)

__all__ = ["HostView", "Root"]

log = logging.getLogger("actormesh.supervisor.tree")

#: How a host supervisor stands, as the root sees it.
HostState = Literal["running", "failed", "lost", "stopped"]
#: Tries and seconds per try of one order to a host supervisor.
ORDER_TRIES = 3
ORDER_TIMEOUT = 2.0
#: Escalation ids remembered, so a resent escalation is acted on once.
_SEEN = 1000


@dataclass(eq=False)
class HostView:
    """One host supervisor: its latest heartbeat and what the root did about it."""

    beat: HostBeat
    last_seen: float
    state: HostState = "running"
    #: The times it was lost.
    lost: int = 0
    #: The root's last word on it (an order, a loss), for the dashboard.
    note: str = ""


@dataclass(frozen=True, slots=True)
class _Item:
    trigger: Trigger
    host: str
    group: str = ""
    reason: str = ""


@dataclass(eq=False)
class _Seen:
    ids: OrderedDict[str, None] = field(default_factory=OrderedDict)

    def first(self, key: str) -> bool:
        if key in self.ids:
            return False
        self.ids[key] = None
        while len(self.ids) > _SEEN:
            self.ids.popitem(last=False)
        return True


class Root:
    """The root supervisor's role. `start()` after the supervisor's; `stop()` before."""

    role: Role = "root"

    def __init__(self, sup: Supervisor, *, request_exit: Callable[[int], None]) -> None:
        self.sup = sup
        self.host = host_name(sup.sup)
        self.strategy = sup.sup.strategy
        self.request_exit = request_exit
        #: In the order the root first heard them (one_for_all orders follow it).
        self.hosts: dict[str, HostView] = {}
        self.queue: asyncio.Queue[_Item] = asyncio.Queue()
        self.tasks = TaskSet()
        self.escalated = False
        #: Per host, escalations taken and orders it took (kept apart from the views:
        #: an escalation may come before the host's first heartbeat is handled).
        self.escalations: dict[str, int] = {}
        self.orders: dict[str, int] = {}
        self._seen = _Seen()
        self._subs: list[Any] = []

    async def start(self) -> None:
        mesh = self.sup.mesh
        if mesh is None:
            raise SupervisorError("the root supervisor is not connected")
        subjects = self.sup.subjects
        self._subs.append(await mesh.nc.subscribe(subjects.tree_heartbeat_all, cb=self._on_beat))
        self._subs.append(
            await mesh.nc.subscribe(subjects.tree_escalation_all, cb=self._on_escalation)
        )
        self.tasks.spawn(self._act_loop(), "tree-root")
        self.tasks.spawn(self._watch_loop(), "tree-watch")
        log.info("root supervisor %s: %s over host supervisors, intensity %d in %gs",
                 self.sup.sup.name, self.strategy, self.sup.sup.intensity,
                 self.sup.sup.period)  # fmt: skip

    async def stop(self) -> None:
        await self.tasks.cancel("tree tasks")
        for sub in self._subs:
            await bounded(sub.unsubscribe(), "unsubscribing the tree subjects")
        self._subs.clear()

    # -- what the hosts say ---------------------------------------------------------------

    async def _on_beat(self, msg: Msg) -> None:
        try:
            beat = decode_beat(msg.data)
        except (msgspec.DecodeError, msgspec.ValidationError):
            self.sup.bad_heartbeats += 1
            return
        now = time.monotonic()
        view = self.hosts.get(beat.host)
        if view is None:
            view = self.hosts[beat.host] = HostView(beat=beat, last_seen=now, state="stopped")
        before = view.state
        if before in ("running", "failed") and beat.supervisor != view.beat.supervisor:
            # Two live supervisors under one host name: each would take the other's orders.
            log.error("host %s: heartbeats from supervisors %s and %s; give each its own "
                      "[supervisor] host", beat.host, view.beat.supervisor,
                      beat.supervisor)  # fmt: skip
        view.beat, view.last_seen = beat, now
        if beat.status == "stopped":
            view.state = "stopped"
            if before != "stopped":
                self._event("stopped", beat.host, reason="host supervisor stopped")
            return
        view.state = "failed" if beat.status == "failed" else "running"
        if before in ("lost", "stopped"):
            self._event("started", beat.host,
                        reason="heartbeats resumed" if before == "lost" else "joined the tree",
                        detail={"pid": str(beat.pid)})  # fmt: skip

    async def _on_escalation(self, msg: Msg) -> None:
        try:
            esc = decode_escalation(msg.data)
        except (msgspec.DecodeError, msgspec.ValidationError) as exc:
            await _respond(msg, TreeReply(ok=False, host=self.host, error=f"bad escalation: {exc}"))
            return
        if self._seen.first(esc.id):
            log.warning("host %s escalated (%s%s): %s", esc.host, esc.scope,
                        f" {esc.group}" if esc.group else "", esc.reason)  # fmt: skip
            self.escalations[esc.host] = self.escalations.get(esc.host, 0) + 1
            self.queue.put_nowait(_Item(esc.scope, esc.host, esc.group, esc.reason))
        # Taken (queued, or already): the host stops resending it.
        await _respond(msg, TreeReply(ok=True, host=self.host))

    async def _watch_loop(self) -> None:
        tick = min(0.1, self.sup.interval / 10)
        while True:
            await asyncio.sleep(tick)
            self.check(time.monotonic())

    def check(self, now: float) -> None:
        """Declare lost each host supervisor whose heartbeats stopped."""
        misses = self.sup.sup.heartbeat_misses
        for host, view in self.hosts.items():
            if view.state not in ("running", "failed"):
                continue
            dead_after = max(self.sup.dead_after, view.beat.interval * misses)
            silent = now - view.last_seen
            if silent > dead_after:
                view.state = "lost"
                view.lost += 1
                every = view.beat.interval
                reason = f"no heartbeat for {silent:.1f}s ({misses} x {every:g}s missed)"
                view.note = f"lost: {reason}"
                log.error("host supervisor %s lost: %s", host, reason)
                self._event("failed", host, reason=reason,
                            detail={"cause": "heartbeat", "pid": str(view.beat.pid)})  # fmt: skip
                self.queue.put_nowait(_Item("lost", host, reason=reason))

    # -- acting, one thing at a time ------------------------------------------------------

    async def _act_loop(self) -> None:
        while True:
            item = await self.queue.get()
            try:
                await self.act(item)
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("the root could not act on %s of %s", item.trigger, item.host)

    async def act(self, item: _Item) -> None:
        if self.escalated:
            log.warning("root already escalated: ignoring %s of %s", item.trigger, item.host)
            return
        if not self.sup.window.allow(time.monotonic()):
            await self._escalate(item)
            return
        hosts = [h for h, v in self.hosts.items() if v.state in ("running", "failed")]
        if item.trigger != "lost" and item.host not in hosts:
            hosts.insert(0, item.host)
        orders = plan(self.strategy, origin=item.host, trigger=item.trigger,
                      group=item.group, hosts=hosts)  # fmt: skip
        if not orders:
            log.warning("host supervisor %s is lost: counted; it comes back by its own "
                        "service manager", item.host)  # fmt: skip
        op = uuid.uuid4().hex[:12]
        for order in orders:
            if await self._order(order, f"{item.trigger} on {item.host}: {item.reason}"):
                self._event(
                    "restarted", order.host, group=order.group,
                    reason=f"{self.strategy} after {item.trigger} on {item.host}",
                    detail={"scope": "group" if order.group else "host", "op": op,
                            "order": order.op, "trigger": item.trigger, "origin": item.host},
                )  # fmt: skip

    async def _order(self, order: Order, reason: str) -> bool:
        """Send one order; True once the host supervisor took it."""
        mesh = self.sup.mesh
        view = self.hosts.get(order.host)
        if mesh is None:
            return False
        cmd = TreeCommand(op=order.op, group=order.group, reason=reason,
                          by=self.sup.sup.name, id=uuid.uuid4().hex)  # fmt: skip
        subject = self.sup.subjects.tree_control(order.host)
        error = ""
        for _ in range(ORDER_TRIES):
            try:
                msg = await mesh.nc.request(subject, encode(cmd), timeout=ORDER_TIMEOUT)
                reply = decode_reply(msg.data)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                error = repr(exc)
                await asyncio.sleep(min(1.0, self.sup.interval))
                continue
            if reply.ok:
                self.orders[order.host] = self.orders.get(order.host, 0) + 1
                if view is not None:
                    view.note = f"{order.op} {order.group}".strip()
                return True
            error = reply.error
            break
        log.error("host supervisor %s did not take %s%s: %s", order.host, order.op,
                  f" {order.group}" if order.group else "", error)  # fmt: skip
        if view is not None:
            view.note = f"{order.op} refused: {error}"
        return False

    async def _escalate(self, item: _Item) -> None:
        """Past the root's intensity: stop every host supervisor, escalate, exit."""
        sup, s = self.sup, self.sup.sup
        self.escalated = True
        sup.failed = True
        sup.failed_reason = (
            f"more than {s.intensity} restarts of host supervisors within {s.period:g}s; "
            f"last: {item.trigger} on {item.host}: {item.reason}"
        )
        sup.escalations_total[""] = sup.escalations_total.get("", 0) + 1
        log.error("root %s failed: %s; stopping every host supervisor", s.name,
                  sup.failed_reason)  # fmt: skip
        live = [h for h, v in self.hosts.items() if v.state in ("running", "failed")]
        for host in reversed(live):
            await self._order(Order(host, "stop"), sup.failed_reason)
        await sup.escalator.escalate(
            self._make("escalated", item.host, group=item.group, reason=sup.failed_reason,
                       detail={"scope": "root", "strategy": self.strategy,
                               "intensity": str(s.intensity), "period": f"{s.period:g}",
                               "supervisor": s.name, "prefix": sup.options.prefix,
                               "trigger": item.trigger, "stopped": ",".join(live)})
        )  # fmt: skip
        self.request_exit(ESCALATED_EXIT)

    # -- events and the dashboard ---------------------------------------------------------

    def _make(self, kind: str, host: str, *, group: str = "", reason: str = "",
              detail: dict[str, str] | None = None) -> Event:  # fmt: skip
        # The root's children are host supervisors: `child` names the host.
        return Event(
            kind=kind, at=time.time(), source=self.sup.source, group=group, child=host,
            reason=reason, detail={"scope": "host", "host": host, **(detail or {})},
        )  # fmt: skip

    def _event(self, kind: str, host: str, *, group: str = "", reason: str = "",
               detail: dict[str, str] | None = None) -> None:  # fmt: skip
        self.sup.timeline.publish_soon(
            self._make(kind, host, group=group, reason=reason, detail=detail)
        )

    def view(self) -> dict[str, Any]:
        now = time.monotonic()
        s = self.sup.sup
        return {
            "role": self.role,
            "host": self.host,
            "strategy": self.strategy,
            "intensity": s.intensity,
            "period": s.period,
            "restarts_in_window": self.sup.window.count(now),
            "escalated": self.escalated,
            "hosts": [
                {
                    "host": host,
                    "supervisor": v.beat.supervisor,
                    "state": v.state,
                    "hb_age": round(max(0.0, now - v.last_seen), 3),
                    "pid": v.beat.pid,
                    "backend": v.beat.backend,
                    "dashboard": v.beat.dashboard,
                    "failed_reason": v.beat.failed_reason,
                    "intensity": v.beat.intensity,
                    "period": v.beat.period,
                    "restarts_in_window": v.beat.restarts_in_window,
                    "escalations": self.escalations.get(host, 0),
                    "orders": self.orders.get(host, 0),
                    "lost": v.lost,
                    "note": v.note,
                    "groups": msgspec.to_builtins(v.beat.groups),
                }
                for host, v in self.hosts.items()
            ],
        }


async def _respond(msg: Msg, reply: TreeReply) -> None:
    if not msg.reply:
        return
    try:
        await msg.respond(encode(reply))
    except asyncio.CancelledError:
        raise
    except Exception as exc:
        log.warning("cannot answer a host supervisor: %r", exc)
