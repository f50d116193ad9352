"""The broker's authorization compiled from the grants (`actormesh authz`), and
docker/nats.conf kept generated: drift fails here."""

from __future__ import annotations

from pathlib import Path

import pytest

from actormesh import ConfigError, Grant
from actormesh._tools._authz import (
    ActorFacts,
    MeshFacts,
    UsersFile,
    UserSpec,
    compile_config,
    generate,
)

ROOT = Path(__file__).resolve().parents[2]


def grants(**by_principal: list[str]) -> dict[str, Grant]:
    return {p: Grant(principal=p, tools=tools) for p, tools in by_principal.items()}


REGENERATE = (
    "run `actormesh authz --mesh-file docker/mesh.compose.toml --users docker/users.toml "
    "> docker/nats.conf` from the repository root"
)


def test_docker_nats_conf_is_generated() -> None:
    compiled = generate(ROOT / "docker" / "mesh.compose.toml", ROOT / "docker" / "users.toml")
    committed = (ROOT / "docker" / "nats.conf").read_text()
    assert committed == compiled.text, f"docker/nats.conf drifted: {REGENERATE}"


MESH = MeshFacts(
    prefix="mesh",
    children={"vault": "vault", "relay": "relay", "plain": "plain"},
    actors={
        "vault": ActorFacts(
            actor_type="vault",
            tools=("vault.balance", "vault.deposit"),
            durable_state=True,
        ),
        "relay": ActorFacts(actor_type="relay", tools=("relay.hop",), keyless=True),
        "plain": ActorFacts(actor_type="plain", partitions=2),
    },
)
USERS = UsersFile(
    users=[
        UserSpec(name="supervisor", role="supervisor"),
        UserSpec(name="vault", role="worker", child="vault"),
        UserSpec(name="relay", role="worker", child="relay"),
        UserSpec(name="plain", role="worker", child="plain"),
        UserSpec(name="alice", role="client"),
        UserSpec(name="mallory", role="client"),
        UserSpec(name="app", role="client", mailboxes=["vault"]),
    ]
)


def test_a_tool_mailbox_is_closed_to_users_without_a_grant() -> None:
    given = grants(alice=["vault.*"], relay=["vault.balance"])
    perms = compile_config(USERS, MESH, given).permissions
    closed = {"mesh.mbox.vault.>", "mesh.svc.vault.>", "mesh.mbox.relay.>", "mesh.svc.relay.>"}
    assert set(perms["mallory"].publish_deny) == closed
    assert set(perms["alice"].publish_deny) == closed - {"mesh.mbox.vault.>", "mesh.svc.vault.>"}
    # A worker may always send to its own type; an opened mailbox is open.
    assert set(perms["relay"].publish_deny) == set()
    assert set(perms["vault"].publish_deny) == {"mesh.mbox.relay.>", "mesh.svc.relay.>"}
    assert set(perms["app"].publish_deny) == {"mesh.mbox.relay.>", "mesh.svc.relay.>"}
    # A client direct-gets its own grant only; the workers enforcing grants read all.
    assert "$JS.API.DIRECT.GET.KV_mesh_grants.$KV.mesh_grants.alice" in perms["alice"].publish
    assert "$JS.API.DIRECT.GET.KV_mesh_grants.>" not in perms["alice"].publish
    assert "$JS.API.DIRECT.GET.KV_mesh_grants.>" in perms["vault"].publish
    # A worker publishes its own tools to the registry, no one else's.
    assert "$KV.mesh_tools.vault.deposit" in perms["vault"].publish
    assert not [p for p in perms["relay"].publish if p.startswith("$KV.mesh_tools.vault")]
    assert perms["supervisor"].publish_deny == ()


def test_worker_permissions_follow_the_actor() -> None:
    perms = compile_config(USERS, MESH, {}).permissions
    vault, relay, plain = perms["vault"], perms["relay"], perms["plain"]
    assert "$KV.mesh_state_vault.>" in vault.publish  # durable state
    assert "mesh.parked.vault.>" in vault.publish  # keyed: parking
    assert not [p for p in relay.publish if "PARKED" in p or "state" in p]
    assert {
        "$JS.API.CONSUMER.MSG.NEXT.MESH_MBOX_PLAIN.plain_p0",
        "$JS.API.CONSUMER.MSG.NEXT.MESH_MBOX_PLAIN.plain_p1",
    } <= set(plain.publish)
    assert not [p for p in plain.publish if "grants" in p]  # exposes no tools
    assert "mesh.svc.relay.>" in relay.subscribe


def warned(user: str, given: dict[str, Grant]) -> list[str]:
    return [
        w for w in compile_config(USERS, MESH, given).warnings if w.startswith(f"user {user!r}")
    ]


def test_what_a_forged_principal_header_could_reach_is_warned() -> None:
    # alice may publish to vault's mailbox; ops holds more of vault's tools.
    [warning] = warned("alice", grants(alice=["vault.deposit"], ops=["vault.*"]))
    assert warning.startswith("user 'alice' may publish to the mailbox of 'vault'")
    assert "could call vault.balance as 'ops'" in warning
    assert "vault.deposit" not in warning  # alice holds it herself
    # Same tools each: the header cannot gain anything, nothing is warned about.
    same = grants(alice=["vault.*"], relay=["vault.*"])
    assert warned("alice", same) == warned("relay", same) == []
    # A grant without the approval another principal's grant needs is a gain too.
    approval = {
        "alice": Grant(principal="alice", tools=["vault.*"], approval=["vault.deposit"]),
        "relay": Grant(principal="relay", tools=["vault.*"]),
    }
    [warning] = warned("alice", approval)
    assert "could call vault.deposit as 'relay'" in warning
    assert warned("relay", approval) == []
    # A mailbox opened by hand admits its user, granted or not; not granted: not admitted.
    [warning] = warned("app", grants(relay=["vault.balance"]))
    assert "could call vault.balance as 'relay'" in warning
    assert warned("mallory", grants(relay=["vault.balance"])) == []


def test_unknown_principals_and_mailboxes_are_warned() -> None:
    warnings = compile_config(USERS, MESH, grants(bob=["*"])).warnings
    assert any("'bob' is granted tools but is no user" in w for w in warnings)
    users = UsersFile(users=[UserSpec(name="app", role="client", mailboxes=["vualt"])])
    [warning] = compile_config(users, MESH, {}).warnings
    assert "user 'app' opens the mailbox of 'vualt', which is no Python actor" in warning


def test_the_output_is_a_config_the_users_can_read() -> None:
    text = compile_config(USERS, MESH, grants(alice=["vault.*"])).text
    assert "GENERATED" in text
    assert "{ user: alice, password: $ALICE_PASSWORD," in text
    assert text.count("{ user: ") == len(USERS.users)


def test_a_worker_user_must_name_a_child() -> None:
    users = UsersFile(users=[UserSpec(name="w", role="worker", child="nope")])
    with pytest.raises(ConfigError, match="child 'nope'"):
        compile_config(users, MESH, {})


def test_users_file_errors_name_the_fix(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="--users"):
        UsersFile.load(tmp_path / "missing.toml")
    dup = tmp_path / "users.toml"
    dup.write_text('[[users]]\nname = "a"\nrole = "client"\n' * 2)
    with pytest.raises(ConfigError, match="listed twice"):
        UsersFile.load(dup)
    bad = tmp_path / "bad.toml"
    bad.write_text('[[users]]\nname = "a"\nrole = "root"\n')
    with pytest.raises(ConfigError, match="role"):
        UsersFile.load(bad)
