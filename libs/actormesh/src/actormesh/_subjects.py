"""Subject and stream naming, in one place (the table in docs/architecture.md), and what a
delivered message's ack subject says (its delivery count and stream sequence)."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

from ._errors import ConfigError

if TYPE_CHECKING:
    from nats.aio.msg import Msg

__all__ = [
    "KEYLESS",
    "LEVELS",
    "Priority",
    "Subjects",
    "check_actor_type",
    "check_key",
    "deliveries_of",
    "stream_seq_of",
]

#: The last token of the events the supervisor publishes (not an actor type:
#: those start with a letter).
SUPERVISOR_SOURCE = "_supervisor"

#: The key token of keyless actors' messages.
KEYLESS = "_"

#: A message's priority (`tell(..., priority=...)`; see `actormesh._worker._priority`).
Priority = Literal["high", "normal", "low"]
#: The levels, highest first: a worker serves them in this order.
LEVELS: tuple[Priority, ...] = ("high", "normal", "low")

_TYPE_RE = re.compile(r"^[a-z][a-z0-9_-]{0,63}$")
_KEY_RE = re.compile(r"^[A-Za-z0-9_\-:@=+]{1,128}$")
_PREFIX_RE = re.compile(r"^[A-Za-z][A-Za-z0-9_-]{0,31}$")


def check_actor_type(name: str) -> str:
    if not _TYPE_RE.match(name):
        raise ConfigError(
            f"invalid actor type {name!r}: use 1-64 of a-z, 0-9, '_' and '-', "
            "starting with a letter"
        )
    return name


def check_key(key: str) -> str:
    if not _KEY_RE.match(key):
        raise ConfigError(
            f"invalid actor key {key!r}: use 1-128 of A-Z a-z 0-9 and _ - : @ = + "
            "(no dots, spaces or wildcards: the key is one subject token)"
        )
    return key


@dataclass(frozen=True, slots=True)
class Subjects:
    """The names a mesh with a given prefix uses."""

    prefix: str = "mesh"

    def __post_init__(self) -> None:
        if not _PREFIX_RE.match(self.prefix):
            raise ConfigError(f"invalid subject prefix {self.prefix!r}")

    def mailbox(self, actor_type: str, key: str = KEYLESS) -> str:
        return f"{self.prefix}.mbox.{actor_type}.{key}"

    def mailbox_base(self, actor_type: str) -> str:
        """The mailbox subject up to and including the dot before the key."""
        return f"{self.prefix}.mbox.{actor_type}."

    def priority_mailbox(self, actor_type: str, level: str, key: str = KEYLESS) -> str:
        """Where a message of priority `level` ("high", "low") goes:
        `<prefix>.mbox.<type>.<level>.<key>` (normal ones keep `mailbox`'s subject)."""
        return f"{self.prefix}.mbox.{actor_type}.{level}.{key}"

    def priority_base(self, actor_type: str, level: str) -> str:
        """`priority_mailbox` up to and including the dot before the key."""
        return f"{self.prefix}.mbox.{actor_type}.{level}."

    def mailbox_stream(self, actor_type: str) -> str:
        return f"{self.prefix}_MBOX_{actor_type}".upper().replace("-", "_")

    def consumer(self, actor_type: str, partition: int | None = None, level: str = "normal") -> str:
        """The durable consumer of a mailbox (of a partition, or of a priority level
        other than normal: `<type>_high`, `<type>_low`)."""
        name = actor_type.replace("-", "_")
        if level != "normal":
            return f"{name}_{level}"
        return name if partition is None else f"{name}_p{partition}"

    def partition_base(self, actor_type: str, partition: int) -> str:
        """Where a partitioned mailbox stores a partition's messages, up to the key."""
        return f"{self.prefix}.mbox.{actor_type}.{partition}."

    def state_bucket(self, actor_type: str) -> str:
        """The JetStream KV bucket holding the durable state of an actor type's keys."""
        return f"{self.prefix}_state_{actor_type}".replace("-", "_").replace(".", "_")

    def dlq(self, actor_type: str) -> str:
        return f"{self.prefix}.dlq.{actor_type}"

    @property
    def dlq_stream(self) -> str:
        return f"{self.prefix}_DLQ".upper()

    def heartbeat(self, actor_type: str, worker: str) -> str:
        return f"{self.prefix}.sys.hb.{actor_type}.{worker}"

    @property
    def heartbeat_all(self) -> str:
        return f"{self.prefix}.sys.hb.>"

    def service_endpoint(self, actor_type: str, handler: str) -> str:
        """The NATS micro endpoint of a handler (a request there is an ask)."""
        return f"{self.prefix}.svc.{actor_type}.{handler}"

    def control(self, worker: str) -> str:
        """A worker's control subject by id alone (kept for older senders)."""
        return f"{self.prefix}.sys.ctl.{worker}"

    def control_of(self, actor_type: str, worker: str) -> str:
        """A worker's control subject under its type: a broker can let only the type's
        user answer it (`actormesh authz`); a worker listens on both."""
        return f"{self.prefix}.sys.ctl.{actor_type}.{worker}"

    def event(self, kind: str, by: str = SUPERVISOR_SOURCE) -> str:
        """Where an event of `kind` published by `by` goes: a worker publishes under
        its actor type, so a broker can let a type's user publish only its own
        events (`actormesh authz`); the supervisor under `SUPERVISOR_SOURCE`."""
        return f"{self.prefix}.sys.evt.{kind}.{by}"

    def events_of_kind(self, kind: str) -> str:
        """Every event of `kind`, whoever published it (to subscribe or filter)."""
        return f"{self.prefix}.sys.evt.{kind}.*"

    # A supervision tree across hosts: each host supervisor heartbeats its tree to the
    # root, escalates to it, and takes the root's orders on its own control subject.
    def tree_heartbeat(self, host: str) -> str:
        return f"{self.prefix}.sys.tree.hb.{host}"

    @property
    def tree_heartbeat_all(self) -> str:
        return f"{self.prefix}.sys.tree.hb.*"

    def tree_escalation(self, host: str) -> str:
        return f"{self.prefix}.sys.tree.esc.{host}"

    @property
    def tree_escalation_all(self) -> str:
        return f"{self.prefix}.sys.tree.esc.*"

    def tree_control(self, host: str) -> str:
        return f"{self.prefix}.sys.tree.ctl.{host}"

    @property
    def events_stream(self) -> str:
        return f"{self.prefix}_EVENTS".upper()

    def actor_type_of(self, mailbox_subject: str) -> str:
        """The actor type token of a mailbox subject."""
        return mailbox_subject.split(".", 3)[2]


def deliveries_of(msg: Msg) -> int:
    """How many times the broker delivered `msg` (1 when its ack subject does not say)."""
    # $JS.ACK.<stream>.<consumer>.<delivered>.<sseq>.<cseq>.<ts>.<pending> (or the
    # 12-token form with domain and account hash).
    reply = msg.reply or ""
    dots = reply.count(".")
    if dots == 8:
        return int(reply.split(".", 5)[4])
    if dots >= 11:
        return int(reply.split(".", 7)[6])
    return 1


def stream_seq_of(msg: Msg) -> int:
    """The message's sequence in its stream (0 when its ack subject does not say)."""
    parts = (msg.reply or "").split(".")
    if len(parts) == 9:
        return int(parts[5])
    if len(parts) >= 12:
        return int(parts[7])
    return 0
