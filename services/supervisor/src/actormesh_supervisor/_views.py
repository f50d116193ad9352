"""What the supervisor knows of each worker: the latest heartbeat (a `WorkerView`)
and, for the workers it supervises, a `Slot` (its place in a group)."""

from __future__ import annotations

import asyncio
from collections import deque
from dataclasses import dataclass, field
from typing import Literal

from actormesh import Heartbeat

__all__ = ["Slot", "SlotState", "WorkerView"]

#: A slot's life: pending until first started; starting until its first heartbeat;
#: running; stopping while terminated; dead once a failure is detected (until its
#: group acts on it); then stopped (not restarted), failed (its group or the
#: supervisor gave up) or drained (an operator drained it); or starting again.
SlotState = Literal[
    "pending", "starting", "running", "stopping", "dead", "stopped", "failed", "drained"
]

# Throughput is taken over this many successive heartbeats: long enough to smooth
# one late tick, short enough to follow a change within a few seconds.
_RATE_SAMPLES = 5


class WorkerView:
    """The latest heartbeat of one worker id, plus what successive ones tell."""

    __slots__ = (
        "_samples",
        "hb",
        "last_seen",
        "seen_count",
    )

    def __init__(self, hb: Heartbeat, now: float) -> None:
        self.hb = hb
        self.last_seen = now
        self.seen_count = 1
        self._samples: deque[tuple[float, int]] = deque(maxlen=_RATE_SAMPLES)
        self._samples.append((hb.sent_at or now, hb.handled))

    def update(self, hb: Heartbeat, now: float) -> None:
        if hb.pid != self.hb.pid or hb.started_at != self.hb.started_at:
            # A new incarnation under the same id: its counters start again.
            self._samples.clear()
        self.hb = hb
        self.last_seen = now
        self.seen_count += 1
        self._samples.append((hb.sent_at or now, hb.handled))

    def age(self, now: float) -> float:
        return max(0.0, now - self.last_seen)

    def throughput(self) -> float:
        """Messages handled per second over the last few heartbeats."""
        if len(self._samples) < 2:
            return 0.0
        (t0, h0), (t1, h1) = self._samples[0], self._samples[-1]
        if t1 <= t0 or h1 < h0:
            return 0.0
        return (h1 - h0) / (t1 - t0)

    @property
    def progress(self) -> int:
        """Messages this incarnation has finished with, one way or another."""
        return self.hb.handled + self.hb.failed + self.hb.dead_lettered


@dataclass(eq=False)
class Slot:
    """One supervised worker id: `<child>-<n>` for the process backend."""

    worker_id: str
    group: str
    child: str
    index: int
    state: SlotState = "pending"
    #: Bumped at every (re)launch: notices about an earlier incarnation are ignored.
    generation: int = 0
    pid: int | None = None
    launched_at: float = 0.0
    launched_wall: float = 0.0
    #: Supervisor restarts of this slot, and failures detected.
    restarts: int = 0
    failures: int = 0
    #: Consecutive restarts without `reset_after` seconds of quiet: drives backoff.
    backoff_level: int = 0
    last_failure: str = ""
    last_failure_at: float = 0.0
    adopted: bool = False
    drain_requested: bool = False
    #: Set once the current incarnation heartbeats, or fails: start order waits on it.
    settled: asyncio.Event = field(default_factory=asyncio.Event)

    @property
    def live(self) -> bool:
        return self.state in ("starting", "running")
