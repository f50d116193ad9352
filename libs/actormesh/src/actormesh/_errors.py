"""The error tree: one root, one subclass per condition a caller can act on.

Every error carries structured fields (not just a message) and says whether
retrying can help (`retryable`), after temporalio's `non_retryable`.
"""

from __future__ import annotations

from typing import Any

__all__ = [
    "ActorMeshError",
    "AskTimeout",
    "BadMessage",
    "BadServerUrl",
    "BrokerUnavailable",
    "ConfigError",
    "HandlerError",
    "MailboxConflict",
    "MailboxFull",
    "NoSuchActorType",
    "PayloadTooLarge",
    "PrioritiesOff",
    "RemoteError",
    "StateConflict",
    "ToolArgumentsInvalid",
    "ToolDenied",
    "ToolError",
    "ToolFailed",
    "ToolNotFound",
    "ToolRejected",
    "ToolTimeout",
]


class ActorMeshError(Exception):
    """Root of every error actormesh raises on purpose."""

    #: Whether the same operation may succeed if tried again later.
    retryable: bool = False
    #: A stable, machine-readable code; also sent on the wire in error replies.
    code: str = "actormesh_error"

    def __init__(self, message: str, *, retryable: bool | None = None) -> None:
        super().__init__(message)
        self.message = message
        if retryable is not None:
            self.retryable = retryable

    def fields(self) -> dict[str, Any]:
        """The structured fields, for logs and error replies."""
        return {"code": self.code, "message": self.message, "retryable": self.retryable}


class ConfigError(ActorMeshError, ValueError):
    """A configuration value is invalid or inconsistent.

    Also a `ValueError`, so code that validated values before this error existed
    keeps catching it.
    """

    code = "config_error"


class BadServerUrl(ConfigError):
    """A broker URL (in NATS_URL, --nats-url, mesh.toml or `Mesh.connect`) cannot
    be parsed. `url` is the one at fault; `servers` the whole list it came in
    (both with any password replaced by ``***``)."""

    code = "bad_server_url"

    def __init__(self, url: str, *, servers: str, detail: str = "") -> None:
        super().__init__(
            f"bad NATS server URL {url!r}"
            + (f" in {servers!r}" if servers != url else "")
            + (f": {detail}" if detail else "")
            + " (expected nats://host:port, several separated by commas)"
        )
        self.url = url
        self.servers = servers


class BrokerUnavailable(ActorMeshError):
    """The NATS broker cannot take the message now: unreachable, the connection
    closed, or (on a cluster) the stream has no leader for a moment.

    Retryable: a send that raises it may or may not have been stored, so send
    it again with the same `msg_id` (the mailbox drops the copy). `reason` says
    which: `connect`, `closed`, `disconnected` (nothing could be written),
    `no_pub_ack` (written, no acknowledgement in time), `no_responders` (no
    stream leader listening: an election, or the node holding the stream is
    down), `jetstream_unavailable` (JetStream answered 503), `in_process` (an
    earlier copy, same id, waits for the stream's quorum).
    """

    code = "broker_unavailable"
    retryable = True

    def __init__(
        self,
        message: str,
        *,
        url: str | None = None,
        reason: str = "",
        subject: str = "",
        msg_id: str = "",
        waited: float = 0.0,
    ) -> None:
        super().__init__(message)
        self.url = url
        self.reason = reason
        self.subject = subject
        #: The message's `Nats-Msg-Id` ("" if it had none): resend under it.
        self.msg_id = msg_id
        #: Seconds the send kept trying before giving up.
        self.waited = waited

    def fields(self) -> dict[str, Any]:
        out = super().fields()
        for name in ("reason", "subject", "msg_id"):
            if getattr(self, name):
                out[name] = getattr(self, name)
        return out


class NoSuchActorType(ActorMeshError):
    """No mailbox stream exists for this actor type: no worker ever declared it."""

    code = "no_such_actor_type"

    def __init__(self, actor_type: str, *, subject: str) -> None:
        super().__init__(
            f"no mailbox for actor type {actor_type!r} (subject {subject}): "
            "start a worker for it (`actormesh worker module:Class`) or declare it "
            "with `await mesh.declare(ActorClass)`"
        )
        self.actor_type = actor_type
        self.subject = subject


class PrioritiesOff(ActorMeshError):
    """A message was sent with a priority to an actor type whose mailbox takes none:
    declare it with `MailboxConfig(priorities=True)` (an existing mailbox needs the
    worker's `update_mailbox`), or send at normal priority."""

    code = "priorities_off"

    def __init__(self, actor_type: str, *, level: str, subject: str) -> None:
        super().__init__(
            f"the mailbox of {actor_type!r} takes no priorities (sent {level!r} to "
            f"{subject}): declare it with MailboxConfig(priorities=True), or send at "
            "normal priority"
        )
        self.actor_type = actor_type
        self.level = level
        self.subject = subject


class MailboxConflict(ActorMeshError):
    """A mailbox stream or consumer exists with settings that differ from ours."""

    code = "mailbox_conflict"

    def __init__(self, name: str, differences: dict[str, tuple[Any, Any]]) -> None:
        diff = ", ".join(f"{k}: existing={a!r} wanted={b!r}" for k, (a, b) in differences.items())
        super().__init__(
            f"{name} exists with different settings ({diff}); refusing to reconfigure it "
            "silently. Align the actor's MailboxConfig, or pass update=True / "
            "`actormesh worker --update-mailbox` to apply the new settings."
        )
        self.name = name
        self.differences = differences


