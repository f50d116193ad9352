"""The fast argument check agrees with jsonschema whenever it says yes, and only
takes schemas it fully understands."""

from __future__ import annotations

from typing import Annotated, Any

import msgspec
import pytest
from jsonschema import Draft202012Validator

from actormesh import Message
from actormesh._tools._declare import input_schema
from actormesh._tools._fastcheck import checker


class Flat(Message):
    n: int
    x: float = 0.0
    s: str = ""
    b: bool = False
    maybe: None = None


class Nested(Message):
    items: list[int]


class Limited(Message):
    n: Annotated[int, msgspec.Meta(ge=0)]


CASES: list[Any] = [
    {"n": 1},
    {"n": 1, "x": 2.5, "s": "a", "b": True, "maybe": None},
    {"n": 1.0},  # an integer to JSON Schema: jsonschema decides
    {"n": True},
    {"n": "1"},
    {},
    {"n": 1, "extra": 2},
    {"key": "k", "n": 1},
    {"n": 1, "x": 3},
    {"n": 1, "b": 0},
    [],
    None,
]


@pytest.mark.parametrize("keyed", [False, True])
def test_a_yes_is_a_yes_of_jsonschema(keyed: bool) -> None:
    schema = input_schema(Flat, keyed=keyed)
    check = checker(schema)
    assert check is not None
    validator = Draft202012Validator(schema)
    for args in CASES:
        if check(args):
            assert validator.is_valid(args), args
    assert check({"key": "k", "n": 1} if keyed else {"n": 1})


def test_only_schemas_it_understands() -> None:
    assert checker(input_schema(Nested, keyed=False)) is None
    assert checker(input_schema(Limited, keyed=False)) is None
    assert checker({"type": "object", "properties": {"n": {"type": "integer"}}}) is None
