"""The containment fields of `SupervisionPolicy`: defaults and the errors naming the fix."""

from __future__ import annotations

import pytest

from actormesh import ConfigError, SupervisionPolicy


def test_defaults_park_keys_and_escalate_on_many_failing_keys() -> None:
    policy = SupervisionPolicy()
    assert policy.on_intensity == "park"
    assert policy.park_for == 600.0
    assert policy.max_failing_keys == 10
    assert policy.max_failed_starts == 3


@pytest.mark.parametrize(
    ("fields", "names"),
    [
        ({"on_intensity": "drop"}, "on_intensity"),
        ({"park_for": 0}, "park_for"),
        ({"max_failing_keys": 0}, "max_failing_keys"),
        ({"max_failing_keys": 10_001}, "max_failing_keys"),
        ({"max_failed_starts": 0}, "max_failed_starts"),
    ],
)
def test_bad_values_are_refused(fields: dict[str, object], names: str) -> None:
    with pytest.raises(ConfigError, match=names):
        SupervisionPolicy(**fields)  # type: ignore[arg-type]
