"""Issue 16: a tool call against a plain ask to the same handler, same run.

One ``nats-server`` and one worker process serving ``bench.tool_actors:Adder``
(``python -m actormesh --prefix bench worker bench.tool_actors:Adder``: a
keyless actor, default settings, whose one handler ``add`` is a tool, so every
message to it, plain ask or tool call, is checked against the grants). The
driver (this process, one ``Mesh`` connection, uvloop when installed) grants
its principal ``bench`` the tool, waits until the worker answers, then measures
two ways of calling the same handler with the same principal:

- **ask**: ``mesh.ref("adder").ask(Add(n=i), headers={"Am-Principal": "bench"})``;
- **tool**: ``mesh.tools.call("adder.add", {"n": i}, principal="bench")``, which
  also looks up the spec (cached), validates the arguments against the input
  JSON Schema (``jsonschema``, Draft 2020-12), and adds the ``Am-Tool`` and
  ``Am-Tool-Call-Id`` headers.

Tracing and metrics are off in both processes. Latency: sequential calls, in
alternating blocks (ask, tool, ask, tool, ...) so that both kinds see the same
machine (ABBA: ask first in even rounds, the tool call first in odd ones);
p50 and p99 of every call of each kind. Throughput: calls kept in flight (64,
then 256), again alternating blocks (ABBA), the rate of each block; the figure
is the median block rate of each kind. The CPU time (user + system) of the
driver and of the worker process over the throughput blocks, per call, shows
where a difference comes from: on a busy machine the rates are noisy, the CPU
per call much less so. The ratios are
tool / ask (latency: at most 1.15 is the target; throughput: at least 0.9).

Run: ``python -m bench.bench_tools [--quick]`` or ``python -m bench --only tools``.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

from bench._proc import MeshWorker, run_loop, self_cpu

T = TypeVar("T")
PREFIX = "bench"
STREAM, DURABLE = "BENCH_MBOX_ADDER", "adder"
TOOL = "adder.add"
PRINCIPAL = "bench"
#: Target ratios (tool / ask) from the issue.
LATENCY_TARGET = 1.15
THROUGHPUT_TARGET = 0.9


def log(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def _pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


class _Cpu:
    """CPU seconds (user + system) of the driver and the worker, per kind of call."""

    def __init__(self, worker: MeshWorker) -> None:
        self.worker = worker
        self.driver: dict[str, float] = {"ask": 0.0, "tool": 0.0}
        self.served: dict[str, float] = {"ask": 0.0, "tool": 0.0}
        self.calls: dict[str, int] = {"ask": 0, "tool": 0}

    async def measure(self, kind: str, n: int, run: Awaitable[float]) -> float:
        d0, w0 = self_cpu(), self.worker.cpu()
        rate = await run
        self.driver[kind] += self_cpu() - d0
        self.served[kind] += self.worker.cpu() - w0
        self.calls[kind] += n
        return rate

    def per_call_us(self) -> dict[str, dict[str, float]]:
        return {
            kind: {
                "driver_cpu_us": self.driver[kind] / self.calls[kind] * 1e6,
                "worker_cpu_us": self.served[kind] / self.calls[kind] * 1e6,
            }
            for kind in self.calls
            if self.calls[kind]
        }


def _order(kinds: dict[str, T], r: int) -> list[tuple[str, T]]:
    """ABBA: ask first in even rounds, the tool call first in odd ones, so that a
    drift in the machine's load (other processes) favours neither."""
    items = list(kinds.items())
    return items if r % 2 == 0 else items[::-1]


async def _concurrent(n: int, in_flight: int, call: Callable[[int], Awaitable[Any]]) -> float:
    """Run `n` calls with `in_flight` lanes; returns calls per second."""
    counter = iter(range(n))

    async def lane() -> None:
        for i in counter:
            await call(i)

    t0 = time.perf_counter()
    await asyncio.gather(*(lane() for _ in range(min(in_flight, n))))
    return n / (time.perf_counter() - t0)


