"""Tools on a real broker: schemas, default deny, live grants, enforcement by the
callee, typed outcomes, and the deadline carried through nested calls."""

from __future__ import annotations

import asyncio
import itertools
import json
import time

import jsonschema
import msgspec
import pytest

from actormesh import (
    Mesh,
    ToolArgumentsInvalid,
    ToolDenied,
    ToolFailed,
    ToolNotFound,
    ToolTimeout,
    WorkerConfig,
)
from actormesh._actor import spec_of
from actormesh.testing import eventually, running_worker
from tests.actors_tools import Relay, Vault

pytestmark = pytest.mark.integration


@pytest.fixture(autouse=True)
def _reset() -> None:
    Relay.seen.clear()
    Relay.ran.clear()


def test_declared_tools_and_their_schemas() -> None:
    spec = spec_of(Vault)
    names = sorted(t.name for t in spec.tools)
    assert names == ["vault.balance", "vault.boom", "vault.deposit", "vault.nap"]
    deposit = next(t for t in spec.tools if t.name == "vault.deposit")
    assert deposit.description.startswith("Add `amount`")
    schema = deposit.input_schema
    assert schema["type"] == "object" and "$ref" not in schema  # the root is inlined
    jsonschema.Draft202012Validator.check_schema(schema)
    validator = jsonschema.Draft202012Validator(schema)
    assert not list(validator.iter_errors({"key": "acct-1", "amount": 5, "memo": "x"}))
    for bad in ({"amount": 5}, {"key": "a", "amount": "5"}, {"key": "a", "amount": 1, "x": 1}):
        assert list(validator.iter_errors(bad)), bad
    out = deposit.output_schema
    assert out["type"] == "object" and out["properties"]["result"] == {"type": "integer"}


async def test_default_deny_grant_and_call(mesh: Mesh) -> None:
    tools = mesh.tools
    async with running_worker(mesh, Vault):
        listed = {t.name for t in await tools.list_tools()}
        assert {"vault.deposit", "vault.balance"} <= listed
        assert await tools.list_available_tools("alice") == []
        with pytest.raises(ToolDenied) as denied:
            await tools.call("vault.deposit", {"key": "a1", "amount": 5}, principal="alice")
        assert denied.value.principal == "alice"
        await tools.grants.grant("alice", "vault.deposit", "vault.balance")
        assert {t.name for t in await tools.list_available_tools("alice")} == {
            "vault.balance",
            "vault.deposit",
        }
        # The worker's live copy of the grants follows the bucket.
        await eventually(lambda: _allowed_now(mesh, "alice", "vault.deposit"))
        assert await tools.call("vault.deposit", {"key": "a1", "amount": 5}, principal="alice") == 5
        assert await tools.call("vault.balance", {"key": "a1"}, principal="alice") == 5
        with pytest.raises(ToolDenied):
            await tools.call("vault.boom", {"key": "a1"}, principal="alice")


def _allowed_now(mesh: Mesh, principal: str, tool: str) -> bool:
    return bool(mesh.tools.grants.allowed_now(principal, tool))


async def test_typed_outcomes(mesh: Mesh) -> None:
    tools = mesh.tools
    async with running_worker(mesh, Vault):
        await tools.grants.grant("ops", "vault.*")
        with pytest.raises(ToolNotFound):
            await tools.call("vault.nothing", {}, principal="ops")
        with pytest.raises(ToolArgumentsInvalid, match="amount"):
            await tools.call("vault.deposit", {"key": "k", "amount": "lots"}, principal="ops")
        with pytest.raises(ToolFailed) as failed:
            await tools.call("vault.boom", {"key": "k"}, principal="ops")
        assert "on fire" in failed.value.remote.remote_message
        with pytest.raises(ToolTimeout):
            await tools.call("vault.nap", {"key": "k", "seconds": 3}, principal="ops", timeout=0.3)


async def test_revoke_takes_effect_while_a_caller_loops(mesh: Mesh) -> None:
    tools = mesh.tools
    async with running_worker(mesh, Vault):
        await tools.grants.grant("bob", "vault.deposit")
        await eventually(lambda: _allowed_now(mesh, "bob", "vault.deposit"))
        results: list[str] = []
        stop = asyncio.Event()

        async def loop() -> None:
            while not stop.is_set():
                try:
                    await tools.call("vault.deposit", {"key": "b", "amount": 1}, principal="bob")
                    results.append("ok")
                except ToolDenied:
                    results.append("denied")

        caller = asyncio.ensure_future(loop())
        await eventually(lambda: results.count("ok") >= 5)
        revoked_at = time.monotonic()
        await tools.grants.revoke("bob")
        await eventually(lambda: "denied" in results)
        took = time.monotonic() - revoked_at
        stop.set()
        await caller
        first = results.index("denied")
        assert set(results[first:]) == {"denied"}, "once denied, never allowed again"
        print(f"revoke took effect after {took:.3f}s")


