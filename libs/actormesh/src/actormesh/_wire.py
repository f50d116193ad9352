"""Wire types and header names: the contract `proto/` is generated from.

Every Struct here forbids unknown fields, so a peer sending something we do
not understand gets a clear error instead of silent loss.
"""

from __future__ import annotations

import msgspec

__all__ = [
    "ComponentHealth",
    "ControlReply",
    "ControlRequest",
    "DeadLetterInfo",
    "ErrorReply",
    "Event",
    "HealthReport",
    "Heartbeat",
    "Hdr",
    "InstanceInfo",
    "Message",
    "ToolStats",
    "WorkerStats",
]


class Hdr:
    """Header names. `Nats-*` are the server's; `Am-*` are ours."""

    MSG_ID = "Nats-Msg-Id"
    REPLY_TO = "Am-Reply-To"
    #: Unix time in milliseconds after which an ask is not run.
    DEADLINE = "Am-Deadline"
    SENDER = "Am-Sender"
    #: On replies: "200" for a value, otherwise an error status with an ErrorReply body.
    STATUS = "Am-Status"
    TRACEPARENT = "traceparent"
    TRACESTATE = "tracestate"
    # Dead-letter reason headers.
    ERROR_CODE = "Am-Error-Code"
    ERROR_TYPE = "Am-Error-Type"
    ERROR_MESSAGE = "Am-Error-Message"
    DELIVERIES = "Am-Deliveries"
    WORKER = "Am-Worker"
    ORIGINAL_SUBJECT = "Am-Original-Subject"
    ORIGINAL_SEQ = "Am-Original-Seq"
    #: The sender's `Nats-Msg-Id` (a dead letter's own is `<stream>:<seq>`).
    ORIGINAL_MSG_ID = "Am-Original-Msg-Id"
    DEAD_AT = "Am-Dead-At"
    #: Who sends: an actor type, or an external principal (an MCP client). Tool
    #: handlers admit a message only with a grant for it. Taken on trust unless the
    #: broker authenticates users and restricts what each may publish.
    PRINCIPAL = "Am-Principal"
    #: The tool a call is for (`<actor_type>.<handler>`).
    TOOL = "Am-Tool"
    #: A tool call's id (`gen_ai.tool.call.id` on its spans), sent when the caller
    #: gives one, traces, or listens to progress events.
    TOOL_CALL_ID = "Am-Tool-Call-Id"
    #: Where a tool call's progress events go: an inbox of the original caller,
    #: carried on to the calls its handler makes.
    PROGRESS_TO = "Am-Progress-To"
    #: A message's priority as its sender marked it ("high", "low"; absent: normal).
    #: The subject it was sent to is what the worker goes by (`actormesh._worker._priority`).
    PRIORITY = "Am-Priority"


class Message(msgspec.Struct, tag_field="type", tag=True, forbid_unknown_fields=True):
    """Base class of actor messages: JSON objects tagged by `type` (the class name).

    ``class Inc(Message): by: int = 1`` is sent as ``{"type":"Inc","by":1}``.
    """


class ErrorReply(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """The body of an error reply to an ask (status header not "200")."""

    code: str
    type: str
    message: str
    retryable: bool


class DeadLetterInfo(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """What the dead-letter browser and `actormesh dlq` show of one dead letter."""

    seq: int
    actor_type: str
    subject: str
    original_subject: str
    error_code: str
    error_type: str
    error_message: str
    deliveries: int
    worker: str
    dead_at: float
    payload: str
    headers: dict[str, str] = {}


class ToolStats(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """One tool's figures in a heartbeat, since the worker started."""

    tool: str
    #: Calls admitted: run (succeeded or failed), or expired before they ran.
    calls: int = 0
    #: Calls that failed or expired before they ran.
    errors: int = 0
    #: Calls refused for want of a grant.
    denied: int = 0
    #: Calls waiting for an operator now.
    approvals_pending: int = 0
    #: Run-time histogram: counts per bucket (not cumulative), the last one +Inf.
    buckets: list[int] = []
    #: Upper bounds of the buckets, in seconds (one fewer than `buckets`).
    bounds: list[float] = []


class Heartbeat(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """Published by every worker on `<prefix>.sys.hb.<type>.<worker>` from its own task."""

    worker: str
    actor_type: str
    pid: int
    host: str
    started_at: float
    seq: int
    in_flight: int
    handled: int
    failed: int
    dead_lettered: int
    restarts: int
    version: str
    status: str
    #: How late the heartbeat tick ran, in seconds: a blocked event loop shows here.
    loop_lag: float = 0.0
    concurrency: int = 0
    supervisor_child: str = ""
    metrics_port: int = 0
    sent_at: float = 0.0
    #: The mailbox partition served; -1 when the mailbox is not partitioned.
    partition: int = -1
    #: The actor type is keyed (not `keyless`): its per-key state lives in one worker,
    #: so two live workers serving one partition of it split each key (see the supervisor).
    keyed: bool = False
    #: Live actor instances (one per key) in this worker.
    instances: int = 0
    #: Instances passivated so far (idle, or over `max_instances`); their state is kept.
    passivated: int = 0
    #: Keys parked now for failing past their restart intensity.
    parked: int = 0
    #: The mailbox consumer is paused on the server (`actormesh pause`): messages
    #: wait in the mailbox; `status` stays `running`.
    paused: bool = False
    #: Per tool this worker serves, since it started (only with metrics on).
    tools: list[ToolStats] = []
    #: Handler time (seconds), median and 99th percentile, of the messages finished
    #: since the previous heartbeat (at most the last 4,096 of them); 0 when none.
    handler_p50: float = 0.0
    handler_p99: float = 0.0


class Event(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """A supervision or delivery event on `<prefix>.sys.evt.<kind>`, kept 7 days."""

    kind: str
    at: float
    source: str
    actor_type: str = ""
    worker: str = ""
    group: str = ""
    child: str = ""
    reason: str = ""
    detail: dict[str, str] = {}


class WorkerStats(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """The answer to the `stats` control command."""

    worker: str
    actor_type: str
    status: str
    in_flight: int
    buffered: int
    handled: int
    failed: int
    dead_lettered: int
    redelivered: int
    expired: int
    restarts: int
    instances: int
    uptime: float
    #: See `Heartbeat`: keyed type, instances passivated so far, keys parked now.
    keyed: bool = False
    passivated: int = 0
    parked: int = 0
    #: See `Heartbeat.paused`.
    paused: bool = False


class InstanceInfo(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """One actor instance of a worker, in a control reply."""

    key: str
    #: active (live in the worker) | passivated (stopped; its durable state is kept
    #: and the next message to the key activates it again)
    state: str


class ComponentHealth(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    name: str
    #: healthy | degraded | unhealthy
    status: str
    detail: dict[str, str] = {}


class HealthReport(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """A worker's health: the worst of its components decides `status`."""

    status: str
    worker: str
    actor_type: str
    at: float
    components: list[ComponentHealth]
    counters: dict[str, int] = {}


class ControlRequest(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """A request on `<prefix>.sys.ctl.<worker>`."""

    op: str
    grace: float | None = None
    #: The actor key, for `passivate`.
    key: str = ""


class ControlReply(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    ok: bool
    op: str
    error: str = ""
    stats: WorkerStats | None = None
    health: HealthReport | None = None
    #: `instances` and `passivate`: the instances concerned and their lifecycle state.
    instances: list[InstanceInfo] = []
