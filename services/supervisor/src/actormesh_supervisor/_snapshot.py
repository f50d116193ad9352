"""The supervisor's state as plain JSON-able data: the dashboard, /api/state and
/metrics all read this one view."""

from __future__ import annotations

import time
from typing import Any

from ._lifecycle import lifecycle_of
from ._supervisor import Supervisor
from ._tools import tool_rows
from ._views import Slot, WorkerView

__all__ = ["health_of", "snapshot"]


def health_of(sup: Supervisor, slot: Slot | None, view: WorkerView | None, now: float) -> str:
    """One word an operator reads at a glance, and the dashboard colours."""
    if slot is not None and slot.state != "running":
        return slot.state
    if view is None:
        return "unknown"
    age = view.age(now)
    if age > sup.dead_after:
        return "lost"
    if view.hb.status in ("draining", "stopped", "escalated"):
        return view.hb.status
    if view.hb.loop_lag > sup.sup.loop_lag_warning:
        return "blocked"
    if age > 1.5 * sup.interval:
        return "late"
    return "ok"


def _worker(sup: Supervisor, worker_id: str, slot: Slot | None, now: float) -> dict[str, Any]:
    view = sup.views.get(worker_id)
    hb = view.hb if view is not None else None
    split = sup.splits.workers_split().get(worker_id)
    return {
        "id": worker_id,
        "group": slot.group if slot else "",
        "child": slot.child if slot else (hb.supervisor_child if hb else ""),
        "supervised": slot is not None,
        "state": slot.state if slot else "unsupervised",
        "health": health_of(sup, slot, view, now),
        "status": hb.status if hb else "",
        "actor_type": hb.actor_type if hb else "",
        "pid": (slot.pid if slot and slot.pid else None) or (hb.pid if hb else None),
        "host": hb.host if hb else "",
        "hb_age": round(view.age(now), 3) if view else None,
        "in_flight": hb.in_flight if hb else 0,
        "handled": hb.handled if hb else 0,
        "failed": hb.failed if hb else 0,
        "dead_lettered": hb.dead_lettered if hb else 0,
        "throughput": round(view.throughput(), 2) if view else 0.0,
        "loop_lag": round(hb.loop_lag, 4) if hb else 0.0,
        "instance_restarts": hb.restarts if hb else 0,
        "restarts": slot.restarts if slot else 0,
        "failures": slot.failures if slot else 0,
        "last_failure": slot.last_failure if slot else "",
        "last_failure_at": slot.last_failure_at if slot else 0.0,
        "adopted": slot.adopted if slot else False,
        "uptime": round(time.time() - hb.started_at, 1) if hb else 0.0,
        "version": hb.version if hb else "",
        "concurrency": hb.concurrency if hb else 0,
        "keyed": hb.keyed if hb else False,
        "partition": hb.partition if hb else -1,
        "instances": hb.instances if hb else 0,
        "passivated": hb.passivated if hb else 0,
        "parked": hb.parked if hb else 0,
        # Lifecycle: starting, running, paused (its type's consumer), draining, stopped.
        "paused": hb.paused if hb else False,
        "lifecycle": lifecycle_of(hb.status, hb.paused) if hb else "",
        # The other workers this one splits its keys with ([] when none).
        "split_with": [w for w in split.workers if w != worker_id] if split else [],
    }


def snapshot(sup: Supervisor) -> dict[str, Any]:
    now = time.monotonic()
    s = sup.sup
    workers = [_worker(sup, worker_id, slot, now) for worker_id, slot in _ordered(sup)]
    supervised = set(sup.slots)
    workers += [
        _worker(sup, worker_id, None, now)
        for worker_id in sorted(sup.views)
        if worker_id not in supervised
    ]
    groups = []
    for group in sup.groups.values():
        spec = group.spec
        groups.append(
            {
                "name": spec.name,
                "strategy": spec.strategy,
                "intensity": spec.intensity,
                "period": spec.period,
                "restarts_in_window": group.window.count(now),
                "status": "failed" if group.failed else ("restarting" if group.busy else "ok"),
                "failed_reason": group.failed_reason,
                "backoff": [spec.backoff_min, spec.backoff_max],
                "children": [
                    {
                        "name": child.name,
                        "run": child.actor or " ".join(child.command),
                        "restart": child.restart,
                        "replicas": child.replicas,
                        "shutdown_grace": child.shutdown_grace,
                        "workers": [x.worker_id for x in group.slots if x.child == child.name],
                    }
                    for child in spec.children
                ],
            }
        )
    mailboxes = []
    if sup.mailboxes is not None:
        for m in sorted(sup.mailboxes.views.values(), key=lambda m: m.actor_type):
            mailboxes.append(
                {
                    "actor_type": m.actor_type,
                    "stream": m.stream,
                    "exists": m.exists,
                    "depth": m.depth,
                    "pending": m.pending,
                    "ack_pending": m.ack_pending,
                    "redelivered": m.redelivered,
                    "dead_letters": m.dead_letters,
                    "consumers": m.consumers,
                    "stalled": m.stalled,
                    "paused": m.paused,
                    "stalled_for": round(m.stalled_for, 1),
                    "error": m.error,
                }
            )
    splits = [
        {
            "actor_type": x.actor_type,
            "partition": x.partition,
            "workers": list(x.workers),
            "since": x.since,
            "message": x.describe(),
            "fix": x.fix,
        }
        for x in sup.splits.splits.values()
    ]
    counts: dict[str, int] = {}
    for w in workers:
        counts[w["health"]] = counts.get(w["health"], 0) + 1
    return {
        "supervisor": {
            "name": s.name,
            "prefix": sup.options.prefix,
            "backend": sup.backend.name,
            "can_restart": sup.backend.can_restart,
            "status": "failed" if sup.failed else sup.status,
            "failed_reason": sup.failed_reason,
            "intensity": s.intensity,
            "period": s.period,
            "restarts_in_window": sup.window.count(now),
            "heartbeat_interval": s.heartbeat_interval,
            "heartbeat_misses": s.heartbeat_misses,
            "stall_after": s.stall_after,
            "loop_lag_warning": s.loop_lag_warning,
            "parent_prefix": s.parent_prefix,
            "host": sup.host,
            "started_at": sup.started_at,
            "connected": bool(sup.mesh is not None and sup.mesh.connected),
            "heartbeats": sup.heartbeats,
            # The dashboard turns trace ids into links with it ("" for none).
            "trace_url": s.trace_url,
            "now": time.time(),
        },
        "counts": counts,
        "groups": groups,
        "workers": workers,
        "mailboxes": mailboxes,
        "splits": splits,
        "tools": tool_rows(sup),
        "tree": sup.tree.view() if sup.tree is not None else None,
    }


def _ordered(sup: Supervisor) -> list[tuple[str, Slot]]:
    out = []
    for group in sup.groups.values():
        for child in group.spec.children:
            out += [(s.worker_id, s) for s in group.slots if s.child == child.name]
    return out
