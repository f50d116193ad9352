"""`actormesh grant|revoke|grants|tools|tool call` from a shell, against a real broker
and a real worker serving tools."""

from __future__ import annotations

import json
import subprocess
import time

import jsonschema
import pytest

from actormesh import Mesh
from actormesh.testing import running_worker
from tests.actors_tools import Vault
from tests.integration.test_cli import cli

pytestmark = pytest.mark.integration

Proc = subprocess.CompletedProcess[str]


def one_line(stderr: str) -> str:
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert len(lines) == 1, stderr
    assert "Traceback" not in stderr
    return lines[0]


async def test_list_grant_call_and_revoke(mesh: Mesh, subprocess_env: dict[str, str]) -> None:
    env = subprocess_env
    async with running_worker(mesh, Vault):
        out = await cli(env, "tools")
        assert out.returncode == 0, out.stderr
        lines = out.stdout.splitlines()
        assert "vault.deposit: Add `amount` to the account; returns the new balance." in lines
        assert {line.split(":")[0] for line in lines} >= {"vault.balance", "vault.boom"}

        out = await cli(env, "tools", "--json")
        specs = {s["name"]: s for s in json.loads(out.stdout)}
        schema = specs["vault.deposit"]["input_schema"]
        jsonschema.Draft202012Validator(schema).validate({"key": "a", "amount": 5})

        # Default deny, and the error says what to do.
        out = await cli(env, "tool", "call", "vault.deposit", '{"key":"a","amount":5}',
                        "--principal", "alice")  # fmt: skip
        assert out.returncode == 1
        line = one_line(out.stderr)
        assert line.startswith("actormesh: error: tool_denied: ")
        assert "`actormesh grant alice vault.deposit`" in line

        out = await cli(env, "grant", "alice", "vault.deposit", "vault.balance")
        assert out.returncode == 0, out.stderr
        assert out.stdout.strip() == "alice: vault.deposit, vault.balance"
        out = await cli(env, "tools", "--principal", "alice")
        assert [line.split(":")[0] for line in out.stdout.splitlines()] == [
            "vault.balance",
            "vault.deposit",
        ]
        # The worker's live copy of the grants follows within a moment.
        out = await call_until(env, "vault.deposit", '{"key":"a","amount":5}', "alice")
        assert json.loads(out.stdout) == 5
        out = await cli(env, "tool", "call", "vault.balance", '{"key":"a"}', "--principal", "alice")
        assert json.loads(out.stdout) == 5

        out = await cli(env, "grants")
        assert out.stdout.splitlines() == ["alice: vault.deposit, vault.balance"]
        out = await cli(env, "revoke", "alice", "vault.deposit")
        assert out.stdout.strip() == "alice: vault.balance"
        out = await cli(env, "grants", "--json")
        assert json.loads(out.stdout) == [
            {"principal": "alice", "tools": ["vault.balance"], "approval": []}
        ]
        out = await denied_within(env, "vault.deposit", '{"key":"a","amount":1}', "alice", 5.0)
        assert "tool_denied" in out.stderr
        out = await cli(env, "revoke", "alice")
        assert out.stdout.strip() == "alice: (nothing)"


async def call_until(env: dict[str, str], name: str, args: str, principal: str) -> Proc:
    deadline = time.monotonic() + 10
    while True:
        out = await cli(env, "tool", "call", name, args, "--principal", principal)
        if out.returncode == 0 or time.monotonic() > deadline:
            assert out.returncode == 0, out.stderr
            return out


async def denied_within(
    env: dict[str, str], name: str, args: str, principal: str, seconds: float
) -> Proc:
    deadline = time.monotonic() + seconds
    while True:
        out = await cli(env, "tool", "call", name, args, "--principal", principal)
        if out.returncode == 1 or time.monotonic() > deadline:
            assert out.returncode == 1, out.stdout
            return out


async def test_typed_errors_are_one_line(mesh: Mesh, subprocess_env: dict[str, str]) -> None:
    env = subprocess_env
    async with running_worker(mesh, Vault):
        await mesh.tools.grants.grant("ops", "vault.*")
        cases = [
            (("vault.nothing", "{}"), "tool_not_found", "`actormesh tools` lists"),
            (("vault.deposit", '{"key":"k","amount":"lots"}'), "tool_arguments_invalid",
             "amount"),
            (("vault.deposit", "{not json"), "bad JSON arguments", ""),
            (("vault.deposit", "[1]"), "must be a JSON object", ""),
        ]  # fmt: skip
        for (name, args), code, hint in cases:
            out = await cli(env, "tool", "call", name, args, "--principal", "ops")
            assert out.returncode == 1, out.stdout
            line = one_line(out.stderr)
            assert code in line and hint in line, line
        out = await cli(env, "tool", "call", "vault.balance", '{"key":"k"}')  # no user in URL
        assert "give --principal NAME" in one_line(out.stderr)
        out = await call_until_failed(env, "vault.boom", "ops")
        line = one_line(out.stderr)
        assert line.startswith("actormesh: error: tool_failed: ")
        assert "the vault is on fire" in line and "worker's log" in line
        out = await cli(env, "tool", "call", "vault.nap", '{"key":"k","seconds":5}',
                        "--principal", "ops", "--timeout", "0.5")  # fmt: skip
        line = one_line(out.stderr)
        assert line.startswith("actormesh: error: tool_timeout: ") and "--timeout" in line


async def call_until_failed(env: dict[str, str], name: str, principal: str) -> Proc:
    """The first calls may be denied until the worker's live grants have the grant."""
    deadline = time.monotonic() + 10
    while True:
        out = await cli(env, "tool", "call", name, '{"key":"k"}', "--principal", principal)
        if "tool_denied" not in out.stderr or time.monotonic() > deadline:
            return out


async def test_grant_with_approval_and_a_pattern_that_matches_nothing(
    mesh: Mesh, subprocess_env: dict[str, str]
) -> None:
    async with running_worker(mesh, Vault):
        out = await cli(subprocess_env, "grant", "carol", "vault.deposit", "--approval")
        assert out.stdout.strip() == "carol: vault.deposit (approval: vault.deposit)"
        assert out.stderr == ""
        out = await cli(subprocess_env, "grant", "carol", "nosuch.*")
        assert out.returncode == 0
        assert "'nosuch.*' matches no published tool yet" in one_line(out.stderr)
    grant = await mesh.tools.grants.get("carol")
    assert grant.tools == ["vault.deposit", "nosuch.*"]
    assert grant.approval == ["vault.deposit"]
