"""What a bounded buffer does when it is full.

One vocabulary for every bounded buffer in the package: the stream channel
(all four strategies), the executor's queue and the mailbox sink (BLOCK or
RAISE only: those never drop work).
"""

from __future__ import annotations

import enum

__all__ = ["Backpressure"]


class Backpressure(enum.Enum):
    """What a bounded buffer does with an item that arrives while it is full."""

    #: Wait for room: nothing is lost, the producer slows down.
    BLOCK = "block"
    #: Discard the arriving item.
    DROP_NEWEST = "drop_newest"
    #: Discard the oldest buffered item to make room.
    DROP_OLDEST = "drop_oldest"
    #: Fail with `BackpressureError`.
    RAISE = "raise"
