"""Acknowledgement tracking: the source messages an item in flight stands for.

Every item travels as an `Envelope`, its value with the `Ackable` source items
it came from (a batch carries the union). Whoever holds an envelope when its
fate is known settles it: ack once it left the sink (or was filtered out), nak
if it failed, was dropped, or was still in flight when the stream stopped.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncGenerator, Iterable
from typing import Any, Protocol, TypeAlias, cast, runtime_checkable

from ._metrics import Stats

__all__ = ["Ackable", "Acks", "Envelope", "Flow", "acks_of", "settle"]

_log = logging.getLogger("actormesh.patterns")


@runtime_checkable
class Ackable(Protocol):
    """A source item that wants to know its fate (a JetStream message does).

    Detected by duck typing on the item's class: if it defines `ack` and `nak`,
    the pipeline awaits `ack()` once the item (or the batch holding it) left
    the sink, and `nak()` if it failed, was dropped, or was still in flight
    when the stream stopped. Filtered-out items count as done and are acked.
    """

    async def ack(self) -> None: ...

    async def nak(self) -> None: ...


# None rather than an empty tuple for items with no source messages: the
# common case (plain values) then costs one truth test per stage.
Acks: TypeAlias = tuple[Ackable, ...] | None
Envelope: TypeAlias = tuple[Any, Acks]
#: What a stage yields downstream (an async generator, so it can be closed early).
Flow: TypeAlias = AsyncGenerator[Envelope, None]

# Per class, whether its instances are Ackable: checked once, not per item.
_ACKABLE_TYPES: dict[type, bool] = {}


def acks_of(item: object) -> Acks:
    """The acks a source item brings: itself if it is Ackable, else None."""
    kind = type(item)
    known = _ACKABLE_TYPES.get(kind)
    if known is None:
        known = callable(getattr(kind, "ack", None)) and callable(getattr(kind, "nak", None))
        _ACKABLE_TYPES[kind] = known
    return cast("tuple[Ackable, ...]", (item,)) if known else None


async def settle(acks: Iterable[Ackable], ok: bool, stats: Stats) -> None:
    """Ack (`ok`) or nak each of `acks`, counting failures against `stats`."""
    for item in acks:
        try:
            await (item.ack() if ok else item.nak())
        except Exception:
            # The broker redelivers what was not acked: log and carry on.
            stats.ack_failures += 1
            _log.warning(
                "stream stage %r: %s failed", stats.name, "ack" if ok else "nak", exc_info=True
            )
