"""The mesh file's interop sections: `[[agents]]` and `[agent_bridge]` become the
children of a generated group `agents`, `{config}` in a child's command becomes
the mesh file's path, and `[mcp]` tokens are checked and never shown."""

from __future__ import annotations

from pathlib import Path

import pytest

from actormesh import ConfigError
from actormesh._meshfile import MeshFile, load


def test_agents_and_the_bridge_become_children(tmp_path: Path) -> None:
    mf = load_text(
        tmp_path,
        """
[[agents]]
name = "shouter"
tool = "oracle.shout"
principal = "helper"
prompt_arg = "text"
timeout = 5

[agent_bridge]
agents = ["echoer", "other"]
rediscover = 2
""",
    )
    (group,) = mf.groups
    assert group.name == "agents" and group.strategy == "one_for_one"
    host, bridge = group.children
    assert host.name == "agent-host-shouter"
    argv = host.command
    assert argv[argv.index("agent-host") + 1 :][:6] == [
        "--name", "shouter", "--tool", "oracle.shout", "--principal", "helper",
    ]  # fmt: skip
    assert argv[argv.index("--prompt-arg") + 1] == "text"
    assert argv[argv.index("--timeout") + 1] == "5"
    assert "{heartbeat_interval}" in argv  # the supervisor's worker heartbeats
    assert bridge.name == "agent-bridge"
    assert [a for i, a in enumerate(bridge.command) if bridge.command[i - 1] == "--agent"] == [
        "echoer",
        "other",
    ]


def test_bad_agent_entries_are_refused(tmp_path: Path) -> None:
    for text, words in (
        ('[[agents]]\nname = "Bad_Name"\ntool = "t.x"\nprincipal = "p"\n', "lowercase"),
        ('[[agents]]\nname = "ok"\ntool = ""\nprincipal = "p"\n', "`tool`"),
        ('[agent_bridge]\n[[groups]]\nname = "agents"\n', "own"),
    ):
        with pytest.raises(ConfigError) as refused:
            load_text(tmp_path, text)
        assert words in str(refused.value)


def test_config_placeholder_is_the_mesh_files_path(tmp_path: Path) -> None:
    mf = load_text(
        tmp_path,
        """
[[groups]]
name = "interop"

  [[groups.children]]
  name = "mcp"
  command = ["actormesh", "mcp", "--http", "--config", "{config}"]
""",
    )
    (child,) = mf.groups[0].children
    assert child.command[-1] == str((tmp_path / "mesh.toml").resolve())


def load_text(tmp_path: Path, text: str) -> MeshFile:
    path = tmp_path / "mesh.toml"
    path.write_text(text)
    return load(path)