class MailboxFull(ActorMeshError):
    """The actor type's mailbox is at its bound: backpressure, nothing was stored."""

    code = "mailbox_full"
    retryable = True

    def __init__(self, actor_type: str, *, reason: str, waited: float = 0.0) -> None:
        extra = f" after waiting {waited:.2f}s" if waited else ""
        super().__init__(
            f"mailbox of {actor_type!r} is full ({reason}){extra}; the message was not "
            "stored. Retry later, add workers, or raise the mailbox bounds."
        )
        self.actor_type = actor_type
        self.reason = reason
        self.waited = waited


class PayloadTooLarge(ActorMeshError):
    """Headers plus payload exceed what the server (or the mailbox) accepts."""

    code = "payload_too_large"

    def __init__(self, size: int, limit: int, *, what: str = "server max_payload") -> None:
        super().__init__(
            f"message of {size} bytes (headers + payload) exceeds the {what} of {limit} bytes; "
            "nothing was sent and the connection is intact"
        )
        self.size = size
        self.limit = limit


class AskTimeout(ActorMeshError):
    """No reply arrived before the ask's timeout."""

    code = "ask_timeout"
    retryable = True

    def __init__(self, actor_type: str, key: str, timeout: float) -> None:
        super().__init__(
            f"no reply from {actor_type}/{key} within {timeout:g}s; the message stays in the "
            "mailbox and may still run (it will not if its deadline passed first)"
        )
        self.actor_type = actor_type
        self.key = key
        self.timeout = timeout


class BadMessage(ActorMeshError):
    """A message could not be decoded, or its type is not one the actor handles.

    Never retried: the message is dead-lettered at once.
    """

    code = "bad_message"

    def __init__(self, message: str, *, actor_type: str = "", detail: str = "") -> None:
        super().__init__(message)
        self.actor_type = actor_type
        self.detail = detail


class HandlerError(ActorMeshError):
    """Raise from a handler to choose the error code and retryability sent back."""

    code = "handler_error"

    def __init__(
        self, message: str, *, code: str = "handler_error", retryable: bool = True
    ) -> None:
        super().__init__(message, retryable=retryable)
        self.code = code


class RemoteError(ActorMeshError):
    """The remote handler failed; raised by `ask` with the remote's error fields."""

    code = "remote_error"

    def __init__(self, *, code: str, type: str, message: str, retryable: bool) -> None:
        super().__init__(f"{type} [{code}]: {message}", retryable=retryable)
        self.code = code
        self.type = type
        self.remote_message = message


class StateConflict(ActorMeshError):
    """Another process wrote an actor's durable state since it was loaded here.

    The worker handles it itself (reload, run the message again); it reaches user
    code only from the low-level state API."""

    code = "state_conflict"
    retryable = True

    def __init__(self, bucket: str, key: str, *, expected: int) -> None:
        super().__init__(
            f"state of key {key!r} in bucket {bucket} changed since revision {expected}: "
            "reload it and apply the message again"
        )
        self.bucket = bucket
        self.key = key
        self.expected = expected


class ToolError(ActorMeshError):
    """Base of the errors of a tool call; `tool` names the tool."""

    code = "tool_error"

    def __init__(self, message: str, *, tool: str, retryable: bool | None = None) -> None:
        super().__init__(message, retryable=retryable)
        self.tool = tool


class ToolNotFound(ToolError):
    """No worker has published a tool of that name."""

    code = "tool_not_found"

    def __init__(self, tool: str) -> None:
        super().__init__(
            f"no tool named {tool!r}: list them with `mesh.tools.list_available_tools(...)`; "
            "a tool appears once a worker serving its actor type has started",
            tool=tool,
        )


class ToolDenied(ToolError):
    """The principal has no grant for the tool (the default is deny)."""

    code = "tool_denied"

    def __init__(self, tool: str, principal: str) -> None:
        super().__init__(
            f"principal {principal or '(none)'!r} may not call {tool!r}: grant it with "
            f"`actormesh grant {principal or '<principal>'} {tool}`",
            tool=tool,
        )
        self.principal = principal


class ToolArgumentsInvalid(ToolError):
    """The arguments do not match the tool's input schema; nothing was sent."""

    code = "tool_arguments_invalid"

    def __init__(self, tool: str, detail: str) -> None:
        super().__init__(f"arguments for {tool!r} are invalid: {detail}", tool=tool)
        self.detail = detail


class ToolTimeout(ToolError):
    """No result within the call's deadline."""

    code = "tool_timeout"
    retryable = True

    def __init__(self, tool: str, timeout: float) -> None:
        super().__init__(
            f"{tool!r} gave no result within {timeout:g}s (an expired call is not run)",
            tool=tool,
        )
        self.timeout = timeout


class ToolFailed(ToolError):
    """The tool ran and raised; `remote` is its error."""

    code = "tool_failed"

    def __init__(self, tool: str, remote: RemoteError) -> None:
        super().__init__(
            f"{tool!r} failed: {remote.message}", tool=tool, retryable=remote.retryable
        )
        self.remote = remote


class ToolRejected(ToolError):
    """An operator rejected the call that needed approval."""

    code = "tool_rejected"

    def __init__(self, tool: str, reason: str = "") -> None:
        super().__init__(
            f"{tool!r} was rejected by an operator" + (f": {reason}" if reason else ""),
            tool=tool,
        )
        self.reason = reason
