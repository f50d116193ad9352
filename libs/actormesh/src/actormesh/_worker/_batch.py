"""One commit for a key's queued messages (actors with durable state).

Messages to one key run one at a time; when several wait in the key's lane,
the runner takes them all (up to `BATCH_MAX`), runs them in order against the
live instance, writes the state once with every applied stream sequence in the
entry, and only then sends the asks' replies and acks them all. The commit is a
broker round trip, so under load this is what lets a hot key go faster than a
loop that writes after every message, with the same guarantees:

- a message already in the state is acked without running, and so is a copy of
  one (its id) that the broker stored twice;
- a handler that raises commits what the messages before it made (their
  encoding is kept after each change) and leaves the instance's memory to
  supervision, as on the one-message path: `restart` reloads the commit,
  `resume` keeps the memory; the failing message and the rest take the
  one-message path (supervision, retries);
- a compare-and-set conflict reloads the state and runs each message of the
  batch again on the one-message path, which reloads and re-checks as it goes.

Actors with interceptors (a tracer) keep the one-message path: a span per
message covers its handler, commit and reply. So do the messages an
interceptor wraps when it wraps only some (`tools_only`: a tool's metrics):
a batch commits what ran before such a message, then takes the one-message
path from it on.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any, NamedTuple

from nats.aio.msg import Msg

from .._actor import Handler
from .._errors import BrokerUnavailable, StateConflict
from .._state import STATE_ATTR
from .._subjects import stream_seq_of
from .._wire import Hdr

if TYPE_CHECKING:
    from .._actor import Actor
    from ._handling import Handling

__all__ = ["BATCH_MAX", "Prepared", "StatefulBatch"]

#: The most messages of one key committed together.
BATCH_MAX = 128


class Prepared(NamedTuple):
    """A decoded message, ready to run."""

    key: str
    msg: Msg
    headers: dict[str, str]
    reply_to: str | None
    obj: Any
    handler: Handler


class _Ran(NamedTuple):
    msg: Msg
    reply_to: str | None
    result: Any
    seq: int
    msg_id: str | None
    #: The state already contained it: acked without running.
    skipped: bool = False


class StatefulBatch:
    """Runs a key's waiting messages against one instance, committing once."""

    def __init__(self, handling: Handling) -> None:
        self._h = handling

    async def run(self, key: str, first: Msg) -> None:
        h = self._h
        w = h._w
        msgs = [first, *w._dispatcher.take_queued(key, BATCH_MAX - 1)]
        ready = [p for m in msgs if (p := await h.prepare(key, m)) is not None]
        if len(ready) <= 1:
            for one in ready:
                await h.run_prepared(one)
            return
        instance = h.instances.get(key)
        if instance is None:
            try:
                instance = await h._new_instance(key)
            except Exception:
                # Activation failed: each message meets it on its own path, which
                # supervises and settles it.
                await self._one_by_one(ready)
                return
        w.in_flight += len(ready)
        try:
            await self._run_on(instance, key, ready)
        finally:
            w.in_flight -= len(ready)

    async def _run_on(self, instance: Actor, key: str, ready: list[Prepared]) -> None:
        h = self._h
        store, slot = h.store, h._slots.get(key)
        if store is None or slot is None:
            await self._one_by_one(ready)
            return
        raw = slot.raw
        ran: list[_Ran] = []
        ids: set[str] = set()  # of this batch's messages run (one stored twice: once)
        for i, p in enumerate(ready):
            if type(p.obj) in h.chained:
                # An interceptor wraps it (a tool's metrics): what ran before it is
                # committed, and it and the rest go the one-message way, in order.
                if await self._commit_or_redo(key, raw, ran, ready):
                    await self._one_by_one(ready[i:])
                return
            seq = stream_seq_of(p.msg)
            msg_id = p.headers.get(Hdr.MSG_ID)
            if (
                slot.contains(seq)
                or (msg_id is not None and msg_id in ids)
                or store.recent.copy_of_applied(msg_id, key, seq)
            ):
                ran.append(_Ran(p.msg, None, None, seq, msg_id, skipped=True))
                continue
            try:
                result = await self._call(instance, p)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                # Commit what the messages before it made; the memory is
                # supervision's to keep (resume) or reload (restart), as on the
                # one-message path.
                if await self._commit_or_redo(key, raw, ran, ready):
                    await self._failed(instance, p, exc)
                    await self._one_by_one(ready[i + 1 :])
                return
            changed = store.changed_from(raw, getattr(instance, STATE_ATTR))
            if changed is not None:
                raw = changed
            ran.append(_Ran(p.msg, p.reply_to, result, seq, msg_id))
            if msg_id is not None:
                ids.add(msg_id)
        await self._commit_or_redo(key, raw, ran, ready)

    async def _commit_or_redo(
        self, key: str, raw: bytes, ran: list[_Ran], ready: list[Prepared]
    ) -> bool:
        """`_commit`; on a conflict (the state reloaded, nothing settled) every message
        of the batch runs again, one by one, and the result is False."""
        if await self._commit(key, raw, ran):
            return True
        await self._one_by_one(ready)
        return False

    async def _call(self, instance: Actor, p: Prepared) -> Any:
        handler = p.handler
        if handler.wants_context:
            ctx = self._h._context(
                p.key, self._h.subject_of(p.key, p.msg), p.headers, p.msg, p.reply_to
            )
            result = handler.fn(instance, p.obj, ctx)
        else:
            result = handler.fn(instance, p.obj)
        if handler.is_async:
            result = await result
        return result

    async def _commit(self, key: str, raw: bytes, ran: list[_Ran]) -> bool:
        """Write `raw` (containing `ran`), then reply and ack; False on a conflict
        (the state was reloaded; nothing of `ran` was settled)."""
        h = self._h
        w = h._w
        store, slot = h.store, h._slots.get(key)
        if store is None or slot is None:
            return False
        if raw != slot.raw:
            seqs = [r.seq for r in ran if not r.skipped]
            try:
                await store.commit(key, slot, raw, seqs)
            except StateConflict:
                instance = h.instances.get(key)
                if instance is not None:
                    await h._reload(key, instance)
                return False
            except BrokerUnavailable:
                # No leader for the bucket (a cluster's election): the write may or
                # may not have landed. Forget the instance (its state loads again)
                # and let each message take the one-message path, which settles it.
                old = h.drop(key)
                if old is not None:
                    await h.stop_instance(key, old)
                return False
        settler, replies = w._settler, w._replies
        for r in ran:
            if r.skipped:
                h.skipped += 1
            elif r.reply_to:
                await replies.value(r.reply_to, r.result)
            await settler.ack(r.msg)
            slot.acked.append(r.seq)
            if not r.skipped:
                store.recent.remember(r.msg_id, key, r.seq)
            w.handled += 1
        return True

    async def _failed(self, instance: Actor, p: Prepared, exc: Exception) -> None:
        h = self._h
        inp = h._input(p.key, p.msg, p.headers, p.reply_to)
        inp.message, inp.handler, inp.actor = p.obj, p.handler, instance
        h._w.failed += 1
        await h._w._failures.handler_failed(inp, exc)

    async def _one_by_one(self, ready: list[Prepared]) -> None:
        for p in ready:
            await self._h.run_prepared(p)
