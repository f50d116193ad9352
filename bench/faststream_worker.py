"""The FastStream 0.7 worker: the peer framework actormesh is measured against.

A JetStream pull subscriber (``PullSub(batch_size=256)``, ``max_workers=1``:
FastStream's default and its best configuration here; durable consumer)
on a WorkQueue file stream with the same settings as the other contenders.
FastStream runs each fetched message as its own task and acks it after the
handler returns. The handler takes the body as ``bytes`` (FastStream's
cheapest path: no JSON decode). A message published with ``broker.request``
carries a ``reply_to`` header: the handler's return value is sent there, so
the same handler answers asks (its return value is ignored for tells).
Per-message logging is off (``logger=None``): the actormesh and raw workers
do not log per message either.

Every ``--step`` handled tells it publishes ``{"count": n, "t": unix_time}``
on core NATS ``--progress``.

Run: ``python -m bench.faststream_worker --url nats://... --stream FS --subject fs.sink``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time

from faststream import FastStream
from faststream.nats import JStream, NatsBroker, PullSub
from nats.js.api import AckPolicy, ConsumerConfig

from bench._worker_args import stream_settings, worker_parser

ASK_PREFIX = b"P"


def _parser() -> argparse.ArgumentParser:
    p = worker_parser("bench.faststream_worker", durable="fs")
    # 1 is FastStream's default and its best here (more workers only add tasks).
    p.add_argument("--max-workers", type=int, default=1)
    return p


def build(args: argparse.Namespace) -> FastStream:
    broker = NatsBroker(args.url, logger=None)
    stream = JStream(**stream_settings(args))
    state = {"count": 0}
    step = args.step

    @broker.subscriber(
        args.subject,
        stream=stream,
        durable=args.durable,
        pull_sub=PullSub(batch_size=args.batch),
        max_workers=args.max_workers,
        config=ConsumerConfig(
            ack_policy=AckPolicy.EXPLICIT,
            ack_wait=args.ack_wait,
            max_deliver=args.max_deliver,
            max_ack_pending=args.max_ack_pending,
        ),
    )
    async def handle(body: bytes) -> bytes | None:
        if body[:1] == ASK_PREFIX:
            return body
        state["count"] += 1
        n = state["count"]
        if n % step == 0:
            await broker.publish(json.dumps({"count": n, "t": time.time()}).encode(), args.progress)
        return None

    return FastStream(broker, logger=None)


def main() -> int:
    args = _parser().parse_args()
    app = build(args)
    try:
        import uvloop
    except ImportError:
        asyncio.run(app.run())
        return 0
    uvloop.run(app.run())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