async def run(latency_n: int, rounds: int, throughput_n: int, widths: list[int]) -> dict[str, Any]:
    from actormesh import Mesh
    from actormesh.lowlevel import Hdr
    from actormesh.testing import NatsServer
    from bench.tool_actors import Add

    load_before = os.getloadavg()
    async with NatsServer() as server:
        mesh = await Mesh.connect(server.url, prefix=PREFIX)
        worker = MeshWorker("bench.tool_actors:Adder", server.url, Path(tempfile.mkdtemp()))
        worker.start()
        try:
            await mesh.tools.grants.grant(PRINCIPAL, TOOL)
            await worker.wait_pulling(mesh.js, STREAM, DURABLE)
            ref = mesh.ref("adder")
            headers = {Hdr.PRINCIPAL: PRINCIPAL}

            async def ask(i: int) -> Any:
                return await ref.ask(Add(n=i), headers=headers, reply_type=int)

            async def call(i: int) -> Any:
                return await mesh.tools.call(TOOL, {"n": i}, principal=PRINCIPAL)

            # Until the worker's live grants admit the principal (its watch).
            for _ in range(200):
                try:
                    await call(0)
                    break
                except Exception:
                    await asyncio.sleep(0.05)
            assert await ask(1) == 2 and await call(1) == 2
            kinds = {"ask": ask, "tool": call}
            for fn in kinds.values():  # warm-up
                await _concurrent(min(2_000, throughput_n), 64, fn)

            lat: dict[str, list[float]] = {"ask": [], "tool": []}
            block = max(1, latency_n // rounds)
            for r in range(rounds):
                for name, fn in _order(kinds, r):
                    for i in range(block):
                        t0 = time.perf_counter()
                        await fn(i)
                        lat[name].append(time.perf_counter() - t0)
                log(f"latency round {r + 1}/{rounds}: {block} sequential calls of each kind")

            rates: dict[int, dict[str, list[float]]] = {}
            cpu = _Cpu(worker)
            for width in widths:
                rates[width] = {"ask": [], "tool": []}
                per = max(width, throughput_n // rounds)
                for r in range(rounds):
                    for name, fn in _order(kinds, r):
                        rate = await cpu.measure(name, per, _concurrent(per, width, fn))
                        rates[width][name].append(rate)
                    log(
                        f"throughput {width} in flight, round {r + 1}/{rounds}: "
                        f"ask {rates[width]['ask'][-1]:,.0f}/s, "
                        f"tool {rates[width]['tool'][-1]:,.0f}/s"
                    )
        finally:
            await worker.stop()
            await mesh.close()
    latency = {
        name: {
            "calls": len(v),
            "p50_us": _pct(v, 0.5) * 1e6,
            "p99_us": _pct(v, 0.99) * 1e6,
        }
        for name, v in lat.items()
    }
    throughput = {
        str(width): {
            "ask_per_s": statistics.median(r["ask"]),
            "tool_per_s": statistics.median(r["tool"]),
            "ratio": statistics.median(r["tool"]) / statistics.median(r["ask"]),
            "blocks": len(r["ask"]),
            "calls_per_block": max(width, throughput_n // rounds),
        }
        for width, r in rates.items()
    }
    return {
        "latency": latency,
        "latency_p50_ratio": latency["tool"]["p50_us"] / latency["ask"]["p50_us"],
        "latency_p99_ratio": latency["tool"]["p99_us"] / latency["ask"]["p99_us"],
        "throughput": throughput,
        "cpu": cpu.per_call_us(),
        "rounds": rounds,
        "load_before": [round(x, 2) for x in load_before],
        "load_after": [round(x, 2) for x in os.getloadavg()],
    }


def render(r: dict[str, Any]) -> str:
    lat = r["latency"]
    p50, p99 = r["latency_p50_ratio"], r["latency_p99_ratio"]
    ok50 = "meets" if p50 <= LATENCY_TARGET else "misses"
    lines = [
        "Tool call (`mesh.tools.call`) against a plain ask to the same handler "
        "(`bench.tool_actors:Adder`), same run, same worker process.",
        "",
        "| sequential latency | calls | p50 us | p99 us |",
        "|---|--:|--:|--:|",
        f"| ask | {lat['ask']['calls']:,} | {lat['ask']['p50_us']:.0f} "
        f"| {lat['ask']['p99_us']:.0f} |",
        f"| tool call | {lat['tool']['calls']:,} | {lat['tool']['p50_us']:.0f} "
        f"| {lat['tool']['p99_us']:.0f} |",
        f"| ratio | | {p50:.3f} ({ok50} <= {LATENCY_TARGET}) | {p99:.3f} |",
        "",
        "| in flight | ask/s | tool calls/s | ratio |",
        "|--:|--:|--:|--:|",
    ]
    for width, t in r["throughput"].items():
        verdict = "meets" if t["ratio"] >= THROUGHPUT_TARGET else "misses"
        lines.append(
            f"| {width} | {t['ask_per_s']:,.0f} | {t['tool_per_s']:,.0f} "
            f"| {t['ratio']:.3f} ({verdict} >= {THROUGHPUT_TARGET}) |"
        )
    cpu = r["cpu"]
    lines += [
        "",
        "| CPU per call (throughput runs) | driver us | worker us |",
        "|---|--:|--:|",
    ]
    for kind in ("ask", "tool"):
        lines.append(
            f"| {kind} | {cpu[kind]['driver_cpu_us']:.1f} | {cpu[kind]['worker_cpu_us']:.1f} |"
        )
    lines += [
        "",
        f"Median of {r['rounds']} alternating blocks per kind. Load average before "
        f"{r['load_before']}, after {r['load_after']}.",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    p = argparse.ArgumentParser(prog="bench.bench_tools", description=__doc__)
    p.add_argument("--quick", action="store_true", help="10x fewer calls")
    p.add_argument("--rounds", type=int, default=8, help="alternating blocks per kind")
    args = p.parse_args(argv)
    scale = 10 if args.quick else 1
    started = time.monotonic()
    result = run_loop(run(5_000 // scale, args.rounds, 20_000 // scale, [64, 256]))
    result["name"] = "tools"
    result["seconds"] = round(time.monotonic() - started, 1)
    result["markdown"] = render(result)
    return dict(result)


if __name__ == "__main__":
    print(main(sys.argv[1:])["markdown"])
