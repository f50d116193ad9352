"""Chart series for the dashboard: per actor type and per worker, one point a second
over the last 15 minutes, sampled from the heartbeats and mailbox views the
supervisor already keeps.

Bounded memory, whatever the mesh does:

- every series is a `Ring` of `CAPACITY` (900) float64 points, one per second;
- an actor type has `len(TYPE_SERIES)` (6) series: handled/s, failures/s, mailbox
  depth, ack pending, p50 and p99 handler time; a worker has one (handled/s);
- at most `MAX_TYPES` (256) types and `MAX_WORKERS` (2,048) workers are kept; one
  not seen for a whole window is forgotten, and past the cap new ones are not charted.

So at most (256 * 6 + 2,048) * 900 * 8 bytes, about 26 MB; a mesh of 10 types and
50 workers takes about 0.8 MB.

Rates come from successive heartbeats (counter deltas over their `sent_at`), held
until the next heartbeat, so a worker heartbeating every 5 s draws a level line, not
a spike every fifth second. A type's p50 is its workers' p50 weighted by what they
handled, its p99 the worst of its workers' p99 (percentiles do not add up; this is
the honest bound a chart can show without the raw samples).
"""

from __future__ import annotations

import math
from array import array
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ._supervisor import Supervisor

__all__ = ["CAPACITY", "MAX_TYPES", "MAX_WORKERS", "TYPE_SERIES", "Ring", "SeriesStore"]

#: Points per series: 15 minutes at one second.
CAPACITY = 900
MAX_TYPES = 256
MAX_WORKERS = 2048
TYPE_SERIES = ("handled", "failures", "depth", "ack_pending", "p50", "p99")

_NAN = math.nan


class Ring:
    """The last `capacity` seconds of one value; seconds without a point read None."""

    __slots__ = ("_newest", "_values", "capacity")

    def __init__(self, capacity: int = CAPACITY) -> None:
        self.capacity = capacity
        self._values = array("d", [_NAN]) * capacity
        self._newest: int | None = None

    @property
    def newest(self) -> int | None:
        return self._newest

    def put(self, second: int, value: float) -> None:
        """Set the point of `second`; points older than the window are dropped, and
        seconds skipped since the newest point become gaps."""
        cap = self.capacity
        newest = self._newest
        if newest is None:
            newest = second
        elif second > newest:
            # Blank what the ring held for the skipped seconds (at most one lap).
            for s in range(newest + 1, min(second, newest + cap + 1)):
                self._values[s % cap] = _NAN
            newest = second
        elif second <= newest - cap:
            return
        self._newest = newest
        self._values[second % cap] = value

    def window(self, end: int, count: int) -> list[float | None]:
        """The points of seconds `end - count + 1 .. end`, None where there is none."""
        count = min(count, self.capacity)
        newest = self._newest
        out: list[float | None] = []
        for s in range(end - count + 1, end + 1):
            if newest is None or s > newest or s <= newest - self.capacity:
                out.append(None)
                continue
            v = self._values[s % self.capacity]
            out.append(None if math.isnan(v) else round(v, 6))
        return out


@dataclass
class _WorkerTrack:
    actor_type: str
    handled: Ring = field(default_factory=Ring)
    #: The heartbeat the rates were last computed from: (seq, incarnation, sent_at,
    #: handled, failed).
    last: tuple[int, tuple[int, float], float, int, int] | None = None
    rate: float = 0.0
    fail_rate: float = 0.0
    seen: int = 0


@dataclass
class _TypeTrack:
    rings: dict[str, Ring] = field(default_factory=lambda: {k: Ring() for k in TYPE_SERIES})
    seen: int = 0


