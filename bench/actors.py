"""The actor the actormesh worker serves in the benchmark.

Run as ``python -m actormesh worker bench.actors:BenchSink``. The handlers do
no work beyond counting: what is measured is the mesh, not the handler.

End signal: every ``BENCH_STEP`` handled tells the worker publishes
``{"count": n, "t": unix_time}`` on the core NATS subject ``BENCH_PROGRESS``
(default ``bench.progress``) over a side connection opened on the first
message, so the driver learns exactly when the last message was handled. The
side connection is opened lazily: the idle-RSS figure does not include it.
"""

from __future__ import annotations

import json
import os
import time

import nats
from nats.aio.client import Client as NATS

from actormesh import Actor, MailboxConfig, Message

#: One mailbox setting for every contender: actormesh's defaults (10,000 messages,
#: 256 MiB, 1 MiB per message, 120 s duplicate window, file storage; see
#: bench_mesh.STREAM, which the baseline workers get on their command line).
BENCH_MAILBOX = MailboxConfig()


class Blob(Message):
    """A tell: its JSON encoding is padded to exactly 128 bytes by the driver."""

    data: str


class Ping(Message):
    """An ask: the reply is `n` back."""

    n: int = 0


class _Progress:
    """Counts handled tells and reports every `step` of them on core NATS."""

    def __init__(self) -> None:
        self.count = 0
        self.step = int(os.environ.get("BENCH_STEP", "1000"))
        self.subject = os.environ.get("BENCH_PROGRESS", "bench.progress")
        self.url = os.environ.get("BENCH_NATS_URL", "nats://127.0.0.1:4222")
        self.nc: NATS | None = None

    async def connect(self) -> None:
        if self.nc is None:
            self.nc = await nats.connect(self.url, name="bench-progress")

    async def hit(self) -> None:
        self.count += 1
        if self.count % self.step == 0 and self.nc is not None:
            body = json.dumps({"count": self.count, "t": time.time()}).encode()
            await self.nc.publish(self.subject, body)
            await self.nc.flush()


_progress = _Progress()


class BenchSink(Actor):
    """Counts tells (`Blob`) and echoes asks (`Ping`)."""

    actor_type = "benchsink"
    mailbox = BENCH_MAILBOX

    async def on_start(self) -> None:
        await _progress.connect()

    async def blob(self, msg: Blob) -> None:
        await _progress.hit()

    async def ping(self, msg: Ping) -> int:
        return msg.n


class SenderSink(Actor):
    """bench_sender's target: a mailbox that never fills (the sender is measured,
    not the drain), a handler that does nothing, and the same echo for asks."""

    actor_type = "sendersink"
    mailbox = MailboxConfig(max_msgs=1_000_000, max_bytes=1024 * 1024 * 1024)

    async def blob(self, msg: Blob) -> None:
        return None

    async def ping(self, msg: Ping) -> int:
        return msg.n
