"""The broker's authorization, compiled from the grants: `actormesh authz`.

Where the broker has users (the compose deployment), each NATS user gets the
least it needs. It publishes only to the mailboxes (and micro endpoints) of its
own actor types, of the types one of whose tools its principal is granted, and
of the types its `mailboxes` names; a worker consumes only its own mailbox,
answers only its type's control subject (`<prefix>.sys.ctl.<type>.<worker>`) and
heartbeats, dead-letters and records events only as its type
(`<prefix>.sys.evt.<kind>.<type>`; the event's `worker` field is not checked
against the connection). A subject does
not say who published it, so the mapping is by user: an external principal IS
the NATS user of that name (role `client`); an actor type's principal is the
user its workers connect as (role `worker`, naming the mesh file's child it
runs); the supervisor (role `supervisor`) administers the mesh and may send
anything.

The broker's granularity is the actor type (a mailbox subject names the type
and the key, not the handler); the worker then checks each call's tool against
the grants of the `Am-Principal` header. So a user granted one tool of a type
could name another principal in that header and reach the type's other tools
granted to that principal (or skip an approval the other's grant does not
need): `compile_config` warns, per user and type, about exactly what it could
reach. No warning means naming another principal gains nothing. Grant external
principals whole types (`vault.*`), or put tools that need separating in their
own actor type.

`compile_config` is pure (users, the mesh's actors and tools, grants -> the
nats.conf text); `UsersFile.load`, `mesh_facts` and `grants_of` read the inputs,
`generate` does all of it for `actormesh authz`. (Longer than most modules: each
role's permission lists are one concept and read best side by side.)
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import msgspec

from .._errors import ConfigError
from .._state import kv_key
from .._subjects import Subjects
from ._grants import Grant, matches

__all__ = [
    "ActorFacts",
    "Compiled",
    "MeshFacts",
    "Permissions",
    "ServerSection",
    "UserSpec",
    "UsersFile",
    "compile_config",
    "generate",
    "grants_of",
    "merged",
    "mesh_facts",
]

Role = Literal["supervisor", "worker", "client"]


class ServerSection(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """The broker's own settings (the `[server]` table of the users file)."""

    port: int = 4222
    #: The monitoring port (health checks); 0 leaves it off.
    http_port: int = 8222
    max_payload: str = "1MB"
    store_dir: str = "/data"
    #: fsync every write: an acked message survives a machine crash.
    sync_always: bool = True


