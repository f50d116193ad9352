"""The broker's authorization compiled from the grants (`actormesh authz`), and
docker/nats.conf kept generated: drift fails here."""

from __future__ import annotations

from pathlib import Path

import pytest

from actormesh import ConfigError, Grant
from actormesh._tools._authz import (
    ActorFacts,
    MeshFacts,
    Permissions,
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


def reach(perm: Permissions) -> set[str]:
    """The actor types whose mailboxes a user may publish to."""
    types = {p.split(".")[2] for p in perm.publish if p.startswith("mesh.mbox.")}
    # The micro endpoints follow the mailboxes (an endpoint request is relayed there).
    assert types == {p.split(".")[2] for p in perm.publish if p.startswith("mesh.svc.")}
    return types


def test_a_user_reaches_only_its_own_granted_and_named_mailboxes() -> None:
    given = grants(alice=["vault.*"], relay=["vault.balance"])
    perms = compile_config(USERS, MESH, given).permissions
    assert reach(perms["mallory"]) == set()
    assert reach(perms["alice"]) == {"vault"}
    # A worker reaches its own type, and the types it is granted a tool of.
    assert reach(perms["relay"]) == {"relay", "vault"}
    assert reach(perms["vault"]) == {"vault"}
    # A type without tools is no longer open to all: only to those naming it.
    assert reach(perms["plain"]) == {"plain"}
    assert reach(perms["app"]) == {"vault"}
    assert "mesh.>" in perms["supervisor"].publish  # it sends anything
    for name, perm in perms.items():
        assert not {"mesh.mbox.>", "mesh.svc.>"} & set(perm.publish), name
        assert perm.publish_deny == ()
    # A client direct-gets its own grant only; the workers enforcing grants read all.
    assert "$JS.API.DIRECT.GET.KV_mesh_grants.$KV.mesh_grants.alice" in perms["alice"].publish
    assert "$JS.API.DIRECT.GET.KV_mesh_grants.>" not in perms["alice"].publish
    assert "$JS.API.DIRECT.GET.KV_mesh_grants.>" in perms["vault"].publish
    # A worker publishes its own tools to the registry, no one else's.
    assert "$KV.mesh_tools.vault.deposit" in perms["vault"].publish
    assert not [p for p in perms["relay"].publish if p.startswith("$KV.mesh_tools.vault")]


def test_a_worker_whose_handlers_send_to_another_type_names_it() -> None:
    # `mailboxes` of a worker user: the types its handlers reach with ctx.ref.
    users = UsersFile(users=[UserSpec(name="relay", role="worker", child="relay",
                                      mailboxes=["plain"])])  # fmt: skip
    perm = compile_config(users, MESH, {}).permissions["relay"]
    assert reach(perm) == {"relay", "plain"}


def test_a_worker_answers_and_beats_only_as_its_own_type() -> None:
    perms = compile_config(USERS, MESH, grants(relay=["vault.*"])).permissions
    for name in ("vault", "relay", "plain"):
        perm = perms[name]
        assert [s for s in perm.subscribe if ".sys.ctl." in s] == [f"mesh.sys.ctl.{name}.*"]
        assert [p for p in perm.publish if ".sys.hb." in p] == [f"mesh.sys.hb.{name}.*"]
        assert [p for p in perm.publish if ".dlq." in p] == [f"mesh.dlq.{name}"]
        approvals = [p for p in perm.publish if p.startswith("$KV.mesh_approvals.")]
        assert approvals == ([f"$KV.mesh_approvals.{name}.>"] if name != "plain" else [])
        # Its own type's subjects only, whatever it may send to.
        others = {"vault", "relay", "plain"} - {name}
        for s in perm.subscribe:
            assert not any(f".{o}." in s or s.endswith(f".{o}") for o in others), (name, s)
        # Any kind of event, published under its own type only.
        assert [p for p in perm.publish if ".sys.evt." in p] == [f"mesh.sys.evt.*.{name}"]


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


INTEROP_MESH = """
[mesh]
prefix = "mesh"

[[groups]]
name = "interop"

  [[groups.children]]
  name = "mcp"
  command = ["{python}", "-m", "actormesh", "--nats-url", "{nats_url}", "--prefix", "{prefix}",
             "mcp", "--http", "--config", "{config}"]

[[mcp_servers]]
name = "files"
command = ["files-server"]

[[agents]]
name = "shouter"
tool = "mcp.files.read"
principal = "helper"

[agent_bridge]
agents = ["echoer"]

[[grants]]
principal = "ide"
tools = ["mcp.files.*"]

[[grants]]
principal = "helper"
tools = ["mcp.files.read"]
"""

INTEROP_USERS = """
[[users]]
name = "supervisor"
role = "supervisor"

[[users]]
name = "mcp"
role = "worker"
child = "mcp"
principals = ["ide"]

[[users]]
name = "files"
role = "worker"
child = "mcp-files"

[[users]]
name = "shouter"
role = "worker"
child = "agent-host-shouter"

[[users]]
name = "bridge"
role = "worker"
child = "agent-bridge"

[[users]]
name = "alice"
role = "client"
"""


def test_authz_knows_the_mcp_and_agent_children(tmp_path: Path) -> None:
    mesh_file, users_file = tmp_path / "mesh.toml", tmp_path / "users.toml"
    mesh_file.write_text(INTEROP_MESH)
    users_file.write_text(INTEROP_USERS)
    compiled = generate(mesh_file, users_file)
    perms = compiled.permissions
    # The external server's tools are known by their prefix: its mailbox is closed to
    # a user without a grant on one of them, and open to the MCP server's user, which
    # calls as its token principal `ide`, and to the agent host, calling as `helper`.
    assert "mcp-files" not in reach(perms["alice"])
    assert reach(perms["mcp"]) == {"mcp-server", "mcp-files"}
    assert reach(perms["shouter"]) == {"agent_host-shouter", "mcp-files"}
    # The MCP client worker publishes its server's tools (any name under its prefix).
    assert "$KV.mesh_tools.mcp.files.>" in perms["files"].publish
    assert "$JS.API.STREAM.CREATE.MESH_MBOX_MCP_FILES" in perms["files"].publish
    # The MCP server's own worker (mcp-server) and its tool calls.
    assert any("mcp-server" in s for s in perms["mcp"].subscribe)
    # The agent host serves its agent's subjects; the bridge prompts agents and runs
    # one worker per bridged agent (`agent-echoer`).
    assert "agents.prompt.shouter.>" in perms["shouter"].subscribe
    assert "agents.hb.shouter.>" in perms["shouter"].publish
    assert "agents.prompt.>" in perms["bridge"].publish
    assert "mesh.sys.hb.agent-echoer.*" in perms["bridge"].publish
    assert "mesh.sys.ctl.agent-echoer.*" in perms["bridge"].subscribe
    assert "$KV.mesh_tools.agent-echoer.prompt" in perms["bridge"].publish
    assert reach(perms["bridge"]) == {"agent_bridge", "agent-echoer"}
    assert "agent-echoer" not in reach(perms["alice"])
    assert "user: mcp," in compiled.text


def test_a_bridge_of_every_agent_is_warned_about(tmp_path: Path) -> None:
    mesh_file, users_file = tmp_path / "mesh.toml", tmp_path / "users.toml"
    mesh_file.write_text("[agent_bridge]\n")
    users_file.write_text('[[users]]\nname = "bridge"\nrole = "worker"\nchild = "agent-bridge"\n')
    compiled = generate(mesh_file, users_file)
    assert any("agents = [...]" in w for w in compiled.warnings)
