"""The raw nats-py durable counter: bench_state's baseline.

The same work the actormesh durable counter does, written as the plain
per-message loop on nats-py's public API:

- pull: `bench.raw_worker.consume_continuous` (one open pull request on a core
  inbox, topped up as messages are handled; each message is handled in the
  subscription callback, one at a time, then acked);
- per message: the key is the subject's last token; the payload is decoded
  (``{"type":"Inc","by":1}``, stdlib json); the key's value and KV revision come
  from a dict, and on the key's first message from ``kv.get`` (no entry: 0 at
  revision 0); the new value is written as ``{"value": n}`` by a JetStream
  publish to ``$KV.<bucket>.<key>`` with ``Nats-Expected-Last-Subject-Sequence:
  <revision>`` (what ``kv.update(key, value, last=revision)`` sends), awaiting
  its PubAck (the new revision); a "wrong last sequence" refusal reloads the
  entry and applies the message again; then ``msg.ack()``.

So one write is in flight at a time: no pipelining across keys, no batching of
a key's queued messages, and no exactly-once bookkeeping (the actormesh entry
also lists the applied mailbox sequences). The bucket is created as actormesh
creates its state bucket (history 1, file storage, one replica).

``--commit batched`` (not the baseline: what actormesh does, by hand): the
subscription callback only queues a message on its key; a task per key with
queued messages takes all of them (at most 128), adds them up, writes once
with the expected revision, then acks them all; keys run side by side (as many
as the consumer's max_ack_pending lets in).

Run: ``python -m bench.raw_state_worker --url nats://... --stream RAW_STATE
--subject 'raw.state.*' --bucket RAW_STATE``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import signal

import nats
import nats.js.errors
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from nats.js.api import AckPolicy, ConsumerConfig, KeyValueConfig, StorageType, StreamConfig

from bench._worker_args import stream_settings, worker_parser
from bench.raw_worker import consume_continuous

EXPECTED_LAST = "Nats-Expected-Last-Subject-Sequence"
#: JetStream's "wrong last sequence" (the compare-and-set failed).
WRONG_LAST = 10071
#: The most messages of one key one batched write covers (actormesh's BATCH_MAX).
BATCH_MAX = 128


def _parser() -> argparse.ArgumentParser:
    p = worker_parser("bench.raw_state_worker", durable="raw")
    p.add_argument("--bucket", default="RAW_STATE")
    p.add_argument("--commit", choices=("per-message", "batched"), default="per-message")
    return p


class Counter:
    """The per-message work: load on first sight, compare-and-set, cache the revision."""

    def __init__(self, nc: NATS, kv: object, bucket: str, base: str) -> None:
        self.nc = nc
        self.kv = kv
        self.prefix = f"$KV.{bucket}."
        self.cut = len(base)
        #: key -> (revision, value) as last written or loaded.
        self.cache: dict[str, tuple[int, int]] = {}
        self.loads = 0
        self.conflicts = 0

    async def load(self, key: str) -> tuple[int, int]:
        self.loads += 1
        try:
            entry = await self.kv.get(key)  # type: ignore[attr-defined]
        except nats.js.errors.KeyNotFoundError:
            return 0, 0
        return int(entry.revision or 0), int(json.loads(entry.value)["value"])

    async def handle(self, msg: Msg) -> None:
        """Per message: add its `by` to the key's value, write, and return (then ack)."""
        await self.add(msg.subject[self.cut :], int(json.loads(msg.data)["by"]))

    async def add(self, key: str, by: int) -> None:
        """Write the key's value plus `by` with a compare-and-set; reload on conflict."""
        cached = self.cache.get(key)
        revision, value = cached if cached is not None else await self.load(key)
        while True:
            value += by
            reply = await self.nc.request(
                self.prefix + key,
                b'{"value":%d}' % value,
                timeout=10.0,
                headers={EXPECTED_LAST: str(revision)},
            )
            ack = json.loads(reply.data)
            error = ack.get("error")
            if error is None:
                self.cache[key] = (int(ack["seq"]), value)
                return
            if error.get("err_code") != WRONG_LAST:
                raise RuntimeError(f"KV write refused: {ack}")
            self.conflicts += 1
            revision, value = await self.load(key)


class Batched(Counter):
    """Queue per key; one write for all of a key's queued messages, then ack them."""

    def __init__(self, nc: NATS, kv: object, bucket: str, base: str) -> None:
        super().__init__(nc, kv, bucket, base)
        self.queues: dict[str, list[Msg]] = {}
        self.tasks: set[asyncio.Task[None]] = set()

    async def handle(self, msg: Msg) -> None:
        key = msg.subject[self.cut :]
        queue = self.queues.get(key)
        if queue is not None:
            queue.append(msg)
            return
        self.queues[key] = [msg]
        task = asyncio.get_running_loop().create_task(self.run(key))
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    async def run(self, key: str) -> None:
        queue = self.queues[key]
        try:
            while queue:
                batch = queue[:BATCH_MAX]
                del queue[:BATCH_MAX]
                await self.add(key, sum(int(json.loads(m.data)["by"]) for m in batch))
                for m in batch:
                    await m.ack()
        finally:
            # Unacked messages (a failed write) come back after ack_wait.
            del self.queues[key]


async def run(args: argparse.Namespace) -> int:
    nc = await nats.connect(args.url, name="bench-raw-state-worker")
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
    try:
        kv = await js.key_value(args.bucket)
    except nats.js.errors.BucketNotFoundError:
        kv = await js.create_key_value(
            KeyValueConfig(bucket=args.bucket, history=1, storage=StorageType.FILE, replicas=1)
        )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    make = Batched if args.commit == "batched" else Counter
    counter = make(nc, kv, args.bucket, args.subject.rstrip("*>"))
    task = asyncio.create_task(
        consume_continuous(nc, args, counter.handle, ack=args.commit == "per-message")
    )
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
