"""A supervision tree across hosts: its configuration and its rules.

A supervisor per host runs that host's workers (`role = "host"`); a root
(`role = "root"`) runs no workers and supervises the host supervisors over
NATS, as OTP's top supervisor supervises child supervisors. This module holds
what both sides agree on: the roles, a host's name, the checks of mesh.toml,
and the root's strategy as a pure function (`plan`). The host's side is in
`_host.py`, the root's in `_root.py`.
"""

from __future__ import annotations

import re
import socket
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal, Protocol, get_args

from actormesh.lowlevel import GroupSpec, SupervisorSection

from ._errors import SupervisorConfigError
from ._treewire import TreeOp

__all__ = [
    "ESCALATED_EXIT",
    "ROLES",
    "ROOT_STRATEGIES",
    "Order",
    "Role",
    "TreeRole",
    "Trigger",
    "check_tree",
    "host_name",
    "plan",
]

Role = Literal["standalone", "host", "root"]
ROLES: tuple[str, ...] = get_args(Role)
#: rest_for_one needs a start order, and host supervisors have none among them.
ROOT_STRATEGIES = ("one_for_one", "one_for_all")
#: What the root acts on: a host's group past its intensity, a host supervisor
#: past its own intensity, or a host supervisor whose heartbeats stopped.
Trigger = Literal["group", "supervisor", "lost"]
#: The exit code of a root that escalated past its own intensity (the worker's
#: code for "escalated" too).
ESCALATED_EXIT = 3

_TOKEN_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,47}$")


@dataclass(frozen=True, slots=True)
class Order:
    """One command the root sends to one host supervisor."""

    host: str
    op: TreeOp
    group: str = ""


def plan(strategy: str, *, origin: str, trigger: Trigger, group: str,
         hosts: Sequence[str]) -> list[Order]:  # fmt: skip
    """The orders the root gives when `origin` escalates (or is lost).

    one_for_one restarts what failed: the group, or the whole host supervisor. A
    lost host cannot be restarted from here (its process is on another machine):
    it is counted, and comes back by its own service manager. one_for_all restarts
    every host supervisor the root can reach (`hosts`, live ones, in the order the
    root first heard them), the origin of a group escalation included.
    """
    if strategy == "one_for_one":
        if trigger == "group":
            return [Order(origin, "restart_group", group)]
        if trigger == "supervisor":
            return [Order(origin, "restart")]
        return []
    if strategy == "one_for_all":
        return [Order(h, "restart") for h in hosts if not (trigger == "lost" and h == origin)]
    raise ValueError(f"unknown root strategy {strategy!r}")


def host_name(sup: SupervisorSection) -> str:
    """This host's name in the tree: `host`, or the first label of the hostname."""
    if sup.host:
        return sup.host
    label = socket.gethostname().split(".")[0]
    return re.sub(r"[^A-Za-z0-9_-]", "-", label)[:48].lstrip("_-") or "host"


def check_tree(sup: SupervisorSection, groups: Sequence[GroupSpec]) -> None:
    """mesh.toml's tree settings, refused with a message that says what to write."""
    if sup.role not in ROLES:
        raise SupervisorConfigError(
            f"supervisor.role must be one of {', '.join(ROLES)}, not {sup.role!r}"
        )
    if sup.host and not _TOKEN_RE.match(sup.host):
        raise SupervisorConfigError(
            f"supervisor.host {sup.host!r}: use letters, digits, _ and - (it is a subject token)"
        )
    if sup.strategy not in ROOT_STRATEGIES:
        raise SupervisorConfigError(
            f"supervisor.strategy must be one of {', '.join(ROOT_STRATEGIES)}, not {sup.strategy!r}"
        )
    if sup.role == "host" and sup.name == "root":
        # Events are signed by name, and a restarted supervisor rebuilds from its own:
        # a host named like the root would read the root's events as its own.
        raise SupervisorConfigError(
            'a host supervisor needs its own [supervisor] name (e.g. name = "sup-<host>"); '
            '"root" is the root\'s'
        )
    if sup.role == "root" and groups:
        raise SupervisorConfigError(
            "a root supervisor runs no workers: move its [[groups]] under a host "
            'supervisor (role = "host"), which may run on the same machine'
        )


class TreeRole(Protocol):
    """A supervisor's part in a tree (`HostAgent` or `Root`), as the service sees it."""

    role: Role
    host: str

    async def start(self) -> None: ...

    async def stop(self) -> None: ...

    def view(self) -> dict[str, Any]:
        """The tree as the dashboard shows it (JSON-able)."""
        ...
