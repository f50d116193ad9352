"""The OTP rules as pure functions: strategies, restart types, intensity, backoff."""

from __future__ import annotations

import random

import pytest
from hypothesis import given
from hypothesis import strategies as st

from actormesh_supervisor._policy import (
    RestartWindow,
    affected,
    backoff_delay,
    should_restart,
)

ORDER = ["a", "b", "c", "d"]


@pytest.mark.parametrize(
    ("strategy", "failed", "expected"),
    [
        ("one_for_one", "b", ["b"]),
        ("one_for_all", "b", ["a", "b", "c", "d"]),
        ("rest_for_one", "b", ["b", "c", "d"]),
        ("rest_for_one", "a", ["a", "b", "c", "d"]),
        ("rest_for_one", "d", ["d"]),
    ],
)
def test_affected_children_in_start_order(strategy: str, failed: str, expected: list[str]) -> None:
    assert affected(strategy, ORDER, failed) == expected


def test_unknown_strategy_is_an_error() -> None:
    with pytest.raises(ValueError, match="unknown strategy"):
        affected("all_for_none", ORDER, "a")


@pytest.mark.parametrize(
    ("restart", "abnormal", "expected"),
    [
        ("permanent", True, True),
        ("permanent", False, True),
        ("transient", True, True),
        ("transient", False, False),
        ("temporary", True, False),
        ("temporary", False, False),
    ],
)
def test_restart_types(restart: str, abnormal: bool, expected: bool) -> None:
    assert should_restart(restart, abnormal=abnormal) is expected


def test_backoff_doubles_from_min_and_caps_at_max() -> None:
    delays = [backoff_delay(n, minimum=0.1, maximum=1.0, jitter=0.0) for n in range(0, 7)]
    assert delays == [0.0, 0.1, 0.2, 0.4, 0.8, 1.0, 1.0]


@given(st.integers(1, 30), st.floats(0.0, 0.5))
def test_backoff_jitter_only_stretches_within_bounds(level: int, jitter: float) -> None:
    base = backoff_delay(level, minimum=0.1, maximum=5.0, jitter=0.0)
    got = backoff_delay(level, minimum=0.1, maximum=5.0, jitter=jitter, rng=random.Random(level))
    assert base <= got <= base * (1 + jitter) + 1e-12


def test_window_allows_intensity_restarts_within_period_then_refuses() -> None:
    w = RestartWindow(intensity=3, period=60.0)
    assert [w.allow(t) for t in (0.0, 1.0, 2.0)] == [True, True, True]
    assert w.allow(3.0) is False
    assert w.count(3.0) == 3, "a refused restart is not recorded"
    # Once the oldest restart leaves the window, one more fits.
    assert w.allow(60.5) is True
    assert w.count(60.5) == 3


def test_window_with_intensity_zero_refuses_every_restart() -> None:
    assert RestartWindow(intensity=0, period=10.0).allow(0.0) is False


@given(st.lists(st.floats(0, 1000, allow_nan=False), max_size=60), st.integers(0, 6))
def test_window_never_holds_more_than_intensity(times: list[float], intensity: int) -> None:
    w = RestartWindow(intensity=intensity, period=30.0)
    for t in sorted(times):
        w.allow(t)
        assert w.count(t) <= intensity


def test_window_restore_and_reset() -> None:
    w = RestartWindow(intensity=2, period=10.0)
    w.restore([5.0, 1.0])
    assert w.times() == [1.0, 5.0]
    assert w.allow(6.0) is False
    w.reset()
    assert w.allow(6.0) is True
