"""The ids a state store remembers, so that a message the broker stored twice
(one `Nats-Msg-Id`, two sequences) is applied once: what is a copy, and how the
memory stays bounded."""

from __future__ import annotations

import time

import pytest

from actormesh._state import RecentIds


def test_a_copy_is_the_same_id_and_key_under_another_sequence() -> None:
    ids = RecentIds(window=120)
    ids.remember("m-1", "a", 10)
    assert ids.copy_of_applied("m-1", "a", 17) == 10
    assert ids.stored_twice == 1
    # The same sequence is a redelivery (the sequence set decides), another key
    # another message, and a message without an id is never a copy.
    assert ids.copy_of_applied("m-1", "a", 10) is None
    assert ids.copy_of_applied("m-1", "b", 17) is None
    assert ids.copy_of_applied(None, "a", 17) is None
    assert ids.copy_of_applied("m-2", "a", 17) is None
    assert ids.stored_twice == 1


def test_nothing_without_an_id_or_a_sequence_is_remembered() -> None:
    ids = RecentIds(window=120)
    ids.remember(None, "a", 3)
    ids.remember("", "a", 3)
    ids.remember("m-1", "a", 0)  # delivered without a JetStream ack subject
    assert len(ids) == 0


def test_the_oldest_ids_go_past_the_cap() -> None:
    ids = RecentIds(window=120, cap=3)
    for n in range(5):
        ids.remember(f"m-{n}", "a", n + 1)
    assert len(ids) == 3
    assert ids.copy_of_applied("m-0", "a", 99) is None
    assert ids.copy_of_applied("m-4", "a", 99) == 5


def test_ids_older_than_the_window_are_forgotten(monkeypatch: pytest.MonkeyPatch) -> None:
    now = [1000.0]
    monkeypatch.setattr(time, "monotonic", lambda: now[0])
    ids = RecentIds(window=120)
    ids.remember("old", "a", 1)
    now[0] += 100
    ids.remember("new", "a", 2)
    now[0] += 30  # "old" is 130 s old, "new" 30 s
    assert ids.copy_of_applied("old", "a", 9) is None
    assert ids.copy_of_applied("new", "a", 9) == 2
    ids.remember("newer", "a", 3)  # each remember drops what left the window
    assert len(ids) == 2


def test_a_cap_of_zero_keeps_nothing() -> None:
    """What a store of a mailbox on one server has: no memory, no cost."""
    ids = RecentIds(window=120, cap=0)
    ids.remember("m-1", "a", 10)
    assert len(ids) == 0
    assert ids.copy_of_applied("m-1", "a", 17) is None
