"""The MCP server's tokens file and bearer check, and the CLI staying light."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from actormesh import ConfigError
from actormesh.mcp import BearerAuth, load_tokens

SECRET = "s3cret-token-never-shown"


def test_tokens_from_toml_and_json(tmp_path: Path) -> None:
    toml = tmp_path / "t.toml"
    toml.write_text(f'[tokens]\n"{SECRET}" = "alice"\n"other" = "bob"\n')
    assert load_tokens(toml) == {SECRET: "alice", "other": "bob"}
    js = tmp_path / "t.json"
    js.write_text(json.dumps({"tokens": {SECRET: "alice"}}))
    assert load_tokens(js) == {SECRET: "alice"}


@pytest.mark.parametrize(
    ("name", "text"),
    [
        ("bad.toml", f'[tokens]\n"{SECRET}" = \n'),
        ("bad.json", f'{{"tokens": {{"{SECRET}": }}'),
        ("empty.toml", "[tokens]\n"),
        ("flat.toml", f'"{SECRET}" = "alice"\n'),
        ("noprincipal.toml", f'[tokens]\n"{SECRET}" = ""\n'),
    ],
)
def test_bad_tokens_files_name_the_fix_never_a_token(tmp_path: Path, name: str, text: str) -> None:
    path = tmp_path / name
    path.write_text(text)
    with pytest.raises(ConfigError) as err:
        load_tokens(path)
    assert SECRET not in str(err.value)
    assert str(path) in str(err.value)


def test_missing_tokens_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read"):
        load_tokens(tmp_path / "nope.toml")


def test_bearer_principal() -> None:
    auth = BearerAuth(None, {SECRET: "alice", "other": "bob"})
    assert auth.principal(f"Bearer {SECRET}".encode()) == "alice"
    assert auth.principal(b"bearer other") == "bob"
    for bad in (b"", SECRET.encode(), b"Bearer ", b"Bearer nope", f"Basic {SECRET}".encode()):
        assert auth.principal(bad) is None, bad


def test_the_cli_parser_does_not_load_the_mcp_sdk() -> None:
    code = (
        "import sys; from actormesh._cli import _parser; _parser(); "
        "print(sorted(m for m in sys.modules if m == 'mcp' or m.startswith(('mcp.', 'uvicorn'))))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
