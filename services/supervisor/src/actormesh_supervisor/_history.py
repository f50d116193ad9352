"""Read back the events stream: the timeline, and what a restarted supervisor
needs to carry on counting restarts where its predecessor stopped."""

from __future__ import annotations

import logging

import msgspec
import nats.errors
import nats.js.errors
from nats.js import JetStreamContext
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy

from actormesh import Event
from actormesh._subjects import Subjects

__all__ = ["load_events"]

log = logging.getLogger("actormesh.supervisor.history")

_decode = msgspec.json.Decoder(Event).decode


async def load_events(js: JetStreamContext, subjects: Subjects, *, limit: int) -> list[Event]:
    """The last `limit` events of the mesh, oldest first ([] when there are none)."""
    stream = subjects.events_stream
    try:
        info = await js.stream_info(stream)
    except nats.js.errors.NotFoundError:
        return []
    state = info.state
    if state.messages == 0:
        return []
    start = max(state.first_seq, state.last_seq - limit + 1)
    # An ephemeral consumer with no acks: reading history must not disturb anything
    # and must leave nothing behind (the server drops it after inactive_threshold).
    sub = await js.pull_subscribe(
        f"{subjects.prefix}.sys.evt.>",
        stream=stream,
        config=ConsumerConfig(
            deliver_policy=DeliverPolicy.BY_START_SEQUENCE,
            opt_start_seq=start,
            ack_policy=AckPolicy.NONE,
            inactive_threshold=30.0,
            mem_storage=True,
        ),
    )
    events: list[Event] = []
    try:
        while True:
            try:
                batch = await sub.fetch(batch=256, timeout=1.0)
            except (nats.errors.TimeoutError, TimeoutError):
                break
            for msg in batch:
                try:
                    events.append(_decode(msg.data))
                except (msgspec.DecodeError, msgspec.ValidationError):
                    log.debug("skipping an undecodable event on %s", msg.subject)
            last = batch[-1]
            if last.metadata.num_pending == 0 or last.metadata.sequence.stream >= state.last_seq:
                break
    finally:
        try:
            await sub.unsubscribe()
        except nats.errors.Error as exc:
            log.debug("unsubscribing the history reader: %r", exc)
    return events[-limit:]
