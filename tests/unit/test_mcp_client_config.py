"""`[[mcp_servers]]` in mesh.toml: parsed, checked, and run as supervised children."""

from __future__ import annotations

from pathlib import Path

import pytest

from actormesh import ConfigError
from actormesh._meshfile import MCP_GROUP, MeshFile, load
from actormesh.mcp._client import McpServerSpec
from actormesh.mcp._client_command import add_mcp_client_parser


def _load(tmp_path: Path, text: str) -> MeshFile:
    path = tmp_path / "mesh.toml"
    path.write_text(text)
    return load(path)


def test_mcp_servers_become_children_of_their_own_group(tmp_path: Path) -> None:
    mf = _load(
        tmp_path,
        """
[[mcp_servers]]
name = "files"
command = ["npx", "-y", "server-filesystem", "--root", "/srv"]
env = { TOKEN = "t" }

[[mcp_servers]]
name = "search"
url = "http://127.0.0.1:9000/mcp"
""",
    )
    (group,) = mf.groups
    assert group.name == MCP_GROUP
    files, search = group.children
    assert files.name == "mcp-files"
    assert files.command[-7:] == [
        "files", "--", "npx", "-y", "server-filesystem", "--root", "/srv",
    ]  # fmt: skip
    assert "--env=TOKEN=t" in files.command
    assert search.name == "mcp-search"
    assert search.command[-3:] == ["--url", "http://127.0.0.1:9000/mcp", "search"]


def test_generated_argv_parses_back_to_the_server(tmp_path: Path) -> None:
    import argparse

    mf = _load(tmp_path, '[[mcp_servers]]\nname = "files"\ncommand = ["srv", "--flag", "x"]\n')
    values = {"{nats_url}": "nats://h:4222", "{prefix}": "m", "{heartbeat_interval}": "1"}
    # After `{python} -m actormesh`, with the supervisor's values put in.
    argv = [values.get(a, a) for a in mf.groups[0].children[0].command[3:]]
    parser = argparse.ArgumentParser()
    parser.add_argument("--nats-url")
    parser.add_argument("--prefix")
    add_mcp_client_parser(parser.add_subparsers(dest="command"))
    args = parser.parse_args(argv)
    assert args.name == "files"
    assert args.heartbeat_interval == 1.0
    assert [a for a in args.server_command if a != "--"] == ["srv", "--flag", "x"]


@pytest.mark.parametrize(
    "entry",
    [
        'name = "files"',  # neither command nor url
        'name = "files"\ncommand = ["x"]\nurl = "http://h/mcp"',  # both
        'name = "Files"\ncommand = ["x"]',  # not an actor type
        'name = "a.b"\ncommand = ["x"]',  # a dot would split the tool name
    ],
)
def test_bad_entries_are_config_errors(tmp_path: Path, entry: str) -> None:
    with pytest.raises(ConfigError):
        _load(tmp_path, f"[[mcp_servers]]\n{entry}\n")


def test_own_group_name_is_reserved(tmp_path: Path) -> None:
    text = f'[[groups]]\nname = "{MCP_GROUP}"\n\n[[mcp_servers]]\nname = "x"\ncommand = ["x"]\n'
    with pytest.raises(ConfigError, match="rename"):
        _load(tmp_path, text)


def test_client_spec_names() -> None:
    spec = McpServerSpec(name="calc", command=["x"])
    assert spec.actor_type == "mcp-calc"
    assert spec.tool_name("add") == "mcp.calc.add"
    with pytest.raises(ConfigError):
        McpServerSpec(name="calc")
