"""No silent split: a keyed actor type served by two workers on one partition.

A keyed actor keeps each key's state in the memory of the one worker that
serves the key. Two workers sharing one consumer (an unpartitioned mailbox,
or one partition) get every other message of each key, and each builds its
own state from half of them. The config check refuses a mesh.toml that would
do this; `SplitWatch` reports a split that happens anyway (a worker started by
hand, another supervisor) from what the heartbeats say each worker serves.
"""

from __future__ import annotations

import asyncio
import importlib
import logging
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

from actormesh import Actor, Event
from actormesh.lowlevel import ChildSpec

from ._errors import SupervisorConfigError

if TYPE_CHECKING:
    # The config check runs from `_options`, which `_state` imports.
    from ._state import SupervisorState
    from ._timeline import Timeline

__all__ = ["Split", "SplitWatch", "check_child_split", "split_fix"]

log = logging.getLogger("actormesh.supervisor")

#: The event a detected split is recorded as.
SPLIT_DETECTED = "split_detected"


def split_fix(actor_type: str, workers: int) -> str:
    """The one-line fix an error, an event and the dashboard all name."""
    n = max(workers, 2)
    return (
        f"partition the mailbox of {actor_type} (MailboxConfig(partitions={n})) and run "
        f"replicas = {n}, one worker per partition; or run one worker"
    )


# -- the config check ---------------------------------------------------------------------


def check_child_split(child: ChildSpec) -> None:
    """Refuse replicas that would split a keyed actor's keys, or leave partitions unserved.

    Replica n is started with `--partition n-1`, so a partitioned mailbox needs
    exactly `partitions` replicas; an unpartitioned one serves a keyed actor
    from one worker only. Keyless actors scale with replicas as they are.
    """
    if not child.actor:
        return  # a `command` child: nothing to import; detection still covers it
    cls = _actor_class(child)
    if cls is None:
        return
    partitions = cls.mailbox.partitions
    if partitions > 1:
        if child.replicas != partitions:
            raise SupervisorConfigError(
                f"child {child.name!r}: the mailbox of {child.actor} has partitions = "
                f"{partitions}, one worker each (replica n serves partition n-1): set "
                f"replicas = {partitions}, not {child.replicas}"
            )
        return
    if child.replicas > 1 and not cls.keyless:
        raise SupervisorConfigError(
            f"child {child.name!r}: {child.actor} is a keyed actor on an unpartitioned "
            f"mailbox: {child.replicas} replicas would split each key's messages between "
            "workers, each keeping its own in-memory state. Set partitions = "
            f"{child.replicas} on its mailbox (MailboxConfig(partitions={child.replicas})) "
            f"with replicas = {child.replicas}, or run replicas = 1 "
            "(keyless actors scale with replicas as they are)"
        )


def _actor_class(child: ChildSpec) -> type[Actor] | None:
    module_name, _, attr = child.actor.partition(":")
    try:
        module = importlib.import_module(module_name)
    except Exception as exc:
        # The worker's environment (child env, image) may import what we cannot; the
        # worker reports its own import error, and heartbeats still show any split.
        log.warning("child %r: cannot import %s to check its replicas: %r",
                    child.name, child.actor, exc)  # fmt: skip
        return None
    cls = getattr(module, attr, None)
    if isinstance(cls, type) and issubclass(cls, Actor):
        return cls
    return None


# -- detection ----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Split:
    """Live workers of one keyed actor type serving one partition (-1: unpartitioned)."""

    actor_type: str
    partition: int
    workers: tuple[str, ...]
    #: Wall-clock time the split was first seen.
    since: float

    @property
    def fix(self) -> str:
        return split_fix(self.actor_type, len(self.workers))

    @property
    def where(self) -> str:
        if self.partition < 0:
            return f"the unpartitioned mailbox of {self.actor_type}"
        return f"partition {self.partition} of {self.actor_type}"

    def describe(self) -> str:
        return (
            f"keyed actor {self.actor_type} split: {len(self.workers)} workers "
            f"({', '.join(self.workers)}) serve {self.where}, so each key's messages "
            f"and state are split between them; {self.fix}"
        )


class SplitWatch:
    """Finds splits in the latest heartbeats; reports each once it has lasted.

    A split is reported once it has lasted `dead_after` (the heartbeats a dead
    worker may still seem live for): a crashed worker replaced under a new id
    overlaps its successor that long without serving anything.
    """

    def __init__(self, state: SupervisorState, timeline: Timeline) -> None:
        self.state = state
        self.timeline = timeline
        #: Candidate splits: the workers seen and since when (monotonic, wall clock).
        self._seen: dict[tuple[str, int], tuple[frozenset[str], float, float]] = {}
        #: Reported splits still present.
        self.splits: dict[tuple[str, int], Split] = {}
        self.detected_total = 0

    def serving(self, now: float) -> dict[tuple[str, int], frozenset[str]]:
        """(actor type, partition) -> the live running workers of keyed types, if several."""
        by_key: dict[tuple[str, int], set[str]] = {}
        dead_after = self.state.dead_after
        for worker_id, view in self.state.views.items():
            hb = view.hb
            if hb.keyed and hb.status == "running" and view.age(now) <= dead_after:
                by_key.setdefault((hb.actor_type, hb.partition), set()).add(worker_id)
        return {k: frozenset(v) for k, v in by_key.items() if len(v) > 1}

    def check(self, now: float) -> list[Split]:
        """Update the splits; return those newly reported."""
        current = self.serving(now)
        for key in [k for k in self._seen if k not in current]:
            del self._seen[key]
            gone = self.splits.pop(key, None)
            if gone is not None:
                log.info("split of %s ended: one worker serves it now", gone.where)
        new: list[Split] = []
        for key, ids in current.items():
            seen = self._seen.get(key)
            if seen is None or seen[0] != ids:
                self._seen[key] = seen = (ids, now, time.time())
            reported = self.splits.get(key)
            if now - seen[1] < self.state.dead_after or (
                reported is not None and ids <= frozenset(reported.workers)
            ):
                continue
            split = Split(key[0], key[1], tuple(sorted(ids)), seen[2])
            self.splits[key] = split
            new.append(split)
        for split in new:
            self._report(split)
        return new

    def _report(self, split: Split) -> None:
        self.detected_total += 1
        log.warning("%s", split.describe())
        self.timeline.publish_soon(
            Event(
                kind=SPLIT_DETECTED,
                at=time.time(),
                source=self.state.source,
                actor_type=split.actor_type,
                worker=split.workers[0],
                reason=split.describe(),
                detail={
                    "workers": ",".join(split.workers),
                    "partition": str(split.partition),
                    "fix": split.fix,
                },
            )
        )

    def workers_split(self) -> dict[str, Split]:
        """Each worker in a reported split, to its split (for the dashboard)."""
        return {w: s for s in self.splits.values() for w in s.workers}

    async def loop(self) -> None:
        while True:
            await asyncio.sleep(self.state.interval)
            self.check(time.monotonic())
