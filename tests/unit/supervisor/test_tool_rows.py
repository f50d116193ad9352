"""The dashboard's per-tool p50 and p99, from summed heartbeat histograms."""

from __future__ import annotations

import pytest

from actormesh_supervisor._tools import quantile

BOUNDS = [0.001, 0.01, 0.1]


def test_quantiles_interpolate_within_a_bucket() -> None:
    # 4 calls in (1 ms, 10 ms]: the median is halfway through that bucket.
    assert quantile(0.5, [0, 4, 0, 0], BOUNDS) == pytest.approx(0.0055)
    assert quantile(0.99, [0, 4, 0, 0], BOUNDS) == pytest.approx(0.00991)
    # 99 fast calls and 1 slow one: p50 stays fast, p99 stays in the first bucket.
    assert quantile(0.5, [99, 0, 1, 0], BOUNDS) == pytest.approx(0.000505, rel=1e-3)
    assert quantile(0.99, [99, 0, 1, 0], BOUNDS) == pytest.approx(0.001)


def test_no_calls_no_figure_and_the_open_bucket_gives_its_lower_bound() -> None:
    assert quantile(0.5, [0, 0, 0, 0], BOUNDS) is None
    assert quantile(0.5, [0, 0, 0, 3], BOUNDS) == 0.1
