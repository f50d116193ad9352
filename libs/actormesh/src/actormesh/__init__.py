"""actormesh: typed Python actors on durable NATS JetStream mailboxes.

The public surface is what `__all__` lists; everything in `_*` modules is private.
"""

from ._actor import Actor, Context
from ._config import FullPolicy, MailboxConfig, Passivation, SupervisionPolicy, WorkerConfig
from ._errors import (
    ActorMeshError,
    AskTimeout,
    BadMessage,
    BrokerUnavailable,
    ConfigError,
    HandlerError,
    MailboxConflict,
    MailboxFull,
    NoSuchActorType,
    PayloadTooLarge,
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
    "Receipt",
    "RemoteError",
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
