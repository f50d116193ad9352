"""Benchmark of actormesh.patterns against the obvious baselines.

1. Executor overhead: N no-op tasks at concurrency C through `TaskExecutor`
   (submit all, then await every handle) against bare `asyncio.create_task`
   under an `asyncio.Semaphore(C)` (then `gather`). Target: within 2x.
2. Stream throughput: map -> filter -> batch(100) -> async sink, in our
   `Stream` against the same pipeline in aiostream.

Each measurement runs `--repeat` times in a fresh event loop; the table shows
the median. Run: ``uv run python bench/bench_patterns.py [--json PATH]``.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
import platform
import statistics
import sys
import time
from collections.abc import AsyncIterator, Callable, Coroutine
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from aiostream import pipe
from aiostream import stream as astream

from actormesh.patterns import ExecutorConfig, Stream, TaskExecutor


@dataclass(frozen=True, slots=True)
class Result:
    name: str
    unit: str
    ours: float
    baseline: float
    baseline_name: str
    #: ours / baseline for costs (lower is better), ours / baseline for rates (higher is better).
    ratio: float
    target: str
    runs_ours: list[float]
    runs_baseline: list[float]


def progress(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def measure(label: str, run: Callable[[], Coroutine[Any, Any, float]], repeat: int) -> list[float]:
    """Seconds per run, each in a fresh loop, after one warm-up run."""
    asyncio.run(run())
    times: list[float] = []
    for i in range(repeat):
        gc.collect()
        times.append(asyncio.run(run()))
        progress(f"  {label}: run {i + 1}/{repeat}: {times[-1] * 1000:.1f} ms")
    return times


# -- 1. executor overhead ---------------------------------------------------------


async def _noop() -> None:
    return None


def executor_runs(
    tasks: int, concurrency: int
) -> tuple[Callable[[], Coroutine[Any, Any, float]], ...]:
    async def ours() -> float:
        executor = TaskExecutor(ExecutorConfig(max_concurrency=concurrency))
        start = time.perf_counter()
        handles = [await executor.submit(_noop) for _ in range(tasks)]
        for handle in handles:
            await handle
        elapsed = time.perf_counter() - start
        await executor.shutdown()
        return elapsed

    async def baseline() -> float:
        semaphore = asyncio.Semaphore(concurrency)

        async def limited() -> None:
            async with semaphore:
                await _noop()

        start = time.perf_counter()
        running = [asyncio.create_task(limited()) for _ in range(tasks)]
        await asyncio.gather(*running)
        return time.perf_counter() - start

    return ours, baseline


# -- 2. stream throughput -----------------------------------------------------------


async def _numbers(n: int) -> AsyncIterator[int]:
    for i in range(n):
        yield i


def _double(x: int) -> int:
    return x * 2


def _keep(x: int) -> bool:
    return x % 3 != 0


def stream_runs(items: int) -> tuple[Callable[[], Coroutine[Any, Any, float]], ...]:
    expected = sum(1 for i in range(items) if _keep(_double(i)))

    async def ours() -> float:
        received = 0

        async def sink(batch: list[int]) -> None:
            nonlocal received
            received += len(batch)

        start = time.perf_counter()
        await Stream(_numbers(items)).map(_double).filter(_keep).batch(100).run(sink)
        elapsed = time.perf_counter() - start
        assert received == expected
        return elapsed

    async def baseline() -> float:
        received = 0

        async def sink(batch: list[int]) -> None:
            nonlocal received
            received += len(batch)

        start = time.perf_counter()
        await (
            astream.iterate(_numbers(items))
            | pipe.map(_double)  # type: ignore[arg-type]  # aiostream's protocol wants *args
            | pipe.filter(_keep)
            | pipe.chunks(100)
            | pipe.action(sink)
        )
        elapsed = time.perf_counter() - start
        assert received == expected
        return elapsed

    return ours, baseline


# -- the report -----------------------------------------------------------------------


def machine() -> dict[str, Any]:
    info: dict[str, Any] = {
        "python": platform.python_version(),
        "implementation": platform.python_implementation(),
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "logical_cpus": os.cpu_count(),
    }
    try:
        import psutil  # type: ignore[import-untyped]

        info["physical_cpus"] = psutil.cpu_count(logical=False)
        info["memory_gib"] = round(psutil.virtual_memory().total / 2**30, 1)
        affinity = getattr(psutil.Process(), "cpu_affinity", None)
        if affinity is not None:
            info["usable_cpus"] = len(affinity())
    except ImportError:  # psutil is in the bench group only
        pass
    try:
        import uvloop  # noqa: F401

        info["event_loop"] = "asyncio (uvloop installed, not used)"
    except ImportError:
        info["event_loop"] = "asyncio"
    return info


def run(tasks: int, concurrency: int, items: int, repeat: int) -> list[Result]:
    results = []

    progress(f"executor: {tasks:,} no-op tasks at concurrency {concurrency}")
    ours_fn, base_fn = executor_runs(tasks, concurrency)
    ours = measure("TaskExecutor", ours_fn, repeat)
    base = measure("create_task+Semaphore", base_fn, repeat)
    ours_us = statistics.median(ours) / tasks * 1e6
    base_us = statistics.median(base) / tasks * 1e6
    results.append(
        Result(
            name=f"executor overhead ({tasks:,} no-op tasks, concurrency {concurrency})",
            unit="µs/task",
            ours=ours_us,
            baseline=base_us,
            baseline_name="asyncio.create_task + Semaphore",
            ratio=ours_us / base_us,
            target="<= 2.0x",
            runs_ours=ours,
            runs_baseline=base,
        )
    )

    progress(f"stream: {items:,} items through map -> filter -> batch(100) -> sink")
    ours_fn, base_fn = stream_runs(items)
    ours = measure("Stream", ours_fn, repeat)
    base = measure("aiostream", base_fn, repeat)
    ours_rate = items / statistics.median(ours)
    base_rate = items / statistics.median(base)
    results.append(
        Result(
            name=f"stream throughput ({items:,} items, map -> filter -> batch(100) -> sink)",
            unit="items/s",
            ours=ours_rate,
            baseline=base_rate,
            baseline_name="aiostream",
            ratio=ours_rate / base_rate,
            target="higher is better",
            runs_ours=ours,
            runs_baseline=base,
        )
    )
    return results


def table(results: list[Result]) -> str:
    rows = [("benchmark", "unit", "actormesh", "baseline", "ratio", "target")]
    for r in results:
        rows.append(
            (
                r.name,
                r.unit,
                f"{r.ours:,.2f}",
                f"{r.baseline:,.2f} ({r.baseline_name})",
                f"{r.ratio:.2f}x",
                r.target,
            )
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = [
        " | ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip()
        for row in rows
    ]
    lines.insert(1, "-+-".join("-" * w for w in widths))
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> list[Result]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--tasks", type=int, default=50_000)
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--items", type=int, default=200_000)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--json", type=Path, metavar="PATH", help="also write results as JSON")
    args = parser.parse_args(argv)

    info = machine()
    progress("machine: " + ", ".join(f"{k}={v}" for k, v in info.items()))
    results = run(args.tasks, args.concurrency, args.items, args.repeat)
    print(table(results))
    if args.json is not None:
        payload = {"machine": info, "results": [asdict(r) for r in results]}
        args.json.write_text(json.dumps(payload, indent=2) + "\n")
        progress(f"wrote {args.json}")
    return results


if __name__ == "__main__":
    main()
