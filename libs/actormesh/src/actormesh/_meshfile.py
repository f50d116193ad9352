"""`mesh.toml`: the broker, the supervisor and its groups of workers."""

from __future__ import annotations

from pathlib import Path

import msgspec

from ._config import Replication
from ._errors import ConfigError

__all__ = [
    "AgentBridgeSection",
    "AgentHostSpec",
    "BrokerSection",
    "ChildSpec",
    "GrantSpec",
    "GroupSpec",
    "McpSection",
    "McpServerSpec",
    "MeshFile",
    "SupervisorSection",
    "load",
]


class _Section(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    pass


class MeshSection(_Section, frozen=True):
    prefix: str = "mesh"
    #: Copies of every stream and bucket the mesh creates (see `Replication`);
    #: an actor type's `MailboxConfig(replicas=...)` overrides it for its own.
    replicas: int = 1
    #: JetStream placement tags for them (servers carrying all of these).
    placement_tags: list[str] = []

    def replication(self) -> Replication:
        return Replication(replicas=self.replicas, placement_tags=tuple(self.placement_tags))

    def __post_init__(self) -> None:
        self.replication()  # checks the values


class BrokerSection(_Section, frozen=True):
    """The broker: the embedded nats-server(s) `actormesh up` runs, unless `url`
    (or NATS_URL, or --nats-url) names existing ones."""

    #: An existing broker or cluster instead of an embedded one: a URL, several
    #: separated by commas, or a list. NATS_URL and --nats-url override it.
    url: str | list[str] = ""
    host: str = "127.0.0.1"
    #: The client port (node i of a cluster listens on port + i; 0: random ports).
    port: int = 4222
    #: Embedded nodes: 1, or 3 (or 5) for a JetStream cluster on this machine,
    #: one process and store (`store_dir`/n1, n2, ...) per node.
    nodes: int = 1
    #: The route port of node 1 of a cluster (node i: cluster_port + i; 0: free
    #: ports picked at start).
    cluster_port: int = 6222
    store_dir: str = ".actormesh/nats"
    #: fsync every write: an acked message survives a machine crash.
    sync_always: bool = True
    max_payload: int = 1024 * 1024

    def __post_init__(self) -> None:
        if not 1 <= self.nodes <= 9:
            raise ConfigError(f"[broker] nodes must be between 1 and 9, not {self.nodes}")
        for name in ("port", "cluster_port"):
            if not 0 <= getattr(self, name) <= 65535 - self.nodes:
                raise ConfigError(f"[broker] {name} {getattr(self, name)} is out of range")
        if self.url:
            from ._settings import server_list

            server_list(self.url)  # a bad URL is named when the file loads

    def servers(self) -> str:
        """`url` as NATS_URL takes it ("" when the broker is embedded)."""
        return self.url if isinstance(self.url, str) else ",".join(self.url)


class ChildSpec(_Section, frozen=True):
    """A supervised child: `replicas` worker processes of one actor class."""

    name: str
    actor: str = ""
    #: A command instead of `actor` (argv list); for workers that are not Python actors.
    command: list[str] = []
    replicas: int = 1
    #: permanent: always restarted; transient: only after an abnormal exit;
    #: temporary: never restarted.
    restart: str = "permanent"
    shutdown_grace: float = 30.0
    args: list[str] = []
    env: dict[str, str] = {}

    def __post_init__(self) -> None:
        if not self.actor and not self.command:
            raise ConfigError(f'child {self.name!r}: give `actor = "module:Class"` or `command`')
        if self.restart not in ("permanent", "transient", "temporary"):
            raise ConfigError(
                f"child {self.name!r}: restart must be permanent, transient or temporary"
            )
        if self.replicas < 1:
            raise ConfigError(f"child {self.name!r}: replicas must be >= 1")


class GroupSpec(_Section, frozen=True):
    """A supervisor group: children restarted together per `strategy`."""

    name: str
    strategy: str = "one_for_one"
    #: Restart intensity: more than `intensity` restarts within `period` seconds
    #: marks the group failed and escalates.
    intensity: int = 3
    period: float = 60.0
    backoff_min: float = 0.1
    backoff_max: float = 5.0
    backoff_jitter: float = 0.1
    #: A child that ran this long without failing has its backoff reset.
    reset_after: float = 30.0
    children: list[ChildSpec] = []

    def __post_init__(self) -> None:
        if self.strategy not in ("one_for_one", "one_for_all", "rest_for_one"):
            raise ConfigError(
                f"group {self.name!r}: strategy must be one_for_one, one_for_all or rest_for_one"
            )
        names = [c.name for c in self.children]
        if len(set(names)) != len(names):
            raise ConfigError(f"group {self.name!r}: child names must be unique")


class SupervisorSection(_Section, frozen=True):
    name: str = "root"
    dashboard_host: str = "127.0.0.1"
    dashboard_port: int = 8765
    #: The dashboard links trace ids here: a URL with `{trace_id}` in it, such as
    #: Jaeger's "http://127.0.0.1:16686/trace/{trace_id}" ("": no links).
    trace_url: str = ""
    #: process: spawn the workers; docker: restart containers; none: observe only.
    backend: str = "process"
    docker_socket: str = "/var/run/docker.sock"
    heartbeat_interval: float = 1.0
    heartbeat_misses: int = 3
    #: A consumer whose ack floor has not moved for this long while its mailbox has
    #: messages and its workers heartbeat is declared stalled.
    stall_after: float = 30.0
    intensity: int = 5
    period: float = 300.0
    #: Subject prefix of a parent supervisor's mesh to escalate to ("" for none).
    parent_prefix: str = ""
    webhook: str = ""
    #: Seconds a started worker may take to send its first heartbeat.
    start_timeout: float = 15.0
    #: A heartbeat whose loop_lag exceeds this (seconds) shows a blocked event loop.
    loop_lag_warning: float = 0.5
    #: How long a restarted supervisor listens for heartbeats before starting the
    #: workers it found no trace of (0: one and a half heartbeat intervals).
    discovery_window: float = 0.0
    #: A supervision tree across hosts: `standalone` (no tree), `host` (runs this
    #: host's workers under a root), `root` (runs no workers; supervises the host
    #: supervisors over NATS with `strategy`, `intensity` and `period`).
    role: str = "standalone"
    #: This host's name in the tree, a subject token ("": the machine's hostname).
    host: str = ""
    #: The root's strategy over its host supervisors: one_for_one or one_for_all.
    strategy: str = "one_for_one"


class GrantSpec(_Section, frozen=True):
    """A `[[grants]]` entry: tools a principal may call, granted when the mesh starts.

    Granting adds to what the grants bucket holds (a grant given at run time stays);
    a revoke at run time lasts until the next start grants it again.
    """

    #: An actor type (its handlers call tools as it) or an external principal.
    principal: str
    #: Tool names or fnmatch patterns (`counter.*`).
    tools: list[str] = []
    #: Tool names or patterns this principal may call only with an operator's
    #: approval (granted too; need not be repeated in `tools`).
    approval: list[str] = []

    def __post_init__(self) -> None:
        if not self.principal:
            raise ConfigError('a [[grants]] entry needs `principal = "..."`')
        if not self.tools and not self.approval:
            raise ConfigError(
                f"grants for {self.principal!r}: list the tools it may call "
                '(`tools = ["counter.*"]`)'
            )


class McpServerSpec(_Section, frozen=True):
    """An `[[mcp_servers]]` entry: an external MCP server (a stdio `command` or a
    streamable HTTP `url`) whose tools the mesh serves as `mcp.<name>.<tool>`.

    `load` runs each as a supervised child `mcp-<name>` (`actormesh mcp-client`, actor
    type `mcp-<name>`) in a generated one_for_one group `mcp_servers`.
    """

    name: str
    command: list[str] = []
    url: str = ""
    #: The stdio server's environment (it gets only a minimal one besides).
    env: dict[str, str] = {}

    def __post_init__(self) -> None:
        from ._subjects import check_actor_type

        check_actor_type(f"mcp-{self.name}")
        if bool(self.command) == bool(self.url):
            raise ConfigError(
                f"mcp server {self.name!r}: give exactly one of `command = [...]` or `url`"
            )

    def child(self) -> ChildSpec:
        argv = ["{python}", "-m", "actormesh", "--nats-url", "{nats_url}",
                "--prefix", "{prefix}", "mcp-client",
                "--heartbeat-interval", "{heartbeat_interval}"]  # fmt: skip
        argv += [f"--env={k}={v}" for k, v in self.env.items()]
        if self.url:
            argv += ["--url", self.url, self.name]
        else:
            argv += [self.name, "--", *self.command]
        return ChildSpec(name=f"mcp-{self.name}", command=argv, shutdown_grace=10.0)


#: The group `load` puts the `[[mcp_servers]]` children in.
MCP_GROUP = "mcp_servers"
#: The group `load` puts the `[[agents]]` and `[agent_bridge]` children in.
AGENTS_GROUP = "agents"
#: In a child's command, replaced by `load` with the mesh file's absolute path.
CONFIG_PLACEHOLDER = "{config}"


class McpSection(_Section, frozen=True):
    """`[mcp]`: the bearer tokens of `actormesh mcp --http --config <this file>`.

    Both may be given: the tokens file's and these are merged. Tokens are secrets:
    this section's repr names how many there are, never one.
    """

    #: A tokens file (TOML `[tokens]` or JSON), as `actormesh mcp --tokens` reads.
    tokens_file: str = ""
    #: token = principal.
    tokens: dict[str, str] = {}

    def __repr__(self) -> str:
        return f"McpSection(tokens_file={self.tokens_file!r}, tokens=<{len(self.tokens)} hidden>)"

    def __post_init__(self) -> None:
        if any(not (t and isinstance(p, str) and p) for t, p in self.tokens.items()):
            raise ConfigError("[mcp] tokens: every token needs a non-empty principal name")


class AgentHostSpec(_Section, frozen=True):
    """An `[[agents]]` entry: a tool served as an Agent Protocol agent.

    `load` runs each as a supervised child `agent-host-<name>` (`actormesh
    agent-host`, with a worker of type `agent_host-<name>` for its heartbeats) in
    a generated one_for_one group `agents`.
    """

    #: The agent's name (lowercase letters, digits, '-').
    name: str
    tool: str
    #: Who calls the tool (it needs a grant).
    principal: str
    owner: str = "actormesh"
    session: str = "default"
    description: str = ""
    #: The tool argument the prompt text goes into ("": the tool's only string one).
    prompt_arg: str = ""
    timeout: float = 30.0

    def __post_init__(self) -> None:
        from ._subjects import check_actor_type

        if not self.name or not all(c.islower() or c.isdigit() or c == "-" for c in self.name):
            raise ConfigError(f"agent {self.name!r}: use lowercase letters, digits and '-'")
        check_actor_type(f"agent_host-{self.name}")
        if not self.tool or not self.principal:
            raise ConfigError(f"agent {self.name!r}: give `tool` and `principal`")

    def child(self) -> ChildSpec:
        argv = ["{python}", "-m", "actormesh", "--nats-url", "{nats_url}",
                "--prefix", "{prefix}", "agent-host", "--name", self.name,
                "--tool", self.tool, "--principal", self.principal,
                "--owner", self.owner, "--session", self.session,
                "--timeout", f"{self.timeout:g}",
                "--worker-heartbeat", "{heartbeat_interval}"]  # fmt: skip
        if self.description:
            argv += ["--description", self.description]
        if self.prompt_arg:
            argv += ["--prompt-arg", self.prompt_arg]
        return ChildSpec(name=f"agent-host-{self.name}", command=argv, shutdown_grace=10.0)


class AgentBridgeSection(_Section, frozen=True):
    """`[agent_bridge]`: Agent Protocol agents served as tools `agent-<name>.prompt`.

    `load` runs it as the supervised child `agent-bridge` (`actormesh agent-bridge`)
    in the generated group `agents`."""

    #: Only these agents; empty: every agent discovered.
    agents: list[str] = []
    #: Seconds between looks for new agents.
    rediscover: float = 30.0

    def child(self) -> ChildSpec:
        argv = ["{python}", "-m", "actormesh", "--nats-url", "{nats_url}",
                "--prefix", "{prefix}", "agent-bridge",
                "--rediscover", f"{self.rediscover:g}",
                "--worker-heartbeat", "{heartbeat_interval}"]  # fmt: skip
        for agent in self.agents:
            argv += ["--agent", agent]
        return ChildSpec(name="agent-bridge", command=argv, shutdown_grace=10.0)


class MeshFile(_Section, frozen=True):
    mesh: MeshSection = MeshSection()
    broker: BrokerSection = BrokerSection()
    supervisor: SupervisorSection = SupervisorSection()
    groups: list[GroupSpec] = []
    #: Applied to the grants bucket when the mesh starts (see `GrantSpec`).
    grants: list[GrantSpec] = []
    #: External MCP servers, run as supervised children (see `McpServerSpec`).
    mcp_servers: list[McpServerSpec] = []
    #: The MCP server's bearer tokens (see `McpSection`).
    mcp: McpSection = McpSection()
    #: Tools served as Agent Protocol agents, run as supervised children.
    agents: list[AgentHostSpec] = []
    #: Agents served as tools, run as a supervised child (see `AgentBridgeSection`).
    agent_bridge: AgentBridgeSection | None = None

    def children(self) -> list[tuple[GroupSpec, ChildSpec]]:
        return [(g, c) for g in self.groups for c in g.children]


def load(path: str | Path) -> MeshFile:
    p = Path(path)
    try:
        data = p.read_bytes()
    except FileNotFoundError:
        raise ConfigError(f"{p} not found: run from the repository root or pass --config") from None
    try:
        meshfile = msgspec.toml.decode(data, type=MeshFile)
    except (msgspec.ValidationError, msgspec.DecodeError) as exc:
        raise ConfigError(f"{p}: {exc}") from exc
    return _with_config_path(with_agents_group(with_mcp_group(meshfile)), p.resolve())


def _with_config_path(meshfile: MeshFile, path: Path) -> MeshFile:
    """`meshfile` with `{config}` in its children's commands replaced by `path` (so
    `actormesh mcp --config {config}` reads the file the supervisor was given)."""
    if not any(CONFIG_PLACEHOLDER in a for _, c in meshfile.children() for a in c.command):
        return meshfile
    groups = [
        msgspec.structs.replace(
            g,
            children=[
                msgspec.structs.replace(
                    c, command=[a.replace(CONFIG_PLACEHOLDER, str(path)) for a in c.command]
                )
                for c in g.children
            ],
        )
        for g in meshfile.groups
    ]
    return msgspec.structs.replace(meshfile, groups=groups)


def with_agents_group(meshfile: MeshFile) -> MeshFile:
    """`meshfile` with its `[[agents]]` and `[agent_bridge]` as the children of a
    group `agents`."""
    children = [a.child() for a in meshfile.agents]
    if meshfile.agent_bridge is not None:
        children.append(meshfile.agent_bridge.child())
    if not children:
        return meshfile
    if any(g.name == AGENTS_GROUP for g in meshfile.groups):
        raise ConfigError(f"group {AGENTS_GROUP!r} is the [[agents]]' own: rename yours")
    group = GroupSpec(name=AGENTS_GROUP, children=children)
    return msgspec.structs.replace(meshfile, groups=[*meshfile.groups, group])


def with_mcp_group(meshfile: MeshFile) -> MeshFile:
    """`meshfile` with its `[[mcp_servers]]` as the children of a group `mcp_servers`."""
    if not meshfile.mcp_servers:
        return meshfile
    if any(g.name == MCP_GROUP for g in meshfile.groups):
        raise ConfigError(f"group {MCP_GROUP!r} is the [[mcp_servers]]' own: rename yours")
    group = GroupSpec(name=MCP_GROUP, children=[s.child() for s in meshfile.mcp_servers])
    return msgspec.structs.replace(meshfile, groups=[*meshfile.groups, group])
