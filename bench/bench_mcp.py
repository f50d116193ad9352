"""Issue 17: an MCP ``tools/call`` over streamable HTTP against a direct ask to
the same handler, same run.

Processes: one ``nats-server``; one worker serving ``bench.tool_actors:Adder``
(the keyless actor of ``bench_tools``, whose one handler ``add`` is a tool);
one MCP server, ``python -m actormesh --prefix bench mcp --http --port P
--tokens F`` (uvicorn, loopback, a tokens file mapping one bearer token to the
principal ``bench``); and the driver (this process, uvloop when installed). The
driver grants ``bench`` the tool ``adder.add``, waits until the worker pulls and
the MCP server listens, then measures two ways of calling the same handler as
the same principal:

- **ask**: ``mesh.ref("adder").ask(Add(n=i), headers={"Am-Principal": "bench"})``
  on the driver's own ``Mesh`` connection;
- **mcp**: ``client.call_tool("adder.add", {"n": i})`` through the official
  ``mcp`` SDK client (``mcp.Client`` over ``streamable_http_client``, one
  ``httpx2.AsyncClient`` with the bearer token, ``mode="legacy"``: the initialize
  handshake and an ``Mcp-Session-Id``, i.e. one ``ClientSession`` per client).
  The server answers it with ``mesh.tools.call`` (spec lookup, JSON Schema
  validation, the tool headers), so this path is HTTP + JSON-RPC + the MCP
  server + a tool call.

Latency: sequential calls on one session, in alternating blocks (ABBA: ask first
in even rounds, MCP first in odd ones); p50 and p99 of every call of each kind.
Throughput: 32 concurrent clients. For MCP, 32 ``Client`` sessions (each with
its own HTTP client and connection), one lane each; for ask, 32 lanes on the
one mesh connection. Alternating blocks (ABBA); the figure is the median block
rate. CPU time (user + system) over the throughput blocks, per call, of the
driver, the MCP server process and the worker.

Run: ``python -m bench.bench_mcp [--quick]`` or ``python -m bench --only mcp``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import secrets
import socket
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from bench._proc import MeshWorker, WorkerProcess, run_loop, self_cpu

PREFIX = "bench"
STREAM, DURABLE = "BENCH_MBOX_ADDER", "adder"
TOOL = "adder.add"
PRINCIPAL = "bench"
CLIENTS = 32
KINDS = ("ask", "mcp")


def log(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def _pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


class McpServer(WorkerProcess):
    """``python -m actormesh mcp --http`` as a child process."""

    def __init__(self, url: str, logdir: Path, token: str) -> None:
        self.port = _free_port()
        tokens = logdir / "tokens.toml"
        tokens.write_text(f'[tokens]\n"{token}" = "{PRINCIPAL}"\n')
        tokens.chmod(0o600)
        cmd = [sys.executable, "-m", "actormesh", "--nats-url", url, "--prefix", PREFIX]
        cmd += ["mcp", "--http", "--port", str(self.port), "--tokens", str(tokens)]
        super().__init__("mcp", cmd, {"ACTORMESH_LOG_LEVEL": "WARNING"}, logdir / "mcp.log")
        self.endpoint = f"http://127.0.0.1:{self.port}/mcp"

    async def listening(self, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not self.alive():
                raise RuntimeError(f"actormesh mcp exited at startup:\n{self.log_tail()}")
            try:
                _, writer = await asyncio.open_connection("127.0.0.1", self.port)
            except OSError:
                await asyncio.sleep(0.05)
                continue
            writer.close()
            await writer.wait_closed()
            return
        raise TimeoutError(f"actormesh mcp not listening after {timeout}s:\n{self.log_tail()}")


class _Cpu:
    """CPU seconds of the driver, the MCP server and the worker, per kind of call."""

    def __init__(self, procs: dict[str, WorkerProcess]) -> None:
        self.procs = procs
        self.used: dict[str, dict[str, float]] = {
            k: dict.fromkeys(["driver", *procs], 0.0) for k in KINDS
        }
        self.calls: dict[str, int] = dict.fromkeys(KINDS, 0)

    def _now(self) -> dict[str, float]:
        return {"driver": self_cpu()} | {n: p.cpu() for n, p in self.procs.items()}

    async def measure(self, kind: str, n: int, run: Awaitable[float]) -> float:
        before = self._now()
        rate = await run
        after = self._now()
        for name in after:
            self.used[kind][name] += after[name] - before[name]
        self.calls[kind] += n
        return rate

    def per_call_us(self) -> dict[str, dict[str, float]]:
        return {
            kind: {f"{n}_cpu_us": s / self.calls[kind] * 1e6 for n, s in self.used[kind].items()}
            for kind in KINDS
            if self.calls[kind]
        }


async def _lanes(n: int, lanes: list[Callable[[int], Awaitable[Any]]]) -> float:
    """Run `n` calls over the given lanes (one in flight each); returns calls/s."""
    counter = iter(range(n))

    async def lane(call: Callable[[int], Awaitable[Any]]) -> None:
        for i in counter:
            await call(i)

    t0 = time.perf_counter()
    await asyncio.gather(*(lane(c) for c in lanes))
    return n / (time.perf_counter() - t0)


async def _mcp_clients(
    stack: contextlib.AsyncExitStack, endpoint: str, token: str, n: int
) -> list[Callable[[int], Awaitable[Any]]]:
    """`n` MCP client sessions; a call function for each."""
    import httpx2
    from mcp import Client
    from mcp.client.streamable_http import streamable_http_client

    async def open_one() -> Callable[[int], Awaitable[Any]]:
        http = await stack.enter_async_context(
            httpx2.AsyncClient(headers={"Authorization": f"Bearer {token}"})
        )
        client = await stack.enter_async_context(
            Client(streamable_http_client(endpoint, http_client=http), mode="legacy")
        )

        async def call(i: int) -> Any:
            res = await client.call_tool(TOOL, {"n": i})
            if res.is_error:
                raise RuntimeError(f"MCP tool error: {res.content}")
            return res.structured_content["result"]

        return call

    return [await open_one() for _ in range(n)]


def _order(r: int) -> tuple[str, ...]:
    return KINDS if r % 2 == 0 else KINDS[::-1]


async def _until_admitted(call: Callable[[int], Awaitable[Any]]) -> None:
    """Until the worker's live grants admit the principal (its KV watch)."""
    for _ in range(200):
        try:
            await call(0)
            return
        except Exception:  # a denial until the grant arrives
            await asyncio.sleep(0.05)
    await call(0)


