"""Durable actor state: one JetStream KV bucket per actor type, one entry per key.

An actor declares its state by annotating `state` with a msgspec Struct::

    class Counter(Actor):
        state: CounterState

The worker loads a key's entry when the key activates, and after a handler
that changed the state returns, writes it back with a compare-and-set on the
revision it was loaded at (`Nats-Expected-Last-Subject-Sequence`), before the
message is acked. A conflict (another process wrote the key) reloads the entry
and applies the message again: no update is ever lost.

Exactly-once effect. The entry (`StateEnvelope`) also says which mailbox
messages it already contains: every message at or below `floor` (the mailbox
consumer's ack floor, which no message below it will ever be delivered again
from), and the stream sequences in `applied` above it. A delivered message
found there is acked without running again. An exact set (rather than only the
highest sequence applied) is what keeps this true when a failed message comes
back after later messages of its key were applied, and when two workers
(wrongly) share one key. The set stays small: a message only needs listing
until the server has its ack, so each commit drops the messages whose acks were
sent before the previous commit was published (that commit's PubAck proves the
server read them: one connection, read in order; not so on a replicated
mailbox, where the consumer's leader may die before it replicates an ack the
server took), and what fell under the consumer's ack floor
(`StateStore.floor_loop` reads it every second; it covers another worker's
messages). What stays are messages applied by a worker that
died before acking them, until they come back. The set is capped at
`APPLIED_MAX` entries (the oldest go first).

One message stored twice. A sender that lost a PubAck sends again under the
same `Nats-Msg-Id`, and the stream's duplicate window drops the copy; on a
replicated mailbox, across a leader change, nats-server has been seen to store
both (two sequences, one id: nats-io/nats-server#7801 is an open report of the
like). Sequences cannot tell those apart, so the store also remembers, in
memory, the ids of the messages it applied within the duplicate window
(`RecentIds`, on a replicated mailbox only): a copy of one of them under
another sequence is acked without running. In memory, not in the entry,
because an id list covering the window would make every commit of a hot key
tens of kilobytes; so this holds while the worker that applied the first copy
runs (a restart between the two copies, or two workers sharing a key without
partitions, can still apply both), and for the last `RECENT_IDS_MAX` ids.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import time
from collections import OrderedDict
from typing import TYPE_CHECKING, Any

import msgspec
import nats.errors
import nats.js.errors
from nats.js.api import KeyValueConfig, StorageType

from ._buckets import key_value
from ._errors import ActorMeshError, BrokerUnavailable, StateConflict

if TYPE_CHECKING:
    from nats.js.kv import KeyValue

    from ._config import MailboxConfig
    from ._mesh import Mesh

__all__ = [
    "APPLIED_MAX",
    "RECENT_IDS_MAX",
    "STATE_ATTR",
    "RecentIds",
    "StateEnvelope",
    "StateSlot",
    "StateStore",
    "kv_key",
    "state_type_of",
]

log = logging.getLogger("actormesh.state")

#: The most sequences an entry lists above its floor.
APPLIED_MAX = 8192
#: The most message ids a store of a replicated mailbox remembers (`RecentIds`):
#: about 280 bytes each, 14 MB at most.
RECENT_IDS_MAX = 50_000
#: The instance attribute an actor declares its state as (`state: CounterState`).
STATE_ATTR = "state"
#: The header that makes a KV write a compare-and-set (JetStream's).
EXPECTED_LAST = "Nats-Expected-Last-Subject-Sequence"


class StateEnvelope(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """What the state bucket holds for one key."""

    #: The actor's state, encoded as JSON.
    state: msgspec.Raw
    #: Every mailbox message at or below this stream sequence is settled.
    floor: int = 0
    #: Stream sequences above `floor` whose effect `state` contains (ascending).
    applied: list[int] = msgspec.field(default_factory=list)


_envelope = msgspec.json.Decoder(StateEnvelope)
_encoder = msgspec.json.Encoder()


class StateSlot:
    """A live key's view of its entry: what it was loaded (or last written) at."""

    __slots__ = ("acked", "applied", "confirmed", "floor", "raw", "reconnects", "revision")

    def __init__(self, revision: int, floor: int, applied: list[int], raw: bytes) -> None:
        #: The entry's revision (0: no entry yet): the compare-and-set expects it.
        self.revision = revision
        self.floor = floor
        self.applied = applied
        #: The state as stored, to tell whether a handler changed it.
        self.raw = raw
        #: Sequences acked here since the last commit was published.
        self.acked: list[int] = []
        #: Sequences acked before the last commit was published: the server had
        #: those acks when that commit's PubAck came back (one connection, in order).
        self.confirmed: list[int] = []
        #: The connection's reconnect count at the last commit (acks in flight at a
        #: reconnect may be lost: then nothing counts as confirmed).
        self.reconnects = -1

    def contains(self, seq: int) -> bool:
        """Whether the message at stream sequence `seq` is already in the state."""
        return seq <= self.floor or seq in self.applied