async def test_the_worker_refuses_a_client_that_skips_the_library(mesh: Mesh) -> None:
    """A raw nats-py publish to a tool's mailbox, with no principal or a principal
    without a grant, is refused by the callee: the ask is answered tool_denied, a
    tell is dead-lettered, and the handler never runs."""
    async with running_worker(mesh, Vault) as worker:
        await mesh.tools.grants.grant("carol", "vault.balance")
        nc, js = mesh.nc, mesh.js
        subject = mesh.subjects.mailbox("vault", "v1")
        body = json.dumps({"type": "Deposit", "amount": 100}).encode()
        for headers in ({}, {"Am-Principal": "mallory"}, {"Am-Principal": "carol"}):
            inbox = nc.new_inbox()
            sub = await nc.subscribe(inbox)
            await js.publish(subject, body, headers={**headers, "Am-Reply-To": inbox})
            reply = await sub.next_msg(timeout=10)
            await sub.unsubscribe()
            assert reply.headers is not None and reply.headers.get("Am-Status") == "403"
            assert json.loads(reply.data)["code"] == "tool_denied"
        await js.publish(subject, body, headers={"Am-Principal": "mallory"})
        await eventually(lambda: worker.dead_lettered == 1)
        assert worker.denied == 4
        await mesh.tools.grants.grant("carol", "vault.deposit")
        await eventually(lambda: _allowed_now(mesh, "carol", "vault.deposit"))
        assert await mesh.tools.call("vault.balance", {"key": "v1"}, principal="carol") == 0


async def test_a_deadline_carries_through_three_nested_calls(mesh: Mesh) -> None:
    await mesh.tools.grants.grant("tester", "relay.hop")
    await mesh.tools.grants.grant("relay", "relay.hop")
    async with running_worker(mesh, Relay):
        await eventually(lambda: _allowed_now(mesh, "relay", "relay.hop"))
        started = time.time()
        assert await mesh.tools.call("relay.hop", {"depth": 3}, principal="tester", timeout=5) == 3
        assert [d for d, _ in Relay.seen] == [3, 2, 1, 0]
        deadlines = [d for _, d in Relay.seen]
        assert all(d is not None for d in deadlines)
        outer = deadlines[0]
        assert outer is not None and started + 4.9 <= outer <= started + 5.1
        # Each nested call got at most what its parent had left (ms rounding aside).
        for parent, child in itertools.pairwise(deadlines):
            assert parent is not None and child is not None and child <= parent + 0.001

        # The bottom level naps past the deadline: every level times out, and the
        # inner calls give up with the budget they were handed, not their own 30 s.
        Relay.ran.clear()
        t0 = time.monotonic()
        with pytest.raises(ToolTimeout):
            await mesh.tools.call(
                "relay.hop", {"depth": 2, "nap": 3.0}, principal="tester", timeout=1.0
            )
        assert time.monotonic() - t0 < 3.0


async def test_an_expired_call_is_not_run(mesh: Mesh) -> None:
    await mesh.tools.grants.grant("tester", "relay.hop")
    async with running_worker(mesh, Relay):
        pass  # declares the mailbox and publishes the tool
    with pytest.raises(ToolTimeout):
        await mesh.tools.call("relay.hop", {"depth": 0}, principal="tester", timeout=0.3)
    async with running_worker(mesh, Relay, WorkerConfig()) as worker:
        await eventually(lambda: worker.expired == 1)
        assert Relay.ran == []


async def test_a_stale_tool_spec_is_read_again_before_it_refuses(mesh: Mesh, nats_url: str) -> None:
    """A caller's cached spec is older than the registry's (a worker since started
    with a new schema): arguments the old schema refuses are checked against the
    registry's before `ToolArgumentsInvalid`, and the call goes through."""
    real = next(t for t in spec_of(Vault).tools if t.name == "vault.deposit")
    schema = {**real.input_schema, "required": [*real.input_schema["required"], "ticket"]}
    await mesh.tools.publish([msgspec.structs.replace(real, input_schema=schema)])
    assert "ticket" in (await mesh.tools.spec("vault.deposit")).input_schema["required"]
    served = await Mesh.connect(nats_url, prefix=mesh.subjects.prefix, name="served")
    try:
        async with running_worker(served, Vault):  # publishes the real spec
            await mesh.tools.grants.grant("alice", "vault.*")
            call = {"key": "a", "amount": 2}
            assert await mesh.tools.call("vault.deposit", call, principal="alice") == 2
            assert await mesh.tools.spec("vault.deposit") == real  # the cache follows
            with pytest.raises(ToolArgumentsInvalid):  # still refused when truly wrong
                await mesh.tools.call("vault.deposit", {"key": "a"}, principal="alice")
    finally:
        await served.close()
