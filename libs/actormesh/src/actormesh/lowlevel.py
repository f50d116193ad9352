"""The building blocks below `Mesh` and `Worker`, for services built on actormesh.

`actormesh` is what an application needs: actors, the mesh, workers, the wire
types it sees. A service that runs the mesh (the supervisor, a dashboard, an
operations tool) needs more: the names of subjects and streams, the system
streams, the dead-letter stream, `mesh.toml`, the settings read from the
environment, logging, and the control messages workers answer. This module
is that surface; everything else in `actormesh._*` stays private and may change.

What is here:

- Naming: `Subjects` (every subject, stream and consumer name of a mesh with a
  given prefix), `KEYLESS`, `check_actor_type`, `check_key`.
- Streams: `ensure_mailbox`, `ensure_system_streams` (dead letters, events),
  `mailbox_stream_config`, `consumer_config`. Inspect them with the
  JetStream context `Mesh.js` and the names from `Subjects`.
- Dead letters: `DeadLetters` (list, get, replay, purge) and its
  `DeadLetterNotFound` error.
- Parked keys (keys failing past their restart intensity, see
  `SupervisionPolicy`): `list_parked` (parked keys and their waiting
  messages), `release_parked` (the key's parked messages back to its
  mailbox), `parked_stream` (the stream holding them), `KeyParked` (the
  error asks to a parked key get).
- Lifecycle control: `pause_actor_type`, `resume_actor_type`, `pause_state`
  (`PauseState`: JetStream consumer pause of a type's mailbox),
  `passivate_instance` (stop one actor instance now), `list_instances`
  (`InstanceInfo`: a worker's instances and their state), `drain_worker`
  (finish its messages and stop), `type_workers`
  (the workers of a type heard heartbeating), and their errors `NotPausable`,
  `WorkerUnreachable`.
- The mesh file: `load_meshfile`, `MeshFile` and its sections (`MeshSection`,
  `BrokerSection`, `SupervisorSection`, `GroupSpec`, `ChildSpec`).
- The process edge: `Settings` (the environment, read once),
  `configure_logging`.
- Wire types services use beyond the public ones: `Hdr` (header names),
  `ControlRequest` / `ControlReply` (a worker's control subject),
  `WorkerStats`, `HealthReport`, `ComponentHealth`.
- Retrying: `retry` (the one retry loop; `actormesh.RetryPolicy` is its
  schedule), `RetryBudget`, `RetryExhausted`, `BudgetExhausted`.

Importing this module loads neither `actormesh.patterns` nor
`actormesh.observability` (a test pins it).
"""

from ._dlq import DeadLetterNotFound, DeadLetters
from ._lifecycle import (
    NotPausable,
    PauseState,
    WorkerUnreachable,
    drain_worker,
    list_instances,
    passivate_instance,
    pause_actor_type,
    pause_state,
    resume_actor_type,
    type_workers,
)
from ._logging import configure_logging
from ._mailbox import consumer_config, ensure_mailbox, ensure_system_streams, mailbox_stream_config
from ._meshfile import (
    BrokerSection,
    ChildSpec,
    GroupSpec,
    MeshFile,
    MeshSection,
    SupervisorSection,
)
from ._meshfile import load as load_meshfile
from ._retry import BudgetExhausted, RetryBudget, RetryExhausted, retry
from ._settings import Settings
from ._subjects import KEYLESS, Subjects, check_actor_type, check_key
from ._wire import (
    ComponentHealth,
    ControlReply,
    ControlRequest,
    Hdr,
    HealthReport,
    InstanceInfo,
    WorkerStats,
)
from ._worker._containment import KeyParked, list_parked, parked_stream, release_parked

__all__ = [
    "KEYLESS",
    "BrokerSection",
    "BudgetExhausted",
    "ChildSpec",
    "ComponentHealth",
    "ControlReply",
    "ControlRequest",
    "DeadLetterNotFound",
    "DeadLetters",
    "GroupSpec",
    "Hdr",
    "HealthReport",
    "InstanceInfo",
    "KeyParked",
    "MeshFile",
    "MeshSection",
    "NotPausable",
    "PauseState",
    "RetryBudget",
    "RetryExhausted",
    "Settings",
    "Subjects",
    "SupervisorSection",
    "WorkerStats",
    "WorkerUnreachable",
    "check_actor_type",
    "check_key",
    "configure_logging",
    "consumer_config",
    "drain_worker",
    "ensure_mailbox",
    "ensure_system_streams",
    "list_instances",
    "list_parked",
    "load_meshfile",
    "mailbox_stream_config",
    "parked_stream",
    "passivate_instance",
    "pause_actor_type",
    "pause_state",
    "release_parked",
    "resume_actor_type",
    "retry",
    "type_workers",
]
