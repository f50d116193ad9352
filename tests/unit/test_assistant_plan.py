"""The assistant's planner and mesh.toml's `[[grants]]` (no broker)."""

from __future__ import annotations

from pathlib import Path

import msgspec
import pytest

from actormesh import ConfigError
from actormesh._actor import spec_of
from actormesh._meshfile import load
from actormesh_assistant import Assistant, Call, Reset, Run, plan
from actormesh_counter import Counter
from actormesh_echo import EchoService


def test_the_plan_is_deterministic() -> None:
    count = Run(task="count", key="user-42", times=2)
    expected = [
        Call(tool="counter.add", args={"key": "user-42", "by": 1}),
        Call(tool="counter.add", args={"key": "user-42", "by": 1}),
        Call(tool="echo.say", args={"text": "user-42 is at {value}"}),
    ]
    assert plan(count) == plan(count) == expected
    assert [c.tool for c in plan(Reset(key="k"))] == ["counter.read", "counter.clear", "echo.say"]
    assert [c.tool for c in plan(Run(task="read", key="k"))] == ["counter.read", "echo.say"]


def test_instructions_are_checked() -> None:
    bad_ones = (
        b'{"task":"dance","key":"k"}',
        b'{"task":"reset","key":"k"}',
        b'{"task":"count","key":"k","times":0}',
        b'{"task":"count","key":""}',
    )
    for bad in bad_ones:
        with pytest.raises(msgspec.ValidationError):
            msgspec.json.decode(bad, type=Run)


def test_which_handlers_are_tools() -> None:
    # Inc/Get/Reset and Echo stay plain (no grant needed); the tools are new types.
    actors = (Counter, EchoService, Assistant)
    tools = {t.name: t.needs_approval for c in actors for t in spec_of(c).tools}
    assert tools == {
        "counter.add": False,
        "counter.read": False,
        "counter.clear": False,
        "echo.say": False,
        "assistant.run": False,
        "assistant.reset": True,  # the one that waits for an operator
    }


def test_grants_in_mesh_toml(tmp_path: Path) -> None:
    f = tmp_path / "mesh.toml"
    f.write_text('[[grants]]\nprincipal = "bot"\ntools = ["a.*"]\napproval = ["b.x"]\n')
    (g,) = load(f).grants
    assert (g.principal, g.tools, g.approval) == ("bot", ["a.*"], ["b.x"])
    f.write_text('[[grants]]\nprincipal = "bot"\n')
    with pytest.raises(ConfigError, match="list the tools"):
        load(f)
    f.write_text('[[grants]]\nprincipal = ""\ntools = ["a"]\n')
    with pytest.raises(ConfigError, match="principal"):
        load(f)