class RecentIds:
    """The ids of the messages applied within the last `window` seconds (at most
    `cap`, the oldest forgotten first; none with `cap` 0), with the key and stream
    sequence of each."""

    __slots__ = ("_cap", "_ids", "_window", "stored_twice")

    def __init__(self, window: float, cap: int = RECENT_IDS_MAX) -> None:
        self._window = window
        self._cap = cap
        self._ids: OrderedDict[str, tuple[str, int, float]] = OrderedDict()
        #: Copies found stored under a second sequence (and not run).
        self.stored_twice = 0

    def remember(self, msg_id: str | None, key: str, seq: int) -> None:
        if not msg_id or seq <= 0 or not self._cap:
            return
        now = time.monotonic()
        ids = self._ids
        ids[msg_id] = (key, seq, now)
        ids.move_to_end(msg_id)
        horizon = now - self._window
        while ids:
            oldest = next(iter(ids.values()))
            if len(ids) <= self._cap and oldest[2] >= horizon:
                break
            ids.popitem(last=False)

    def copy_of_applied(self, msg_id: str | None, key: str, seq: int) -> int | None:
        """The sequence an earlier copy of this message was applied from, if the
        message (same id, same key, another sequence) was applied already."""
        if not msg_id:
            return None
        seen = self._ids.get(msg_id)
        if seen is None or seen[0] != key or seen[1] == seq:
            return None
        if seen[2] < time.monotonic() - self._window:
            return None
        self.stored_twice += 1
        log.warning(
            "message %s to key %r was stored twice by the broker (sequences %d and %d): "
            "applied once, from %d",
            msg_id, key, seen[1], seq, seen[1],
        )  # fmt: skip
        return seen[1]

    def __len__(self) -> int:
        return len(self._ids)


def state_type_of(cls: type) -> type[msgspec.Struct] | None:
    """The Struct an actor class declares as `state: T`, or None."""
    import typing

    hints = typing.get_type_hints(cls)
    declared = hints.get(STATE_ATTR)
    if declared is None:
        return None
    if not (isinstance(declared, type) and issubclass(declared, msgspec.Struct)):
        from ._errors import ConfigError

        raise ConfigError(
            f"{cls.__name__}.state is annotated {declared!r}: durable state must be a "
            "msgspec.Struct (class CounterState(msgspec.Struct): n: int = 0)"
        )
    try:
        declared()
    except TypeError as exc:
        from ._errors import ConfigError

        raise ConfigError(
            f"{cls.__name__}.state: {declared.__name__}() must work with no arguments "
            f"(give every field a default): it is a new key's state ({exc})"
        ) from exc
    return declared


#: Characters an actor key may hold that a KV key may not, and their escapes ("=" is
#: the escape character, so it is escaped too): the mapping is reversible.
_ESCAPES = {"=": "=3D", ":": "=3A", "@": "=40", "+": "=2B"}
_ESCAPE_RE = re.compile("[=:@+]")


def kv_key(key: str) -> str:
    """The KV key of an actor key."""
    return _ESCAPE_RE.sub(lambda m: _ESCAPES[m.group(0)], key)


