"""Per-tool figures for the dashboard, from the workers' heartbeats.

A worker with metrics on reports each of its tools in its heartbeat (calls,
errors, denials, approvals pending, and a run-time histogram since it started).
The dashboard shows their sum over the live workers of each tool: p50 and p99
come from the summed histogram, interpolated within a bucket as Prometheus'
`histogram_quantile` does.
"""

from __future__ import annotations

import time
from typing import Any

from actormesh import Heartbeat

from ._supervisor import Supervisor

__all__ = ["quantile", "tool_rows"]


class _Tool:
    __slots__ = ("bounds", "buckets", "calls", "denied", "errors", "pending", "workers")

    def __init__(self, bounds: list[float]) -> None:
        self.bounds = bounds
        self.buckets = [0] * (len(bounds) + 1)
        self.calls = self.errors = self.denied = self.pending = self.workers = 0


def quantile(q: float, buckets: list[int], bounds: list[float]) -> float | None:
    """The `q` quantile (seconds) of a histogram: per-bucket counts, the last +Inf."""
    total = sum(buckets)
    if not total:
        return None
    rank, below = q * total, 0
    for i, n in enumerate(buckets):
        if n and below + n >= rank:
            if i >= len(bounds):  # the +Inf bucket: its lower bound is all we know
                return bounds[-1] if bounds else None
            lower = bounds[i - 1] if i else 0.0
            return lower + (bounds[i] - lower) * (rank - below) / n
        below += n
    return bounds[-1] if bounds else None


def _merge(tools: dict[str, _Tool], hb: Heartbeat) -> None:
    for stats in hb.tools:
        tool = tools.get(stats.tool)
        if tool is None or tool.bounds != stats.bounds:
            if tool is not None and tool.calls:
                continue  # another bucket layout (another version): keep the first
            tool = tools[stats.tool] = _Tool(list(stats.bounds))
        tool.workers += 1
        tool.calls += stats.calls
        tool.errors += stats.errors
        tool.denied += stats.denied
        tool.pending += stats.approvals_pending
        if len(stats.buckets) == len(tool.buckets):
            tool.buckets = [a + b for a, b in zip(tool.buckets, stats.buckets, strict=True)]


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds * 1000, 3)


def tool_rows(sup: Supervisor) -> list[dict[str, Any]]:
    """One row per tool the live workers serve, by name."""
    now = time.monotonic()
    tools: dict[str, _Tool] = {}
    for view in sup.views.values():
        if view.age(now) <= sup.dead_after:
            _merge(tools, view.hb)
    return [
        {
            "tool": name,
            "workers": t.workers,
            "calls": t.calls,
            "errors": t.errors,
            "error_rate": round(t.errors / t.calls, 4) if t.calls else 0.0,
            "denied": t.denied,
            "approvals_pending": t.pending,
            "p50_ms": _ms(quantile(0.5, t.buckets, t.bounds)),
            "p99_ms": _ms(quantile(0.99, t.buckets, t.bounds)),
        }
        for name, t in sorted(tools.items())
    ]
