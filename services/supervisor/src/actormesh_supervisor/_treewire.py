"""The supervision tree's wire messages, between host supervisors and their root.

A host supervisor publishes a `HostBeat` (its tree: groups and workers) on
`<prefix>.sys.tree.hb.<host>`; sends a `TreeEscalation` as a request on
`<prefix>.sys.tree.esc.<host>` (the root answers a `TreeReply` once it has taken
it); and takes the root's `TreeCommand`s on `<prefix>.sys.tree.ctl.<host>`.
JSON, strict like every wire Struct of the mesh: an unknown field is refused.
"""

from __future__ import annotations

from typing import Literal

import msgspec

__all__ = [
    "HostBeat",
    "TreeCommand",
    "TreeEscalation",
    "TreeGroup",
    "TreeOp",
    "TreeReply",
    "TreeWorker",
    "decode_beat",
    "decode_command",
    "decode_escalation",
    "decode_reply",
    "encode",
]

#: What a root orders a host supervisor to do: restart one group (its workers,
#: clearing its failure), restart the whole host supervisor (every group, in
#: order, and its own intensity starts over), or stop (drain every worker and exit).
TreeOp = Literal["restart_group", "restart", "stop"]


class _Wire(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    pass


class TreeWorker(_Wire, frozen=True):
    id: str
    child: str
    state: str
    health: str
    actor_type: str = ""
    pid: int | None = None
    restarts: int = 0
    failures: int = 0
    last_failure: str = ""


class TreeGroup(_Wire, frozen=True):
    name: str
    strategy: str
    intensity: int
    period: float
    #: ok, restarting or failed (past its intensity, escalated to the root).
    status: str
    failed_reason: str = ""
    restarts_in_window: int = 0
    workers: list[TreeWorker] = []


class HostBeat(_Wire, frozen=True):
    """A host supervisor's heartbeat: it is alive, and this is its tree."""

    host: str
    supervisor: str
    pid: int
    #: Wall clock of this supervisor process's start: a new value is a new incarnation.
    started_at: float
    sent_at: float
    interval: float
    #: running, failed (past its own intensity), stopping.
    status: str
    failed_reason: str = ""
    intensity: int = 0
    period: float = 0.0
    restarts_in_window: int = 0
    backend: str = ""
    dashboard: str = ""
    groups: list[TreeGroup] = []


class TreeEscalation(_Wire, frozen=True):
    """A host supervisor gave up: a group past its intensity, or itself past its own."""

    #: Unique per escalation: the root acts once however often it is resent.
    id: str
    host: str
    supervisor: str
    scope: Literal["group", "supervisor"]
    group: str = ""
    reason: str = ""
    at: float = 0.0


class TreeCommand(_Wire, frozen=True):
    op: TreeOp
    group: str = ""
    reason: str = ""
    #: The root that gave the order.
    by: str = ""
    id: str = ""


class TreeReply(_Wire, frozen=True):
    ok: bool
    host: str = ""
    error: str = ""


encode = msgspec.json.Encoder().encode
decode_beat = msgspec.json.Decoder(HostBeat).decode
decode_escalation = msgspec.json.Decoder(TreeEscalation).decode
decode_command = msgspec.json.Decoder(TreeCommand).decode
decode_reply = msgspec.json.Decoder(TreeReply).decode
