"""Per-tool metrics of one worker: calls, errors by type, denials, approvals
pending and a duration histogram, in Prometheus (`ToolMetrics`, made by
`WorkerMetrics` for a worker that serves tools, and by `instrument_worker` for
the heartbeats alone); the same figures go in the worker's heartbeats
(`ToolStats`), which the supervisor's dashboard reads.

Per call, only plain counters move (a tool call is a message: a Prometheus
child's lock and label lookup would cost more than its handler); a collector
turns them into metric families when scraped.
"""

from __future__ import annotations

import bisect
import time
from collections.abc import Iterator
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

from .._interceptor import HandleMessage, MessageInput, Outcome, WorkerInterceptor
from .._wire import ToolStats
from ._metrics import DURATION_BUCKETS

if TYPE_CHECKING:
    from .._worker import Worker

__all__ = ["EXPIRED", "TOOL_BUCKETS", "ToolMetrics"]

#: Tool call durations, seconds: the handler-duration buckets (sub-millisecond to
#: long agent calls), so both histograms compare.
TOOL_BUCKETS = DURATION_BUCKETS
#: The error type of a call that expired before it ran.
EXPIRED = "DeadlineExceeded"


class _Figures:
    """One tool's counts since the worker started."""

    __slots__ = ("buckets", "calls", "denied", "errors", "seconds")

    def __init__(self) -> None:
        #: Calls admitted: run, or expired before they ran.
        self.calls = 0
        #: Failed or expired calls, by error type.
        self.errors: dict[str, int] = {}
        self.denied = 0
        #: Run times: counts per bucket of `TOOL_BUCKETS` (not cumulative), then +Inf.
        self.buckets = [0] * (len(TOOL_BUCKETS) + 1)
        self.seconds = 0.0


class ToolMetrics(WorkerInterceptor):
    """Per-tool metrics of one worker, in `registry`; it is the worker's interceptor
    and its heartbeats' source of `ToolStats` (`close()` undoes all three)."""

    #: The worker's other messages keep their unwrapped path (and batched commits).
    tools_only = True

    def __init__(self, worker: Worker, registry: CollectorRegistry) -> None:
        self.worker = worker
        self.registry = registry
        #: The worker's tools, by message tag: denied and expired messages are
        #: known only by their raw payload.
        self._by_tag = {
            tag: handler.tool.name
            for tag, handler in worker.spec.by_tag.items()
            if handler.tool is not None
        }
        self.tools = sorted(self._by_tag.values())
        self.figures = {name: _Figures() for name in self.tools}
        self._collector = _ToolCollector(self)
        registry.register(self._collector)
        worker.add_interceptor(self)
        worker.tool_stats = self.summary

    def close(self) -> None:
        self.worker.remove_interceptor(self)
        if self.worker.tool_stats == self.summary:
            self.worker.tool_stats = None
        try:
            self.registry.unregister(self._collector)
        except KeyError:
            pass

    # -- counting -----------------------------------------------------------------

    def intercept_message(self, next: HandleMessage) -> HandleMessage:
        figures = self.figures

        async def timed(input: MessageInput) -> BaseException | None:
            handler = input.handler
            tool = handler.tool if handler is not None else None
            if tool is None:
                return await next(input)
            started = time.perf_counter()
            error = await next(input)
            seconds = time.perf_counter() - started
            f = figures.get(tool.name)
            if f is not None:
                f.calls += 1
                f.seconds += seconds
                f.buckets[bisect.bisect_left(TOOL_BUCKETS, seconds)] += 1
                if error is not None:
                    kind = type(error).__name__
                    f.errors[kind] = f.errors.get(kind, 0) + 1
            return error

        return timed

    def outcome(
        self, worker: Worker, outcome: Outcome, input: MessageInput | None, seconds: float
    ) -> None:
        if input is None or outcome not in ("denied", "expired"):
            return
        tool = self._tool_of(input)
        if tool is None:
            return
        f = self.figures[tool]
        if outcome == "denied":
            f.denied += 1
        else:
            f.calls += 1
            f.errors[EXPIRED] = f.errors.get(EXPIRED, 0) + 1

    def _tool_of(self, input: MessageInput) -> str | None:
        handler = input.handler
        if handler is not None and handler.tool is not None:
            return handler.tool.name
        from ._metrics import _tag  # the same tag peek as the message counters

        try:
            tag = _tag.decode(input.msg.data).type
        except Exception:
            return None  # undecodable: not a call of any tool
        return self._by_tag.get(tag)

    # -- reading ------------------------------------------------------------------

    def pending(self, tool: str) -> int:
        return self.worker.mesh.tools.pending_approvals.get(tool, 0)

    def summary(self) -> list[ToolStats]:
        """What heartbeats carry: each tool's figures since the worker started."""
        return [
            ToolStats(
                tool=name,
                calls=f.calls,
                errors=sum(f.errors.values()),
                denied=f.denied,
                approvals_pending=self.pending(name),
                buckets=list(f.buckets),
                bounds=list(TOOL_BUCKETS),
            )
            for name, f in self.figures.items()
        ]


class _ToolCollector(Collector):
    """The metric families, from the counts, at scrape time."""

    def __init__(self, metrics: ToolMetrics) -> None:
        self._m = metrics

    def collect(self) -> Iterator[Metric]:
        m = self._m
        calls = CounterMetricFamily(
            "actormesh_tool_calls",
            "Tool calls this worker admitted, by tool: run (succeeded or failed), or "
            "expired before they ran.",
            labels=["tool"],
        )
        errors = CounterMetricFamily(
            "actormesh_tool_errors",
            "Tool calls that failed, by tool and error type (the exception's class; "
            f"{EXPIRED} for a call whose deadline passed before it ran).",
            labels=["tool", "error_type"],
        )
        denials = CounterMetricFamily(
            "actormesh_tool_denials",
            "Tool calls refused for want of a grant, by tool.",
            labels=["tool"],
        )
        duration = HistogramMetricFamily(
            "actormesh_tool_duration_seconds",
            "Tool call run time in the worker (handler and reply), by tool.",
            labels=["tool"],
        )
        pending = GaugeMetricFamily(
            "actormesh_tool_approvals_pending",
            "Tool calls waiting for an operator's approval now, by tool.",
            labels=["tool"],
        )
        for name, f in m.figures.items():
            calls.add_metric([name], f.calls)
            for kind, n in sorted(f.errors.items()):
                errors.add_metric([name, kind], n)
            denials.add_metric([name], f.denied)
            cumulative, below = [], 0
            for bound, n in zip((*TOOL_BUCKETS, float("inf")), f.buckets, strict=True):
                below += n
                cumulative.append((_le(bound), float(below)))
            duration.add_metric([name], cumulative, f.seconds)
            pending.add_metric([name], m.pending(name))
        yield from (calls, errors, denials, duration, pending)


def _le(bound: float) -> str:
    return "+Inf" if bound == float("inf") else repr(bound)
