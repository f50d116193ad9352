"""`mesh.toml`: the broker, the supervisor and its groups of workers."""

from __future__ import annotations

from pathlib import Path

import msgspec

from ._errors import ConfigError

__all__ = [
    "BrokerSection",
    "ChildSpec",
    "GrantSpec",
    "GroupSpec",
    "McpServerSpec",
    "MeshFile",
    "SupervisorSection",
    "load",
]


class _Section(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    pass


class MeshSection(_Section, frozen=True):
    prefix: str = "mesh"


class BrokerSection(_Section, frozen=True):
    """The embedded nats-server `actormesh up` runs when NATS_URL is not set."""

    host: str = "127.0.0.1"
    port: int = 4222
    store_dir: str = ".actormesh/nats"
    #: fsync every write: an acked message survives a machine crash.
    sync_always: bool = True
    max_payload: int = 1024 * 1024


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


class MeshFile(_Section, frozen=True):
    mesh: MeshSection = MeshSection()
    broker: BrokerSection = BrokerSection()
    supervisor: SupervisorSection = SupervisorSection()
    groups: list[GroupSpec] = []
    #: Applied to the grants bucket when the mesh starts (see `GrantSpec`).
    grants: list[GrantSpec] = []
    #: External MCP servers, run as supervised children (see `McpServerSpec`).
    mcp_servers: list[McpServerSpec] = []

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
    return with_mcp_group(meshfile)


def with_mcp_group(meshfile: MeshFile) -> MeshFile:
    """`meshfile` with its `[[mcp_servers]]` as the children of a group `mcp_servers`."""
    if not meshfile.mcp_servers:
        return meshfile
    if any(g.name == MCP_GROUP for g in meshfile.groups):
        raise ConfigError(f"group {MCP_GROUP!r} is the [[mcp_servers]]' own: rename yours")
    group = GroupSpec(name=MCP_GROUP, children=[s.child() for s in meshfile.mcp_servers])
    return msgspec.structs.replace(meshfile, groups=[*meshfile.groups, group])
