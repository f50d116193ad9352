"""The raw nats-py worker: the ceiling actormesh is measured against.

Pull fetch (batch 256) from a durable consumer, handle each message in turn,
ack each one. A message with a ``Reply-To`` header is a "durable request":
its payload is echoed to that inbox on core NATS before the ack. Every
``--step`` handled tells it publishes ``{"count": n, "t": unix_time}`` on
``--progress`` so the driver knows exactly when the last one was handled.

Run: ``python -m bench.raw_worker --url nats://... --stream RAW --subject raw.sink``.
It imports nothing but nats-py (and uvloop), so its RSS is the floor.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import signal
import time

import nats
import nats.errors
import nats.js.errors
from nats.js.api import (
    AckPolicy,
    ConsumerConfig,
    StreamConfig,
)

from bench._worker_args import stream_settings, worker_parser

REPLY_HEADER = "Reply-To"


def _parser() -> argparse.ArgumentParser:
    return worker_parser("bench.raw_worker", durable="raw")


async def run(args: argparse.Namespace) -> int:
    nc = await nats.connect(args.url, name="bench-raw-worker")
    js = nc.jetstream()
    stream = StreamConfig(**stream_settings(args))
    with contextlib.suppress(nats.js.errors.BadRequestError):
        await js.add_stream(stream)
    await js.add_consumer(
        args.stream,
        ConsumerConfig(
            durable_name=args.durable,
            ack_policy=AckPolicy.EXPLICIT,
            ack_wait=args.ack_wait,
            max_deliver=args.max_deliver,
            max_ack_pending=args.max_ack_pending,
        ),
    )
    psub = await js.pull_subscribe_bind(args.durable, args.stream)

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)

    count = 0
    step = args.step
    publish = nc.publish

    async def consume() -> None:
        nonlocal count
        while True:
            try:
                msgs = await psub.fetch(args.batch, timeout=5.0)
            except (TimeoutError, nats.errors.TimeoutError):
                continue
            for msg in msgs:
                headers = msg.headers
                if headers and REPLY_HEADER in headers:
                    await publish(headers[REPLY_HEADER], msg.data)
                else:
                    count += 1
                    if count % step == 0:
                        body = json.dumps({"count": count, "t": time.time()}).encode()
                        await publish(args.progress, body)
                        await nc.flush()
                await msg.ack()

    task = asyncio.create_task(consume())
    await stop.wait()
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
    with contextlib.suppress(Exception):
        await nc.drain()
    return 0


def main() -> int:
    args = _parser().parse_args()
    try:
        import uvloop
    except ImportError:
        return asyncio.run(run(args))
    return uvloop.run(run(args))


if __name__ == "__main__":
    raise SystemExit(main())
