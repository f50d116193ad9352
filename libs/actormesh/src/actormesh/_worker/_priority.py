"""Priority levels in the worker: a ready queue per level, and the pick rule.

With `MailboxConfig(priorities=True)` a mailbox takes `high` and `low` messages on
subjects of their own (`<prefix>.mbox.<type>.<level>.<key>`; normal ones keep
`<prefix>.mbox.<type>.<key>`), each level with its own durable consumer in the
same work-queue stream. One consumer delivers in stream order, so an urgent
message could never pass a backlog; a consumer per level lets the worker hold
each level's next messages at once and choose between them here.

The pick rule, each time a runner takes its next message (so within the
worker's concurrency): the highest level that has a message waiting, except
that a waiting level passed over `fairness` times in a row gets the pick (the
highest such level first). With every level busy and the default of 8, high
gets 8 picks in 10, normal 1 and low 1: no level starves, and a waiting level
is served within `fairness + 2` picks.

Keyed actors: a key's messages wait in its lane, higher levels ahead of lower
ones, in arrival order within a level: per-key order holds within a level, not
across levels. A key waits in the ready queue of its best waiting message's
level (a higher message arriving promotes it). A runner on a key goes on with
that key's lane, as without priorities, so an urgent message to another key
waits for a free runner (at most `concurrency` handlers are running).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from typing import Any

from nats.aio.msg import Msg

from .._subjects import KEYLESS, LEVELS, Subjects
from ._dispatch import Dispatcher

__all__ = ["LevelPick", "PriorityDispatcher", "level_bases"]

#: A ready entry: the key, and for a keyless actor its message (keyed: None, the
#: message is the head of the key's lane).
_Entry = tuple[str, Msg | None]
_NORMAL = LEVELS.index("normal")


def level_bases(subjects: Subjects, actor_type: str) -> tuple[str, ...]:
    """Each level's mailbox subject up to the key, in `LEVELS` order."""
    return tuple(
        subjects.mailbox_base(actor_type)
        if lv == "normal"
        else subjects.priority_base(actor_type, lv)
        for lv in LEVELS
    )


class LevelPick:
    """The pick rule over per-level counts of waiting work (no messages in it)."""

    __slots__ = ("fairness", "passed", "waiting")

    def __init__(self, levels: int, fairness: int) -> None:
        self.fairness = fairness
        #: Work waiting per level (0: highest).
        self.waiting = [0] * levels
        #: Picks each level was passed over while it waited, since its last pick.
        self.passed = [0] * levels

    def pick(self) -> int:
        """The level to serve next (some level must be waiting)."""
        waiting, passed = self.waiting, self.passed
        choice = -1
        for level, n in enumerate(waiting):
            if n:
                if passed[level] >= self.fairness:
                    choice = level  # passed over long enough: its turn
                    break
                if choice < 0:
                    choice = level
        # Passed over: the waiting levels below the choice (one above it had its
        # turn for fairness, which does not count against it).
        for level in range(choice + 1, len(waiting)):
            if waiting[level]:
                passed[level] += 1
        passed[choice] = 0
        return choice


class _Ready:
    """The dispatcher's ready work, by level: what `Dispatcher._run` pops from."""

    __slots__ = ("_keyed", "_lanes", "_pick", "_queues", "_waiting")

    def __init__(self, lanes: dict[str, deque[Msg]], *, keyed: bool, fairness: int) -> None:
        self._lanes = lanes
        self._keyed = keyed
        self._pick = LevelPick(len(LEVELS), fairness)
        self._queues: list[deque[_Entry]] = [deque() for _ in LEVELS]
        #: Keyed: each waiting key's level (its entry there is the live one; entries
        #: elsewhere are stale, skipped when popped).
        self._waiting: dict[str, int] = {}

    def __bool__(self) -> bool:
        return any(self._pick.waiting)

    def __len__(self) -> int:
        return sum(self._pick.waiting)

    def push(self, level: int, key: str, msg: Msg | None) -> None:
        """A keyless message, or a key (not waiting yet) with a message at `level`."""
        if self._keyed:
            self._waiting[key] = level
        self._pick.waiting[level] += 1
        self._queues[level].append((key, msg))

    def promote(self, level: int, key: str) -> None:
        """A message at `level` joined `key`'s lane: a key waiting at a lower level
        waits at this one (a running key is left to its runner)."""
        was = self._waiting.get(key)
        if was is None or was <= level:
            return
        counts = self._pick.waiting
        counts[was] -= 1  # the entry left behind there is stale now
        counts[level] += 1
        self._waiting[key] = level
        self._queues[level].append((key, None))

    def popleft(self) -> tuple[str, Msg]:
        level = self._pick.pick()
        queue = self._queues[level]
        self._pick.waiting[level] -= 1
        if not self._keyed:
            key, msg = queue.popleft()
            return key, msg  # type: ignore[return-value]  # keyless entries carry one
        waiting = self._waiting
        while True:
            key, _ = queue.popleft()
            if waiting.get(key) == level:
                del waiting[key]
                return key, self._lanes[key].popleft()


class PriorityDispatcher(Dispatcher):
    """A `Dispatcher` fed by one consumer per level (`on_msg(level)`)."""

    def __init__(self, *, bases: tuple[str, ...], fairness: int, **kwargs: Any) -> None:
        super().__init__(base=bases[_NORMAL], **kwargs)
        self._bases = bases
        self._levels = _Ready(self._lanes, keyed=not self._keyless, fairness=fairness)
        # `Dispatcher._run` pops from `_ready`; here it picks by level.
        self._ready = self._levels  # type: ignore[assignment]

    def level_of(self, msg: Msg) -> int:
        subject = msg.subject
        for level, base in enumerate(self._bases):
            # The normal base is a prefix of the others: it is what is left.
            if level != _NORMAL and subject.startswith(base):
                return level
        return _NORMAL

    def key_of(self, msg: Msg) -> str:
        subject = msg.subject
        base = self._bases[self.level_of(msg)]
        return subject[len(base) :] if subject.startswith(base) else KEYLESS

    def on_msg(self, level: int) -> Callable[[Msg], None]:
        """The callback of `level`'s consumer."""
        return lambda msg: self._arrive(level, msg)

    def dispatch(self, msg: Msg) -> None:
        self._arrive(self.level_of(msg), msg)

    def _arrive(self, level: int, msg: Msg) -> None:
        self._settler.hold(msg)
        if not self._accepting():
            self.spawn(self._settler.nak(msg, 0.0), "handback")
            return
        base = self._bases[level]
        subject = msg.subject
        key = subject[len(base) :] if subject.startswith(base) else KEYLESS
        if self._keyless:
            self._levels.push(level, key, msg)
        else:
            lane = self._lanes.get(key)
            if lane is None:
                self._lanes[key] = deque((msg,))
                self._levels.push(level, key, None)
            else:
                self._queue(lane, level, msg)
                self._levels.promote(level, key)
        if self._starting is None and self._runners < self._limit:
            self._start_runner()

    def _queue(self, lane: deque[Msg], level: int, msg: Msg) -> None:
        """Into `lane` after its messages of `level` or higher, before lower ones."""
        at = len(lane)
        while at and self.level_of(lane[at - 1]) > level:
            at -= 1
        lane.insert(at, msg)
