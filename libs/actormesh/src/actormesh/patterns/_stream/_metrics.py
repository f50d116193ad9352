"""Per-stage counters: the mutable tally a stage keeps and the snapshot it reports."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, TypeAlias

__all__ = ["StageKind", "StageMetrics", "Stats"]

#: What a stage does; also the default stem of its name ("map", "map-2", ...).
StageKind: TypeAlias = Literal[
    "source", "map", "filter", "batch", "window", "buffer", "rate_limit", "merge", "sink"
]


@dataclass(frozen=True, slots=True)
class StageMetrics:
    """A snapshot of one stage's counters. A batch counts as one unit after the batching stage."""

    name: str
    kind: StageKind
    #: Units the stage handled without error (for a filter: kept or not).
    processed: int
    #: Units lost to a full buffer (DROP_NEWEST / DROP_OLDEST).
    dropped: int
    #: Times the stage found its buffer full, waited on its rate limit,
    #: or paused on an open circuit.
    backpressure_events: int
    #: Units whose function (or sink call) failed for good.
    errors: int
    retries: int
    #: `ack()`/`nak()` calls that raised (the broker will redeliver those messages).
    ack_failures: int


class Stats:
    """The live counters of one stage in one pipeline run."""

    __slots__ = (
        "ack_failures",
        "backpressure_events",
        "dropped",
        "errors",
        "kind",
        "name",
        "processed",
        "retries",
    )

    def __init__(self, name: str, kind: StageKind) -> None:
        self.name = name
        self.kind: StageKind = kind
        self.processed = 0
        self.dropped = 0
        self.backpressure_events = 0
        self.errors = 0
        self.retries = 0
        self.ack_failures = 0

    def snapshot(self) -> StageMetrics:
        return StageMetrics(
            name=self.name,
            kind=self.kind,
            processed=self.processed,
            dropped=self.dropped,
            backpressure_events=self.backpressure_events,
            errors=self.errors,
            retries=self.retries,
            ack_failures=self.ack_failures,
        )