class StateStore:
    """One actor type's bucket: load, compare-and-set, and the ack floor."""

    def __init__(
        self,
        mesh: Mesh,
        *,
        actor_type: str,
        state_type: type[msgspec.Struct],
        mailbox: MailboxConfig,
        stream: str,
        durable: str,
    ) -> None:
        self._mesh = mesh
        self.actor_type = actor_type
        self.bucket = mesh.subjects.state_bucket(actor_type)
        self._subject = f"$KV.{self.bucket}."
        self._mailbox = mailbox
        self._decoder = msgspec.json.Decoder(state_type)
        self._state_type = state_type
        self._stream = stream
        self._durable = durable
        self._kv: KeyValue | None = None
        #: Ids of the messages applied lately (copies stored twice are not run): kept
        #: on a replicated mailbox only (`ensure`), where a leader change can store
        #: a resend twice.
        self.recent = RecentIds(mailbox.duplicate_window, cap=0)
        #: The mailbox consumer's ack floor, as last read.
        self.ack_floor = 0
        self.loads = 0
        self.commits = 0
        self.conflicts = 0
        #: Whether a commit's PubAck confirms the acks sent before it (one server).
        self._confirms = True

    async def ensure(self) -> None:
        """Create the bucket (replicas, placement and storage as the mailbox's, else
        the mesh's) or bind to it."""
        from ._mailbox import placement

        mailbox = self._mesh.replication.mailbox(self._mailbox)
        self._confirms = (mailbox.replicas or 1) == 1
        if not self._confirms:
            self.recent = RecentIds(mailbox.duplicate_window)
        storage = StorageType.MEMORY if mailbox.storage == "memory" else StorageType.FILE
        config = KeyValueConfig(
            bucket=self.bucket,
            history=1,
            storage=storage,
            replicas=mailbox.replicas or 1,
            placement=placement(mailbox.placement_tags),
            description=f"actormesh: durable state of {self.actor_type}",
        )
        self._kv = await key_value(self._mesh.js, config)

    def new_state(self) -> Any:
        return self._state_type()

    async def load(self, key: str) -> tuple[Any, StateSlot]:
        """The key's state and slot; a key never written gets a new state."""
        kv = self._kv
        if kv is None:
            raise ActorMeshError(f"state bucket {self.bucket} used before ensure()")
        self.loads += 1
        try:
            entry = await self._get(kv, kv_key(key))
        except nats.js.errors.KeyNotFoundError as exc:
            # Deleted or purged: the marker's revision is what a write must expect.
            marker = getattr(exc, "entry", None)
            revision = getattr(marker, "revision", None) or 0
            state = self.new_state()
            return state, StateSlot(revision, self.ack_floor, [], _encoder.encode(state))
        envelope = _envelope.decode(entry.value or b"")
        raw = bytes(envelope.state)
        state = self._decoder.decode(raw)
        return state, StateSlot(entry.revision or 0, envelope.floor, envelope.applied, raw)

    async def _get(self, kv: KeyValue, key: str) -> Any:
        """`kv.get(key)`, tried again while the bucket has no leader (a cluster's
        election) for up to the mesh's publish timeout; then `BrokerUnavailable`
        (which the worker answers with a redelivery, not as the key's failure)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._mesh.publish_timeout
        delay = 0.05
        while True:
            try:
                return await kv.get(key)
            except (TimeoutError, nats.errors.TimeoutError, nats.errors.NoRespondersError,
                    nats.js.errors.ServiceUnavailableError) as exc:  # fmt: skip
                if loop.time() + delay >= deadline:
                    raise BrokerUnavailable(
                        f"cannot read the state of {key!r} from {self.bucket}: {exc!r}",
                        reason="no_responders",
                        subject=f"$KV.{self.bucket}.{key}",
                    ) from exc
            await asyncio.sleep(delay)
            delay = min(delay * 2, 0.5)

    def changed(self, slot: StateSlot, state: Any) -> bytes | None:
        """The state's encoding if it differs from what the slot holds, else None."""
        return self.changed_from(slot.raw, state)

    def changed_from(self, raw: bytes, state: Any) -> bytes | None:
        """The state's encoding if it differs from `raw`, else None."""
        new = _encoder.encode(state)
        return None if new == raw else new

    def decode(self, raw: bytes) -> Any:
        return self._decoder.decode(raw)

    async def commit(self, key: str, slot: StateSlot, raw: bytes, seqs: list[int]) -> None:
        """Write `raw` as the key's state, containing the messages at `seqs`.

        Raises `StateConflict` when the entry is no longer at `slot.revision`; on
        success the slot is at the new revision."""
        floor = max(slot.floor, self.ack_floor)
        reconnects = self._mesh.nc.stats["reconnects"]
        # A message whose ack the server has will not come back: it need not be listed.
        # Not on a replicated mailbox: there the PubAck proves only that our server read
        # the ack, and a consumer leader that dies before replicating it redelivers.
        confirmed = self._confirms and slot.reconnects == reconnects
        gone = set(slot.confirmed) if confirmed else set()
        applied = [s for s in slot.applied if s > floor and s not in gone]
        applied.extend(s for s in seqs if s > floor)
        if len(applied) > APPLIED_MAX:
            applied = applied[-APPLIED_MAX:]
        data = b'{"state":%s,"floor":%d,"applied":%s}' % (raw, floor, _encoder.encode(applied))
        try:
            receipt = await self._mesh.publish(
                self._subject + kv_key(key),
                data,
                headers={EXPECTED_LAST: str(slot.revision)},
            )
        except StateConflict:
            self.conflicts += 1
            raise
        self.commits += 1
        slot.revision, slot.floor, slot.applied, slot.raw = receipt.seq, floor, applied, raw
        slot.confirmed, slot.acked, slot.reconnects = slot.acked, [], reconnects

    async def floor_loop(self, interval: float = 1.0) -> None:
        """Keep `ack_floor` near the mailbox consumer's, so entries stay small."""
        js = self._mesh.js
        while True:
            try:
                info = await js.consumer_info(self._stream, self._durable)
                floor = info.ack_floor.stream_seq if info.ack_floor is not None else 0
                self.ack_floor = max(self.ack_floor, floor or 0)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.debug("ack floor of %s not read: %r", self._durable, exc)
            await asyncio.sleep(interval)

    async def delete(self, key: str) -> None:
        """Forget a key's state (its next message starts from a new state)."""
        if self._kv is not None:
            with contextlib.suppress(nats.js.errors.KeyNotFoundError):
                await self._kv.delete(kv_key(key))