class UserSpec(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """A `[[users]]` entry: one NATS user of the mesh's account."""

    name: str
    role: Role
    #: role worker: the mesh file's child this user's workers run.
    child: str = ""
    #: The environment variable holding the password (default `<NAME>_PASSWORD`).
    password_env: str = ""
    #: Actor types whose mailboxes this user may send to besides its own and those
    #: it is granted tools of: plain tells and asks (a client's, or those a worker's
    #: handlers send with `ctx.ref`). Every other mailbox is closed to it.
    mailboxes: list[str] = []
    #: A comment written above the user in nats.conf.
    comment: str = ""
    #: Other principals this user calls tools as: a gateway's callers (the MCP
    #: server's token principals, each named in `Am-Principal` of its calls).
    principals: list[str] = []

    @property
    def password_var(self) -> str:
        return self.password_env or f"{self.name.upper().replace('-', '_')}_PASSWORD"


class UsersFile(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """The broker's users (`docker/users.toml`); the grants come from the mesh file."""

    server: ServerSection = ServerSection()
    #: The account's name in nats.conf.
    account: str = "MESH"
    users: list[UserSpec] = []

    @classmethod
    def load(cls, path: Path) -> UsersFile:
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            raise ConfigError(f"{path} not found: pass the users file with --users") from None
        try:
            users = msgspec.toml.decode(data, type=cls)
        except (msgspec.ValidationError, msgspec.DecodeError) as exc:
            raise ConfigError(f"{path}: {exc}") from exc
        names = [u.name for u in users.users]
        if len(set(names)) != len(names):
            raise ConfigError(f"{path}: a user is listed twice; give each [[users]] its own name")
        return users


class ActorFacts(msgspec.Struct, frozen=True, kw_only=True):
    """What the broker's permissions need to know of one actor type."""

    actor_type: str
    tools: tuple[str, ...] = ()
    keyless: bool = False
    durable_state: bool = False
    partitions: int = 1
    #: A mailbox with priority levels: a consumer per level (`<type>_high`, ...).
    priorities: bool = False
    #: Tools named `<prefix><tool>`, known only at run time (an external MCP
    #: server's, `mcp.<server>.`): any grant that could name one opens the type.
    tool_prefix: str = ""
    #: An Agent Protocol agent this type's process hosts (`agent-host`).
    hosts_agent: str = ""
    #: Whether this type's process prompts Agent Protocol agents (`agent-bridge`).
    prompts_agents: bool = False


class MeshFacts(msgspec.Struct, frozen=True, kw_only=True):
    prefix: str = "mesh"
    #: The mesh file's children (name -> actor type) that run Python actors.
    children: dict[str, str] = {}
    actors: dict[str, ActorFacts] = {}
    #: More actor types a child's process runs (the agent bridge's `agent-<name>`).
    child_types: dict[str, tuple[str, ...]] = {}
    #: Principals a child calls tools as besides its actor type (an agent host's).
    callers: dict[str, tuple[str, ...]] = {}
    warnings: tuple[str, ...] = ()


class Permissions(msgspec.Struct, frozen=True, kw_only=True):
    publish: tuple[str, ...]
    publish_deny: tuple[str, ...] = ()
    subscribe: tuple[str, ...]


class Compiled(msgspec.Struct, frozen=True, kw_only=True):
    text: str
    permissions: dict[str, Permissions]
    warnings: tuple[str, ...] = ()


def mesh_facts(path: Path) -> MeshFacts:
    """Import the mesh file's actors and read off their types and tools."""
    from .._actor import spec_of
    from .._loader import load_actor
    from .._meshfile import load

    meshfile = load(path)
    children: dict[str, str] = {}
    actors: dict[str, ActorFacts] = {}
    for _, child in meshfile.children():
        if not child.actor:
            continue
        spec = spec_of(load_actor(child.actor))
        children[child.name] = spec.actor_type
        actors[spec.actor_type] = ActorFacts(
            actor_type=spec.actor_type,
            tools=tuple(sorted(t.name for t in spec.tools)),
            keyless=spec.keyless,
            durable_state=spec.state_type is not None,
            partitions=spec.mailbox.partitions,
            priorities=spec.mailbox.priorities,
        )
    facts = MeshFacts(prefix=meshfile.mesh.prefix, children=children, actors=actors)
    from ._authz_interop import with_interop

    return with_interop(facts, meshfile)


def grants_of(path: Path) -> dict[str, Grant]:
    """The mesh file's `[[grants]]`, as the grants bucket would hold them."""
    from .._meshfile import load

    out: dict[str, Grant] = {}
    for g in load(path).grants:
        out = merged(out, [Grant(principal=g.principal, tools=[*g.tools, *g.approval],
                                 approval=list(g.approval))])  # fmt: skip
    return out


def merged(grants: dict[str, Grant], more: list[Grant]) -> dict[str, Grant]:
    """`grants` with `more` added (each principal's tools and approvals unioned)."""
    out = dict(grants)
    for g in more:
        old = out.get(g.principal) or Grant(principal=g.principal)
        out[g.principal] = Grant(
            principal=g.principal,
            tools=sorted({*old.tools, *g.tools}),
            approval=sorted({*old.approval, *g.approval}),
        )
    return out


def generate(mesh_file: Path, users_file: Path, *, stored: list[Grant] | None = None) -> Compiled:
    """`actormesh authz --mesh-file M --users U`: the grants are the mesh file's
    `[[grants]]`, plus `stored` (those in the grants bucket, with --from-broker)."""
    grants = merged(grants_of(mesh_file), stored or [])
    return compile_config(UsersFile.load(users_file), mesh_facts(mesh_file), grants)


# -- compiling --------------------------------------------------------------------------


def compile_config(
    users: UsersFile,
    mesh: MeshFacts,
    grants: dict[str, Grant],
    *,
    source: str = "actormesh authz",
) -> Compiled:
    """The nats.conf text for `users`, given the mesh's actors and the grants."""
    perms: dict[str, Permissions] = {}
    notes: dict[str, str] = {}
    warnings: list[str] = []
    for user in users.users:
        principal = _principal(user, mesh)
        callers = [principal, *user.principals, *mesh.callers.get(user.child, ())]
        granted = _granted_types(mesh, [t for c in callers for t in _tools_of(grants, c)])
        if user.role != "supervisor":
            own = (
                (principal, *mesh.child_types.get(user.child, ())) if user.role == "worker" else ()
            )
            notes[user.name] = _reach_note(own, granted, user)
        if user.role == "supervisor":
            perms[user.name] = _supervisor(mesh.prefix)
        elif user.role == "worker":
            perms[user.name] = _worker_of_child(mesh, principal, granted, user)
        else:
            perms[user.name] = _client(mesh, principal, granted, user)
        if user.role != "supervisor":
            warnings += _forgeable(user, callers, granted, mesh, grants)
    for user in users.users:
        for actor_type in sorted(set(user.mailboxes) - set(mesh.actors)):
            warnings.append(
                f"user {user.name!r} opens the mailbox of {actor_type!r}, which is no "
                "Python actor of the mesh file: check the name in `mailboxes`"
            )
    known = {_principal(u, mesh) for u in users.users}
    known |= {p for u in users.users for p in (*u.principals, *mesh.callers.get(u.child, ()))}
    for principal in sorted(set(grants) - known):
        warnings.append(
            f"{principal!r} is granted tools but is no user of the broker: "
            "add it to the users file (role client, or a worker of that actor type)"
        )
    text = _render(users, perms, mesh, source, notes)
    return Compiled(text=text, permissions=perms, warnings=(*mesh.warnings, *warnings))


def _reach_note(own: tuple[str, ...], granted: set[str], user: UserSpec) -> str:
    """Whose mailboxes a user may send to, and why (a comment in nats.conf)."""
    parts = [
        (list(own), "its own"),
        (sorted(granted - set(own)), "granted tools"),
        (sorted(set(user.mailboxes) - set(own) - granted), "named in `mailboxes`"),
    ]
    said = "; ".join(f"{', '.join(types)} ({why})" for types, why in parts if types)
    return f"sends to the mailboxes of: {said}" if said else "sends to no mailbox"


def _principal(user: UserSpec, mesh: MeshFacts) -> str:
    if user.role != "worker":
        return user.name
    actor_type = mesh.children.get(user.child)
    if actor_type is None:
        raise ConfigError(
            f"user {user.name!r}: child {user.child!r} is not a Python actor in the mesh "
            f"file (children: {', '.join(sorted(mesh.children)) or 'none'}); "
            'set `child = "<name>"` to the [[groups.children]] it runs'
        )
    return actor_type


def _granted_types(mesh: MeshFacts, patterns: list[str]) -> set[str]:
    """Actor types at least one of whose tools the patterns grant."""
    return {
        a.actor_type
        for a in mesh.actors.values()
        if any(matches(patterns, t) for t in a.tools)
        or (a.tool_prefix and any(_may_name(p, a.tool_prefix) for p in patterns))
    }


def _may_name(pattern: str, prefix: str) -> bool:
    """Whether `pattern` grants some tool whose name starts with `prefix`."""
    from fnmatch import fnmatchcase

    # A character no tool name has stands for the rest of the name.
    return pattern.startswith(prefix) or fnmatchcase(prefix + "\x00", pattern)


def _tools_of(grants: dict[str, Grant], principal: str) -> list[str]:
    grant = grants.get(principal)
    return grant.tools if grant is not None else []


def _forgeable(
    user: UserSpec, callers: list[str], granted: set[str], mesh: MeshFacts,
    grants: dict[str, Grant],
) -> list[str]:  # fmt: skip
    """What `user` could reach by naming another principal in `Am-Principal`: in
    each mailbox the broker lets it publish to, the tools another principal (not
    one it calls as anyway) is granted and it is not (or without the approval it
    needs)."""
    me = callers[0]
    mine = Grant(
        principal=me,
        tools=sorted({t for c in callers for t in _tools_of(grants, c)}),
        approval=sorted({a for c in callers if (g := grants.get(c)) for a in g.approval}),
    )
    others = {p: g for p, g in grants.items() if p not in callers[1:]}
    admitted = (granted | set(user.mailboxes)) - {me}
    out = []
    for actor_type in sorted(admitted & set(mesh.actors)):
        gains = _gains(mesh.actors[actor_type].tools, mine, others)
        if gains:
            listed = "; ".join(f"{t} as {', '.join(map(repr, ps))}" for t, ps in gains.items())
            out.append(
                f"user {user.name!r} may publish to the mailbox of {actor_type!r}, and by "
                f"naming another principal in Am-Principal could call {listed}: grant "
                f"{me!r} the same tools of {actor_type!r} (or move those tools to an "
                "actor type of their own) to close this"
            )
    return out


def _gains(tools: tuple[str, ...], mine: Grant, grants: dict[str, Grant]) -> dict[str, list[str]]:
    gains: dict[str, list[str]] = {}
    for other in sorted(grants.values(), key=lambda g: g.principal):
        if other.principal == mine.principal:
            continue
        for tool in tools:
            if not matches(other.tools, tool):
                continue
            without_approval = matches(mine.approval, tool) and not matches(other.approval, tool)
            if without_approval or not matches(mine.tools, tool):
                gains.setdefault(tool, []).append(other.principal)
    return gains


def _mailbox_rules(
    mesh: MeshFacts, own: tuple[str, ...], granted: set[str], user: UserSpec
) -> list[str]:
    """The mailboxes and micro endpoints (an endpoint request is relayed into the
    type's mailbox) a user may publish to, and no others: its own types' (a worker
    re-publishes released messages and may tell itself), those of the types it is
    granted a tool of (a tool call is a message to the tool's mailbox), and those
    its `mailboxes` name (plain tells and asks: a client's, or the types a worker's
    handlers send to with `ctx.ref`)."""
    p = mesh.prefix
    reach = [*own, *sorted((granted | set(user.mailboxes)) - set(own))]
    return [f"{p}.{kind}.{t}.>" for t in reach for kind in ("mbox", "svc")]


def _bucket_read(bucket: str, *, create: bool, watch: bool) -> list[str]:
    stream = f"KV_{bucket}"
    out = [
        f"$JS.API.STREAM.INFO.{stream}",
        f"$JS.API.STREAM.MSG.GET.{stream}",
        f"$JS.API.DIRECT.GET.{stream}.>",
    ]
    if create:
        out.append(f"$JS.API.STREAM.CREATE.{stream}")
    if watch:
        out += [
            # An ordered consumer (a watch) is created without a name or filter token.
            f"$JS.API.CONSUMER.CREATE.{stream}",
            f"$JS.API.CONSUMER.CREATE.{stream}.>",
            f"$JS.API.CONSUMER.INFO.{stream}.>",
            f"$JS.API.CONSUMER.DELETE.{stream}.>",
            f"$JS.FC.{stream}.>",
        ]
    return out


def _supervisor(prefix: str) -> Permissions:
    # It sees and steers everything in the mesh, and administers grants and approvals.
    return Permissions(
        publish=(f"{prefix}.>", "$JS.API.>", "$JS.ACK.>", "$JS.FC.>", "$KV.>", "_INBOX.>"),
        subscribe=(f"{prefix}.>", "_INBOX.>"),
    )


def _worker(mesh: MeshFacts, actor: ActorFacts, granted: set[str], user: UserSpec) -> Permissions:
    p, t = mesh.prefix, actor.actor_type
    s = Subjects(p)
    mbox = s.mailbox_stream(t)
    pub = ["$JS.API.INFO", f"$JS.API.STREAM.INFO.{mbox}", f"$JS.API.STREAM.CREATE.{mbox}"]
    for stream in (s.dlq_stream, s.events_stream):
        pub += [f"$JS.API.STREAM.{op}.{stream}" for op in ("INFO", "CREATE", "UPDATE")]
    if actor.durable_state:
        bucket = s.state_bucket(t)
        pub += [*_bucket_read(bucket, create=True, watch=False), f"$KV.{bucket}.>"]
    # Its control subject under its type only (`Subjects.control_of`), and its NATS
    # micro service: discovery ($SRV.PING|INFO|STATS[.<type>[.<id>]]) and the
    # endpoints of its handlers.
    sub = ["_INBOX.>", s.control_of(t, "*"), "$SRV.*", f"$SRV.*.{t}", f"$SRV.*.{t}.*",
           f"{p}.svc.{t}.>"]  # fmt: skip
    if not actor.keyless:
        pub += _parked(p, t)
        sub += [f"{p}.sys.hb.{t}.*", f"{p}.sys.release.{t}"]
    consumers = (
        [s.consumer(t)]
        if actor.partitions <= 1
        else [s.consumer(t, i) for i in range(actor.partitions)]
    )
    if actor.priorities:
        consumers += [s.consumer(t, level=lv) for lv in ("high", "low")]
    pub += [f"$JS.API.CONSUMER.INFO.{mbox}.{c}" for c in consumers]
    pub.append(f"$JS.API.CONSUMER.CREATE.{mbox}.>")
    pub += [f"$JS.API.CONSUMER.DURABLE.CREATE.{mbox}.{c}" for c in consumers]
    pub += [f"$JS.API.CONSUMER.MSG.NEXT.{mbox}.{c}" for c in consumers]
    pub.append(f"$JS.ACK.{mbox}.>")
    # Its consumers' pause and resume (an operator's, `actormesh pause`).
    sub += [f"$JS.EVENT.ADVISORY.CONSUMER.PAUSE.{mbox}.{c}" for c in consumers]
    if actor.tools or actor.tool_prefix:
        # It publishes its own tools, and enforces (and asks approval for) every call.
        pub += _bucket_read(f"{p}_tools", create=True, watch=False)
        pub += [f"$KV.{p}_tools.{name}" for name in actor.tools]
        if actor.tool_prefix:
            pub.append(f"$KV.{p}_tools.{actor.tool_prefix}>")
        pub += _bucket_read(f"{p}_grants", create=True, watch=True)
        pub += _bucket_read(f"{p}_approvals", create=True, watch=True)
        # Its own calls' approval records only (their ids start with its type).
        pub.append(f"$KV.{p}_approvals.{kv_key(t)}.>")
    if granted:
        pub += _caller(p, t)
    pub += _mailbox_rules(mesh, (t,), granted, user)
    # Its dead letters, events and heartbeats under its type.
    pub += [s.dlq(t), s.event("*", t), s.heartbeat(t, "*"), "_INBOX.>"]
    return Permissions(publish=_unique(pub), subscribe=_unique(sub))


def _worker_of_child(
    mesh: MeshFacts, actor_type: str, granted: set[str], user: UserSpec
) -> Permissions:
    """A worker user's permissions: those of each actor type its child runs (most
    run one; the agent bridge one per agent), and an agent host's or caller's
    Agent Protocol subjects."""
    types = (actor_type, *mesh.child_types.get(user.child, ()))
    parts = [_worker(mesh, mesh.actors[t], granted, user) for t in types]
    callers = (*user.principals, *mesh.callers.get(user.child, ()))
    pub = [x for part in parts for x in part.publish]
    sub = [x for part in parts for x in part.subscribe]
    for t in types:
        extra_pub, extra_sub = _agent_subjects(mesh.actors[t])
        pub += extra_pub
        sub += extra_sub
    for principal in callers:
        # It calls tools as these too: the registry, and their grants (their tools).
        pub += _caller(mesh.prefix, principal)
    return Permissions(publish=_unique(pub), subscribe=_unique(sub))


def _agent_subjects(actor: ActorFacts) -> tuple[list[str], list[str]]:
    """The Agent Protocol subjects (publish, subscribe) of an agent host or caller."""
    pub: list[str] = []
    sub: list[str] = []
    if actor.hosts_agent:
        n = actor.hosts_agent
        # Its `agents` micro service: prompt and status endpoints, discovery, beats.
        sub += [f"agents.prompt.{n}.>", f"agents.status.{n}.>", "$SRV.*", "$SRV.*.agents",
                "$SRV.*.agents.*"]  # fmt: skip
        pub += [f"agents.hb.{n}.>", "_INBOX.>"]
    if actor.prompts_agents:
        pub += ["agents.prompt.>", "$SRV.INFO.agents", "$SRV.PING.agents"]
    return pub, sub


def _parked(p: str, t: str) -> list[str]:
    from .._worker._containment import parked_stream

    stream = parked_stream(Subjects(p), t)
    return [
        f"$JS.API.STREAM.INFO.{stream}",
        f"$JS.API.STREAM.CREATE.{stream}",
        f"$JS.API.STREAM.MSG.GET.{stream}",
        f"$JS.API.STREAM.MSG.DELETE.{stream}",
        f"$JS.API.DIRECT.GET.{stream}.>",
        f"$JS.API.CONSUMER.CREATE.{stream}.>",
        f"$JS.API.CONSUMER.MSG.NEXT.{stream}.>",
        f"$JS.API.CONSUMER.DELETE.{stream}.>",
        f"$JS.ACK.{stream}.>",
        f"{p}.parked.{t}.>",
    ]


def _caller(p: str, principal: str) -> list[str]:
    """A tool caller: reads the registry (and lists it), and its own grant."""
    grants = f"KV_{p}_grants"
    return [
        *_bucket_read(f"{p}_tools", create=False, watch=True),
        f"$JS.API.STREAM.INFO.{grants}",
        # A direct get names the key in its subject: its own grant only. The grants
        # bucket is created without direct gets, though, and a plain message get
        # names the key in its body, so a caller can read every grant (who may call
        # what; reading grants none).
        f"$JS.API.DIRECT.GET.{grants}.$KV.{p}_grants.{kv_key(principal)}",
        f"$JS.API.STREAM.MSG.GET.{grants}",
    ]


def _client(mesh: MeshFacts, principal: str, granted: set[str], user: UserSpec) -> Permissions:
    # Applications: tell and ask (to the mailboxes left open to them), and call tools.
    allow = _mailbox_rules(mesh, (), granted, user)
    return Permissions(
        publish=_unique([*allow, *_caller(mesh.prefix, principal)]), subscribe=("_INBOX.>",)
    )


def _unique(items: list[str]) -> tuple[str, ...]:
    return tuple(dict.fromkeys(items))


# -- rendering --------------------------------------------------------------------------


def _render(
    users: UsersFile,
    perms: dict[str, Permissions],
    mesh: MeshFacts,
    source: str,
    notes: dict[str, str],
) -> str:
    srv = users.server
    lines = [
        "# The mesh's broker: JetStream, one user per service, least privilege: each",
        "# user sends only to its own mailboxes, those of the types it is granted tools",
        "# of and those its `mailboxes` name; a worker answers only its own type's",
        "# control subject and heartbeats, dead-letters and records events only as its",
        "# own type. Not narrowed: replies travel on _INBOX.> (any user may subscribe",
        "# there).",
        f"# GENERATED by `{source}` from the users file and the mesh file (its actors'",
        "# tools and its [[grants]]): do not edit; change those and generate it again.",
        "# Passwords come from the environment (see compose.yaml / .env.example).",
        "",
        f"port: {srv.port}",
    ]
    if srv.http_port:
        lines.append(f"http_port: {srv.http_port}")
    lines += [
        f"max_payload: {srv.max_payload}",
        "",
        "jetstream {",
        f"  store_dir: {_q(srv.store_dir)}",
    ]
    if srv.sync_always:
        lines.append("  sync_interval: always")
    lines += [
        "}",
        "",
        "accounts {",
        f"  {users.account} {{",
        "    jetstream: enabled",
        "    users: [",
    ]
    for i, user in enumerate(users.users):
        if i:
            lines.append("")
        lines += _render_user(user, perms[user.name], mesh, notes.get(user.name, ""))
    lines += ["    ]", "  }", "}", ""]
    return "\n".join(lines)


def _render_user(user: UserSpec, perm: Permissions, mesh: MeshFacts, note: str) -> list[str]:
    out = [f"      # {c}" if c else "      #" for c in user.comment.strip().splitlines()]
    role = user.role if user.role != "worker" else f"worker of {mesh.children[user.child]!r}"
    out.append(f"      # role: {role}")
    if note:
        out.append(f"      # {note}")
    out.append(f"      {{ user: {user.name}, password: ${user.password_var},")
    out.append("        permissions: {")
    if perm.publish_deny:
        out.append("          publish: {")
        out += _render_list("allow", perm.publish, 12)
        out += _render_list("deny", perm.publish_deny, 12)
        out.append("          }")
    else:
        out += _render_list("publish", perm.publish, 10)
    out += _render_list("subscribe", perm.subscribe, 10)
    out.append("        } }")
    return out


def _render_list(name: str, items: tuple[str, ...], indent: int) -> list[str]:
    pad = " " * indent
    body = [f"{pad}  {_q(item)}," for item in items]
    if body:
        body[-1] = body[-1].rstrip(",")
    return [f"{pad}{name}: [", *body, f"{pad}]"]


def _q(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'
