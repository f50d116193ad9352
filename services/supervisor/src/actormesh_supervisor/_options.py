"""The supervisor's configuration: mesh.toml plus what the entry point learned from
the command line and the environment. Frozen and keyword-only; nothing below the
entry point reads the environment."""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Literal, get_args

from actormesh.lowlevel import GroupSpec, MeshFile, Subjects, SupervisorSection

from ._errors import SupervisorConfigError
from ._split import check_child_split
from ._tree import check_tree

__all__ = ["BackendName", "SupervisorOptions", "is_loopback"]

# Names become subject tokens (worker ids) and Docker label values.
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,47}$")
#: The backends mesh.toml can name (`supervisor.backend`).
BackendName = Literal["process", "docker", "none"]
_BACKENDS: tuple[str, ...] = get_args(BackendName)


def is_loopback(host: str) -> bool:
    """Whether a bind address only accepts connections from this machine."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


@dataclass(frozen=True, kw_only=True, slots=True)
class SupervisorOptions:
    meshfile: MeshFile
    nats_url: str
    prefix: str
    #: Where the state file (pids of spawned workers) and the dashboard token live.
    runtime_dir: Path
    #: The interpreter that runs `python -m actormesh worker ...` for process children.
    python: str
    #: The environment worker processes start from (child `env` is added on top).
    worker_env: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))
    #: The dashboard's login token; "" turns the dashboard off.
    dashboard_token: str = ""
    #: Extra options for `nats.connect` (credentials file, ...).
    nats_creds: str | None = None

    def __post_init__(self) -> None:
        Subjects(self.prefix)  # validates the prefix
        _check_supervisor(self.meshfile.supervisor)
        _check_groups(self.meshfile.groups)
        check_tree(self.meshfile.supervisor, self.meshfile.groups)

    @property
    def source(self) -> str:
        """How this supervisor signs its events."""
        return f"supervisor:{self.meshfile.supervisor.name}"

    @property
    def state_file(self) -> Path:
        return self.runtime_dir / f"supervisor-{self.prefix}-{self.meshfile.supervisor.name}.json"


def _check_supervisor(sup: SupervisorSection) -> None:
    if sup.backend not in _BACKENDS:
        raise SupervisorConfigError(
            f"supervisor.backend must be one of {', '.join(_BACKENDS)}, not {sup.backend!r}"
        )
    if sup.heartbeat_interval <= 0 or sup.heartbeat_misses < 1:
        raise SupervisorConfigError("heartbeat_interval must be > 0 and heartbeat_misses >= 1")
    if sup.intensity < 0 or sup.period <= 0 or sup.stall_after <= 0:
        raise SupervisorConfigError("intensity must be >= 0, period and stall_after > 0")
    if not _NAME_RE.match(sup.name):
        raise SupervisorConfigError(f"supervisor.name {sup.name!r}: use letters, digits, _ and -")
    if sup.parent_prefix:
        Subjects(sup.parent_prefix)
    _check_trace_url(sup.trace_url)


def _check_trace_url(url: str) -> None:
    """A trace-UI template: http(s), with exactly the `{trace_id}` placeholder."""
    if not url:
        return
    if not url.startswith(("http://", "https://")) or "{trace_id}" not in url:
        raise SupervisorConfigError(
            f"supervisor.trace_url {url!r}: give an http(s) URL with {{trace_id}} in it"
        )
    if url.replace("{trace_id}", "").count("{") or url.replace("{trace_id}", "").count("}"):
        raise SupervisorConfigError(
            f"supervisor.trace_url {url!r}: {{trace_id}} is the only placeholder"
        )


def _check_groups(groups: list[GroupSpec]) -> None:
    names: set[str] = set()
    children: set[str] = set()
    for group in groups:
        if not _NAME_RE.match(group.name):
            raise SupervisorConfigError(f"group name {group.name!r}: use letters, digits, _ and -")
        if group.name in names:
            raise SupervisorConfigError(f"group {group.name!r} is declared twice")
        names.add(group.name)
        if group.intensity < 0 or group.period <= 0:
            raise SupervisorConfigError(f"group {group.name!r}: intensity >= 0 and period > 0")
        if group.backoff_min < 0 or group.backoff_max < group.backoff_min:
            raise SupervisorConfigError(
                f"group {group.name!r}: need 0 <= backoff_min <= backoff_max"
            )
        _check_children(group, children)


def _check_children(group: GroupSpec, seen: set[str]) -> None:
    for child in group.children:
        if not _NAME_RE.match(child.name):
            raise SupervisorConfigError(
                f"child name {child.name!r}: use letters, digits, _ and - (it becomes "
                "part of worker ids, which are subject tokens)"
            )
        if child.name in seen:
            # Heartbeats name the child, not the group: the name must be unique.
            raise SupervisorConfigError(f"child {child.name!r} appears in two groups")
        seen.add(child.name)
        if child.shutdown_grace < 0:
            raise SupervisorConfigError(f"child {child.name!r}: shutdown_grace must be >= 0")
        check_child_split(child)
