"""What every role of the supervisor reads and changes.

The groups of mesh.toml and their slots, the latest heartbeat of each worker,
the supervisor-wide restart window with its failed flag, the run status, and
the counters /metrics reports. Detection, restarts, escalation and the
timeline each act on this one state; `Supervisor` extends it with the roles.
"""

from __future__ import annotations

import asyncio
import socket
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Literal

from actormesh import Event, Mesh
from actormesh.lowlevel import ChildSpec, GroupSpec, Subjects

from ._errors import SupervisorError
from ._options import SupervisorOptions
from ._policy import RestartWindow
from ._views import Slot, WorkerView

__all__ = [
    "Command",
    "Failure",
    "FailureCause",
    "GroupRuntime",
    "SupervisorState",
    "SupervisorStatus",
]

SupervisorStatus = Literal["starting", "running", "stopping", "stopped"]
#: How a failure was noticed: the process exited (or said its last word), its
#: heartbeats stopped, it never sent a first one, its consumer stalled, or the
#: backend could not start it.
FailureCause = Literal["exit", "heartbeat", "start_timeout", "stall", "launch"]


@dataclass(eq=False)
class Failure:
    """One failure (or clean exit) of one incarnation, queued for its group."""

    slot: Slot
    generation: int
    cause: FailureCause
    abnormal: bool
    reason: str
    #: The `failed` event to record (None for a clean exit).
    event: Event | None


#: An operator action, queued like a failure so it never races a restart.
Command = Callable[[], Awaitable[None]]


@dataclass(eq=False)
class GroupRuntime:
    spec: GroupSpec
    window: RestartWindow
    slots: list[Slot] = field(default_factory=list)
    failed: bool = False
    failed_reason: str = ""
    failed_at: float = 0.0
    queue: asyncio.Queue[Failure | Command] = field(default_factory=asyncio.Queue)
    #: A failure or command is being handled (restarts may be under way).
    busy: bool = False


class SupervisorState:
    """The supervisor's state: built from the options, changed by its roles."""

    def __init__(self, options: SupervisorOptions) -> None:
        self.options = options
        self.sup = options.meshfile.supervisor
        self.subjects = Subjects(options.prefix)
        self.source = options.source
        self.host = socket.gethostname()
        self.status: SupervisorStatus = "starting"
        self.mesh: Mesh | None = None
        self.groups: dict[str, GroupRuntime] = {}
        self.children: dict[str, tuple[GroupSpec, ChildSpec]] = {}
        for group in options.meshfile.groups:
            self.groups[group.name] = GroupRuntime(
                spec=group, window=RestartWindow(group.intensity, group.period)
            )
            for child in group.children:
                self.children[child.name] = (group, child)
        self.slots: dict[str, Slot] = {}
        self.views: dict[str, WorkerView] = {}
        #: The supervisor-wide intensity, across all groups.
        self.window = RestartWindow(self.sup.intensity, self.sup.period)
        self.failed = False
        self.failed_reason = ""
        #: Per-worker (restarts, failures) carried over from a predecessor.
        self.restored: dict[str, tuple[int, int]] = {}
        # Counters for /metrics and the dashboard.
        self.heartbeats = 0
        self.bad_heartbeats = 0
        self.restarts_total: dict[tuple[str, str], int] = {}
        self.failures_total: dict[tuple[str, str, str], int] = {}
        self.escalations_total: dict[str, int] = {}
        self.detections: deque[tuple[str, float]] = deque(maxlen=200)

    @property
    def interval(self) -> float:
        return self.sup.heartbeat_interval

    @property
    def dead_after(self) -> float:
        return self.sup.heartbeat_interval * self.sup.heartbeat_misses

    @property
    def active(self) -> bool:
        """Starting or running: failures are acted on."""
        return self.status in ("starting", "running")

    def slot(self, worker_id: str) -> Slot:
        try:
            return self.slots[worker_id]
        except KeyError:
            raise SupervisorError(f"no supervised worker {worker_id!r}") from None

    def group(self, name: str) -> GroupRuntime:
        try:
            return self.groups[name]
        except KeyError:
            raise SupervisorError(f"no group {name!r}") from None

    def child(self, name: str) -> ChildSpec:
        return self.children[name][1]

    def new_slot(self, group: GroupRuntime, child: ChildSpec, worker_id: str) -> Slot:
        index = sum(1 for s in group.slots if s.child == child.name) + 1
        slot = Slot(worker_id=worker_id, group=group.spec.name, child=child.name, index=index)
        slot.restarts, slot.failures = self.restored.get(worker_id, (0, 0))
        group.slots.append(slot)
        self.slots[worker_id] = slot
        return slot

    def clear_failed(self) -> None:
        """An operator restarted a group: the supervisor-wide intensity starts over."""
        if self.failed:
            self.failed = False
            self.failed_reason = ""
            self.window.reset()