async def run(latency_n: int, rounds: int, throughput_n: int) -> dict[str, Any]:
    from actormesh import Mesh
    from actormesh.lowlevel import Hdr
    from actormesh.testing import NatsServer
    from bench.tool_actors import Add

    load_before = os.getloadavg()
    token = secrets.token_hex(16)
    logdir = Path(tempfile.mkdtemp(prefix="bench-mcp-"))
    async with NatsServer() as server, contextlib.AsyncExitStack() as stack:
        mesh = await Mesh.connect(server.url, prefix=PREFIX)
        worker = MeshWorker("bench.tool_actors:Adder", server.url, logdir)
        mcp = McpServer(server.url, logdir, token)
        worker.start()
        mcp.start()
        try:
            await mesh.tools.grants.grant(PRINCIPAL, TOOL)
            await worker.wait_pulling(mesh.js, STREAM, DURABLE)
            await mcp.listening()
            ref = mesh.ref("adder")
            headers = {Hdr.PRINCIPAL: PRINCIPAL}

            async def ask(i: int) -> Any:
                return await ref.ask(Add(n=i), headers=headers, reply_type=int)

            await _until_admitted(ask)
            clients = await _mcp_clients(stack, mcp.endpoint, token, CLIENTS)
            log(f"{CLIENTS} MCP sessions open on {mcp.endpoint}")
            if await ask(1) != 2 or await clients[0](1) != 2:
                raise RuntimeError("wrong answer from the Adder")
            lanes: dict[str, list[Callable[[int], Awaitable[Any]]]] = {
                "ask": [ask] * CLIENTS,
                "mcp": clients,
            }
            for kind in KINDS:  # warm-up
                await _lanes(min(1_000, throughput_n), lanes[kind])

            one = {"ask": ask, "mcp": clients[0]}
            lat: dict[str, list[float]] = {k: [] for k in KINDS}
            block = max(1, latency_n // rounds)
            for r in range(rounds):
                for kind in _order(r):
                    fn = one[kind]
                    for i in range(block):
                        t0 = time.perf_counter()
                        await fn(i)
                        lat[kind].append(time.perf_counter() - t0)
            log(f"latency: {rounds} rounds of {block} sequential calls of each kind")

            cpu = _Cpu({"mcp_server": mcp, "worker": worker})
            rates: dict[str, list[float]] = {k: [] for k in KINDS}
            per = max(CLIENTS, throughput_n // rounds)
            for r in range(rounds):
                for kind in _order(r):
                    rates[kind].append(await cpu.measure(kind, per, _lanes(per, lanes[kind])))
                log(
                    f"throughput {CLIENTS} clients, round {r + 1}/{rounds}: "
                    f"ask {rates['ask'][-1]:,.0f}/s, mcp {rates['mcp'][-1]:,.0f}/s"
                )
        finally:
            await stack.aclose()
            await mcp.stop()
            await worker.stop()
            await mesh.close()
    latency = {
        k: {"calls": len(v), "p50_us": _pct(v, 0.5) * 1e6, "p99_us": _pct(v, 0.99) * 1e6}
        for k, v in lat.items()
    }
    ask_rate, mcp_rate = statistics.median(rates["ask"]), statistics.median(rates["mcp"])
    return {
        "latency": latency,
        "latency_p50_ratio": latency["mcp"]["p50_us"] / latency["ask"]["p50_us"],
        "latency_p99_ratio": latency["mcp"]["p99_us"] / latency["ask"]["p99_us"],
        "latency_p50_overhead_us": latency["mcp"]["p50_us"] - latency["ask"]["p50_us"],
        "throughput": {
            "clients": CLIENTS,
            "ask_per_s": ask_rate,
            "mcp_per_s": mcp_rate,
            "ratio": mcp_rate / ask_rate,
            "blocks": len(rates["ask"]),
            "calls_per_block": per,
        },
        "cpu": cpu.per_call_us(),
        "rounds": rounds,
        "load_before": [round(x, 2) for x in load_before],
        "load_after": [round(x, 2) for x in os.getloadavg()],
    }


def render(r: dict[str, Any]) -> str:
    lat, t, cpu = r["latency"], r["throughput"], r["cpu"]
    lines = [
        "MCP `tools/call` over streamable HTTP (`actormesh mcp --http`, official `mcp` "
        "client) against a direct ask to the same handler (`bench.tool_actors:Adder`), "
        "same run, same worker process.",
        "",
        "| sequential latency | calls | p50 us | p99 us |",
        "|---|--:|--:|--:|",
    ]
    for kind, label in (("ask", "ask"), ("mcp", "MCP tools/call")):
        lines.append(
            f"| {label} | {lat[kind]['calls']:,} | {lat[kind]['p50_us']:.0f} "
            f"| {lat[kind]['p99_us']:.0f} |"
        )
    lines += [
        f"| ratio | | {r['latency_p50_ratio']:.2f} | {r['latency_p99_ratio']:.2f} |",
        "",
        f"| {t['clients']} concurrent clients | ask/s | MCP calls/s | ratio |",
        "|---|--:|--:|--:|",
        f"| median of {t['blocks']} blocks of {t['calls_per_block']:,} "
        f"| {t['ask_per_s']:,.0f} | {t['mcp_per_s']:,.0f} | {t['ratio']:.3f} |",
        "",
        "| CPU per call (throughput runs) | driver us | MCP server us | worker us |",
        "|---|--:|--:|--:|",
    ]
    for kind in KINDS:
        c = cpu[kind]
        lines.append(
            f"| {kind} | {c['driver_cpu_us']:.0f} | {c['mcp_server_cpu_us']:.0f} "
            f"| {c['worker_cpu_us']:.0f} |"
        )
    lines += [
        "",
        f"Alternating blocks (ABBA), {r['rounds']} rounds. Load average before "
        f"{r['load_before']}, after {r['load_after']}.",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    p = argparse.ArgumentParser(prog="bench.bench_mcp", description=__doc__)
    p.add_argument("--quick", action="store_true", help="10x fewer calls")
    p.add_argument("--rounds", type=int, default=6, help="alternating blocks per kind")
    args = p.parse_args(argv)
    scale = 10 if args.quick else 1
    started = time.monotonic()
    result = run_loop(run(3_000 // scale, args.rounds, 12_000 // scale))
    result["name"] = "mcp"
    result["seconds"] = round(time.monotonic() - started, 1)
    result["markdown"] = render(result)
    return dict(result)


if __name__ == "__main__":
    print(main(sys.argv[1:])["markdown"])