class SeriesStore:
    """The dashboard's chart data; `sample()` once a second, `view()` for the API."""

    def __init__(self) -> None:
        self.types: dict[str, _TypeTrack] = {}
        self.workers: dict[str, _WorkerTrack] = {}
        self.newest: int | None = None

    def sample(self, sup: Supervisor, now_wall: float, now_mono: float) -> None:
        """Record second `int(now_wall)` from the supervisor's current view."""
        second = int(now_wall)
        sums: dict[str, list[float]] = {}  # type -> [handled/s, failures/s, p50 x n, n, p99]
        for worker_id, view in sup.views.items():
            if view.age(now_mono) > sup.dead_after:
                continue  # lost: no point, so the chart shows a gap, not a stale rate
            hb = view.hb
            track = self._worker(worker_id, hb.actor_type)
            if track is None:
                continue
            _advance(track, hb.seq, (hb.pid, hb.started_at), hb.sent_at, hb.handled, hb.failed)
            track.seen = second
            track.handled.put(second, track.rate)
            acc = sums.setdefault(hb.actor_type, [0.0, 0.0, 0.0, 0.0, 0.0])
            acc[0] += track.rate
            acc[1] += track.fail_rate
            if hb.handler_p50 > 0:
                weight = max(track.rate, 1e-3)
                acc[2] += hb.handler_p50 * weight
                acc[3] += weight
            acc[4] = max(acc[4], hb.handler_p99)
        mailboxes = sup.mailboxes.views if sup.mailboxes is not None else {}
        for actor_type in set(sums) | set(mailboxes):
            ttrack = self._type(actor_type)
            if ttrack is None:
                continue
            ttrack.seen = second
            rings = ttrack.rings
            got = sums.get(actor_type)
            if got is not None:
                rings["handled"].put(second, got[0])
                rings["failures"].put(second, got[1])
                rings["p50"].put(second, got[2] / got[3] if got[3] else 0.0)
                rings["p99"].put(second, got[4])
            mailbox = mailboxes.get(actor_type)
            if mailbox is not None and mailbox.exists:
                rings["depth"].put(second, float(mailbox.depth))
                rings["ack_pending"].put(second, float(mailbox.ack_pending))
        self.newest = second
        self._forget(second)

    def _worker(self, worker_id: str, actor_type: str) -> _WorkerTrack | None:
        track = self.workers.get(worker_id)
        if track is None:
            if len(self.workers) >= MAX_WORKERS:
                return None
            track = self.workers[worker_id] = _WorkerTrack(actor_type)
        track.actor_type = actor_type
        return track

    def _type(self, actor_type: str) -> _TypeTrack | None:
        track = self.types.get(actor_type)
        if track is None and len(self.types) < MAX_TYPES:
            track = self.types[actor_type] = _TypeTrack()
        return track

    def _forget(self, second: int) -> None:
        for name in [k for k, t in self.workers.items() if second - t.seen >= CAPACITY]:
            del self.workers[name]
        for name in [k for k, t in self.types.items() if second - t.seen >= CAPACITY]:
            del self.types[name]

    def view(self, *, seconds: int = CAPACITY, actor_type: str = "") -> dict[str, Any]:
        """The last `seconds` points of every series (of one type when given), as JSON
        data: `times` (unix seconds) and, per type and worker, lists aligned on it."""
        seconds = max(1, min(CAPACITY, seconds))
        end = self.newest if self.newest is not None else 0
        times = list(range(end - seconds + 1, end + 1)) if self.newest is not None else []
        types = {
            name: {k: ring.window(end, seconds) for k, ring in t.rings.items()}
            for name, t in sorted(self.types.items())
            if not actor_type or name == actor_type
        }
        workers = {
            name: {"actor_type": w.actor_type, "handled": w.handled.window(end, seconds)}
            for name, w in sorted(self.workers.items())
            if not actor_type or w.actor_type == actor_type
        }
        return {
            "step": 1,
            "capacity": CAPACITY,
            "times": times,
            "types": types if times else {},
            "workers": workers if times else {},
        }


def _advance(
    track: _WorkerTrack,
    seq: int,
    incarnation: tuple[int, float],
    sent_at: float,
    handled: int,
    failed: int,
) -> None:
    """Update a worker's rates from a heartbeat (a no-op until a newer one arrives)."""
    last = track.last
    if last is not None and last[0] == seq and last[1] == incarnation:
        return
    if last is not None and last[1] == incarnation and sent_at > last[2]:
        dt = sent_at - last[2]
        track.rate = max(0, handled - last[3]) / dt
        track.fail_rate = max(0, failed - last[4]) / dt
    else:
        track.rate = track.fail_rate = 0.0  # a first heartbeat, or a new incarnation
    track.last = (seq, incarnation, sent_at, handled, failed)
