"""actormesh: typed Python actors on durable NATS JetStream mailboxes.

The public surface is what `__all__` lists; everything in `_*` modules is private.
"""

from ._actor import Actor, Context
from ._config import (
    FullPolicy,
    MailboxConfig,
    Passivation,
    Replication,
    SupervisionPolicy,
    WorkerConfig,
)
from ._errors import (
    ActorMeshError,
    AskTimeout,
    BadMessage,
    BadServerUrl,
    BrokerUnavailable,
    ConfigError,
    HandlerError,
    MailboxConflict,
    MailboxFull,
    NoSuchActorType,
    PayloadTooLarge,
    PrioritiesOff,
    RemoteError,
    StateConflict,
    ToolArgumentsInvalid,
    ToolDenied,
    ToolError,
    ToolFailed,
    ToolNotFound,
    ToolRejected,
    ToolTimeout,
)
from ._interceptor import (
    CallHandler,
    HandleMessage,
    HandlerInterceptor,
    MessageInput,
    Outcome,
    WorkerInterceptor,
)
from ._mesh import ActorRef, Mesh, Receipt
from ._retry import RetryPolicy
from ._tools import Grant, ToolBus, ToolProgress, ToolSpec, tool
from ._version import VERSION as __version__
from ._wire import DeadLetterInfo, ErrorReply, Event, Heartbeat, Message
from ._worker import Worker, WorkerStatus

__all__ = [
    "Actor",
    "ActorMeshError",
    "ActorRef",
    "AskTimeout",
    "BadMessage",
    "BadServerUrl",
    "BrokerUnavailable",
    "CallHandler",
    "ConfigError",
    "Context",
    "DeadLetterInfo",
    "ErrorReply",
    "Event",
    "FullPolicy",
    "Grant",
    "HandleMessage",
    "HandlerError",
    "HandlerInterceptor",
    "Heartbeat",
    "MailboxConfig",
    "MailboxConflict",
    "MailboxFull",
    "Mesh",
    "Message",
    "MessageInput",
    "NoSuchActorType",
    "Outcome",
    "Passivation",
    "PayloadTooLarge",
    "PrioritiesOff",
    "Receipt",
    "RemoteError",
    "Replication",
    "RetryPolicy",
    "StateConflict",
    "SupervisionPolicy",
    "ToolArgumentsInvalid",
    "ToolBus",
    "ToolDenied",
    "ToolError",
    "ToolFailed",
    "ToolNotFound",
    "ToolProgress",
    "ToolRejected",
    "ToolSpec",
    "ToolTimeout",
    "Worker",
    "WorkerConfig",
    "WorkerInterceptor",
    "WorkerStatus",
    "tool",
    "__version__",
]
