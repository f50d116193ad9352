"""The raw nats-py workers: the ceiling actormesh is measured against.

Two ways to pull from the same durable consumer (``--pull``):

- ``continuous`` (the baseline): the technique ``actormesh._consumer`` uses, on
  nats-py's public API. One core subscription on an inbox; pull requests are
  core publishes to ``$JS.API.CONSUMER.MSG.NEXT.<stream>.<durable>`` with
  ``{"batch": n, "expires": ns, "idle_heartbeat": ns}`` and that inbox as reply
  subject. ``--batch`` messages are asked for at start; whenever half of them
  have arrived, the difference is asked for again, so the server always has an
  open request and never waits for us. Status messages end a request (404 no
  messages, 408 expired, 409 limits or consumer gone: its unused part is
  ``Nats-Pending-Messages``) or prove it alive (100 idle heartbeat); two silent
  heartbeat intervals mean the requests were lost and are asked again. Each
  message is handled in the subscription callback, then ``msg.ack()`` (a core
  publish, no wait for the server).
- ``fetch``: ``pull_subscribe_bind`` + ``fetch(--batch)`` in a loop, which asks
  again only after each batch (what the bench used as raw before issue 14).

A message with a ``Reply-To`` header is a "durable request": its payload is
echoed to that inbox on core NATS before the ack. Every ``--step`` handled
tells it publishes ``{"count": n, "t": unix_time}`` on ``--progress`` so the
driver knows exactly when the last one was handled.

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
from collections.abc import Awaitable, Callable

import nats
import nats.errors
import nats.js.errors
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from nats.js.api import AckPolicy, ConsumerConfig, StreamConfig

from bench._worker_args import stream_settings, worker_parser

REPLY_HEADER = "Reply-To"
EXPIRES = 30.0
IDLE_HEARTBEAT = 2.0


def _parser() -> argparse.ArgumentParser:
    p = worker_parser("bench.raw_worker", durable="raw")
    p.add_argument("--pull", choices=("continuous", "fetch"), default="continuous")
    return p


async def consume_continuous(
    nc: NATS,
    args: argparse.Namespace,
    handle: Callable[[Msg], Awaitable[None]],
    *,
    ack: bool = True,
) -> None:
    """A continuous pull: one open request, topped up as messages are handled.
    With `ack=False`, `handle` acks (bench.raw_state_worker's batched commits)."""
    inbox = nc.new_inbox()
    next_subject = f"$JS.API.CONSUMER.MSG.NEXT.{args.stream}.{args.durable}"
    capacity, low = args.batch, args.batch // 2
    requested = 0
    last = time.monotonic()
    wake = asyncio.Event()

    async def on_msg(msg: Msg) -> None:
        nonlocal requested, last
        last = time.monotonic()
        headers = msg.headers
        if headers and not msg.data and "Status" in headers:
            if headers["Status"] != "100":  # 404/408/409: this request is over
                unused = headers.get("Nats-Pending-Messages")
                requested = max(0, requested - int(unused)) if unused else 0
                wake.set()
            return
        if requested > 0:
            requested -= 1
        await handle(msg)
        if ack:
            await msg.ack()
        if requested <= low:
            wake.set()

    await nc.subscribe(inbox, cb=on_msg, pending_msgs_limit=-1, pending_bytes_limit=-1)
    expires_ns, hb_ns = int(EXPIRES * 1e9), int(IDLE_HEARTBEAT * 1e9)
    while True:
        if requested <= low:
            batch = capacity - requested
            requested = capacity
            req = {"batch": batch, "expires": expires_ns, "idle_heartbeat": hb_ns}
            await nc.publish(next_subject, json.dumps(req).encode(), reply=inbox)
        wake.clear()
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(IDLE_HEARTBEAT):
                await wake.wait()
        if time.monotonic() - last > 2.5 * IDLE_HEARTBEAT:
            requested, last = 0, time.monotonic()  # our requests are gone: ask again


async def consume_fetch(
    nc: NATS, args: argparse.Namespace, handle: Callable[[Msg], Awaitable[None]]
) -> None:
    psub = await nc.jetstream().pull_subscribe_bind(args.durable, args.stream)
    while True:
        try:
            msgs = await psub.fetch(args.batch, timeout=5.0)
        except (TimeoutError, nats.errors.TimeoutError):
            continue
        for msg in msgs:
            await handle(msg)
            await msg.ack()


async def run(args: argparse.Namespace) -> int:
    nc = await nats.connect(args.url, name="bench-raw-worker")
    js = nc.jetstream()
    with contextlib.suppress(nats.js.errors.BadRequestError):
        await js.add_stream(StreamConfig(**stream_settings(args)))
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
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)

    count = 0
    step = args.step
    publish = nc.publish

    async def handle(msg: Msg) -> None:
        nonlocal count
        headers = msg.headers
        if headers and REPLY_HEADER in headers:
            await publish(headers[REPLY_HEADER], msg.data)
            return
        count += 1
        if count % step == 0:
            await publish(args.progress, json.dumps({"count": count, "t": time.time()}).encode())
            await nc.flush()

    consume = consume_continuous if args.pull == "continuous" else consume_fetch
    task = asyncio.create_task(consume(nc, args, handle))
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
