"""Issue 14 item 3: what the actormesh sender costs per message, against raw nats-py
publishing the same headers.

One ``nats-server``, one actormesh worker process serving
``bench.actors:SenderSink`` (a mailbox of 1,000,000 messages, so nothing is
refused: the sender is measured, not the drain). In the driver process, side
by side and interleaved (actormesh, raw, actormesh, ...; ``--repeats``):

- ``tell``, sequential: ``await ref.tell(blob)`` against a raw core publish with
  a reply inbox and headers ``Nats-Msg-Id`` (unique) + ``Am-Sender``, awaiting
  the PubAck (`bench._clients.RawPublisher.tell_one`);
- ``tell``, 64 concurrent callers of the same;
- ``tell_many`` (window 1,024) against the raw pipelined publisher (1,024 PubAcks
  in flight, the same two headers);
- ``ask``, sequential and 64 concurrent: ``ref.ask(Ping(n=i))`` against a raw
  JetStream publish of the same ``Ping`` JSON with ``Am-Sender``,
  ``Am-Deadline`` and ``Am-Reply-To`` (an inbox), awaiting the PubAck and then
  the worker's reply, whose ``Am-Status`` is checked and body decoded.

The messages are 128-byte ``Blob`` JSON (tells) to key ``k1``. The figure is the
driver process's CPU (user + system) per message over the timed run, median of
the repetitions; the wall rate is beside it. Before each timed run a tenth of
it is sent as warm-up, and the worker has drained the mailbox.

Run: ``python -m bench.bench_sender [--quick] [--repeats N]`` or
``python -m bench --only sender``.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import msgspec
import nats

from bench._clients import MeshClient, RawPublisher, blob_payload
from bench._proc import MeshWorker, run_loop, self_cpu

NAME = "bench-sender"
SUBJECT = "bench.mbox.sendersink.k1"
STREAM, DURABLE = "BENCH_MBOX_SENDERSINK", "sendersink"
CONCURRENT = 64
#: (case, full count, how it runs: seq | conc | batch, tell or ask)
CASES = (
    ("tell, sequential", 5_000, "seq", "tell"),
    (f"tell, {CONCURRENT} concurrent", 20_000, "conc", "tell"),
    ("tell_many (window 1,024) / raw pipelined", 50_000, "batch", "tell"),
    ("ask, sequential", 2_000, "seq", "ask"),
    (f"ask, {CONCURRENT} concurrent", 10_000, "conc", "ask"),
)


def log(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


async def _concurrent(total: int, op: Callable[[int], Awaitable[None]]) -> None:
    counter = itertools.count()

    async def lane() -> None:
        while (i := next(counter)) < total:
            await op(i)

    await asyncio.gather(*(lane() for _ in range(min(CONCURRENT, total))))


class Contender:
    """One sender: how it tells, asks and pipelines."""

    def __init__(self, name: str, client: Any, tell_one: Any, ask: Any, batch: Any) -> None:
        self.name, self.client = name, client
        self.tell_one: Callable[[], Awaitable[None]] = tell_one
        self.ask: Callable[[int], Awaitable[None]] = ask
        self.batch: Callable[[int], Awaitable[None]] = batch

    async def run(self, how: str, op: str, n: int) -> None:
        if how == "batch":
            await self.batch(n)
            return
        one: Callable[[int], Awaitable[None]]
        if op == "tell":

            async def one(_: int) -> None:
                await self.tell_one()

        else:
            one = self.ask
        if how == "seq":
            for i in range(n):
                await one(i)
        else:
            await _concurrent(n, one)


def contenders() -> list[Contender]:
    from bench.actors import Ping, SenderSink

    mesh = MeshClient(SenderSink, "k1", name=NAME, count=False)
    encode, decode = msgspec.json.encode, msgspec.json.decode

    def ask_headers(inbox: str) -> dict[str, str]:
        deadline = str(int((time.time() + 30.0) * 1000))
        return {"Am-Sender": NAME, "Am-Deadline": deadline, "Am-Reply-To": inbox}

    raw = RawPublisher(
        SUBJECT,
        blob_payload(),
        headers={"Am-Sender": NAME},
        ask_payload=lambda i: encode(Ping(n=i)),
        ask_headers=ask_headers,
        echo=False,
    )

    async def raw_ask(i: int) -> None:
        got = await raw.request(i)
        # As actormesh does: no Am-Status (or "200") is a value; decode it.
        status = got.headers.get("Am-Status") if got.headers else None
        if (status is not None and status != "200") or decode(got.data, type=int) != i:
            raise RuntimeError(f"bad reply {got.headers} {got.data!r}")

    return [
        Contender("actormesh", mesh, mesh.tell_one, mesh.ask, mesh.tell),
        Contender("raw nats-py", raw, raw.tell_one, raw_ask, raw.tell),
    ]


async def run_all(scale: int, repeats: int) -> dict[str, Any]:
    from actormesh.testing import NatsServer

    results: dict[str, dict[str, list[tuple[float, float]]]] = {}
    async with NatsServer() as server:
        nc = await nats.connect(server.url, name="bench-control")
        js = nc.jetstream()
        worker = MeshWorker("bench.actors:SenderSink", server.url, Path(tempfile.mkdtemp()))
        worker.start()
        them = contenders()
        try:
            await worker.wait_pulling(js, STREAM, DURABLE)
            for c in them:
                await c.client.start(server.url)
            for rep in range(repeats):
                for case, full, how, op in CASES:
                    n = max(10, full // scale)
                    for c in them:
                        await worker.drained(js, STREAM, DURABLE, timeout=120.0)
                        await c.run(how, op, max(1, n // 10))  # warm-up
                        await worker.drained(js, STREAM, DURABLE, timeout=120.0)
                        cpu0, t0 = self_cpu(), time.perf_counter()
                        await c.run(how, op, n)
                        seconds, cpu = time.perf_counter() - t0, self_cpu() - cpu0
                        results.setdefault(case, {}).setdefault(c.name, []).append(
                            (cpu / n * 1e6, n / seconds)
                        )
                        log(
                            f"[sender {rep + 1}/{repeats}] {case}, {c.name}: {n:,} in "
                            f"{seconds:.2f}s = {n / seconds:,.0f}/s, {cpu / n * 1e6:.1f} us CPU/msg"
                        )
        finally:
            for c in them:
                await c.client.close()
            await worker.stop()
            await nc.close()
    return results


def render(results: dict[str, dict[str, list[tuple[float, float]]]], repeats: int) -> str:
    lines = [
        f"Sender CPU per message (driver process, user + system, us; median of {repeats}); "
        "headers Nats-Msg-Id + Am-Sender on tells, Am-Sender + Am-Deadline + Am-Reply-To "
        "on asks, for both.",
        "",
        "| case | actormesh us/msg | raw nats-py us/msg | actormesh / raw "
        "| actormesh msg/s | raw msg/s |",
        "|---|--:|--:|--:|--:|--:|",
    ]
    for case, by in results.items():
        am = statistics.median(v[0] for v in by["actormesh"])
        raw = statistics.median(v[0] for v in by["raw nats-py"])
        am_rate = statistics.median(v[1] for v in by["actormesh"])
        raw_rate = statistics.median(v[1] for v in by["raw nats-py"])
        lines.append(
            f"| {case} | {am:.1f} | {raw:.1f} | {am / raw:.2f}x "
            f"| {am_rate:,.0f} | {raw_rate:,.0f} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    p = argparse.ArgumentParser(prog="bench.bench_sender", description=__doc__)
    p.add_argument("--quick", action="store_true", help="10x smaller counts")
    p.add_argument("--repeats", type=int, default=3)
    args = p.parse_args(argv)
    started = time.monotonic()
    results = run_loop(run_all(10 if args.quick else 1, args.repeats))
    return {
        "name": "sender",
        "results": {
            case: {k: [list(v) for v in vs] for k, vs in by.items()} for case, by in results.items()
        },
        "seconds": round(time.monotonic() - started, 1),
        "markdown": render(results, args.repeats),
    }


if __name__ == "__main__":
    print(main(sys.argv[1:])["markdown"])
