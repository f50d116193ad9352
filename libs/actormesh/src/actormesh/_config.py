"""Configuration: frozen, keyword-only msgspec Structs (defaults: the README's config table).

Nothing here reads the environment; `_settings.py` does, at the edge.
"""

from __future__ import annotations

from typing import Any, Literal

import msgspec

from ._errors import ConfigError
from ._retry import RetryPolicy

__all__ = [
    "FullPolicy",
    "MailboxConfig",
    "Passivation",
    "Replication",
    "SupervisionPolicy",
    "WorkerConfig",
]

MiB = 1024 * 1024
#: JetStream keeps at most five copies of a stream.
MAX_REPLICAS = 5


def _check_replicas(replicas: int | None, tags: tuple[str, ...] | None) -> None:
    if replicas is not None and not 1 <= replicas <= MAX_REPLICAS:
        raise ConfigError(f"replicas must be between 1 and {MAX_REPLICAS}, not {replicas}")
    if tags is not None and any(not t or t != t.strip() for t in tags):
        raise ConfigError(f"placement tags must be non-empty words, not {tags!r}")


class MailboxConfig(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """One actor type's mailbox: its stream and its durable pull consumer."""

    #: Stream bounds. Discard policy is always NEW: a full mailbox refuses, never drops.
    max_msgs: int = 10_000
    max_bytes: int = 256 * MiB
    max_msg_size: int = 1 * MiB
    #: Window in which a repeated `Nats-Msg-Id` is dropped as a duplicate.
    duplicate_window: float = 120.0
    storage: Literal["file", "memory"] = "file"
    #: Copies of this type's streams and buckets (mailbox, parked messages, state);
    #: None: the mesh's (`Replication.replicas`). See `Replication`.
    replicas: int | None = None
    #: JetStream placement tags for them; None: the mesh's.
    placement_tags: tuple[str, ...] | None = None
    #: Consumer: how long a delivered message may go unacknowledged before redelivery.
    ack_wait: float = 30.0
    #: Deliveries before a failing message is dead-lettered.
    max_deliver: int = 5
    #: Delays before redelivering a failed message (the last repeats). Applied by the
    #: worker's nak; the server's consumer `backoff` is not used because the server
    #: then replaces ack_wait with backoff[0], which would redeliver long handlers early.
    backoff: tuple[float, ...] = (1.0, 5.0, 15.0)
    max_ack_pending: int = 1000
    #: Split the mailbox by key into this many partitions, each served by one worker
    #: (`--partition i`): a key always lands in the same partition, so keyed state
    #: stays in one process and per-key order holds with several replicas.
    partitions: int = 1
    #: Priority levels (`tell(..., priority="high")`): the mailbox takes high and low
    #: messages on subjects of their own, each level with its own consumer, and the
    #: worker serves higher levels first. Off: one consumer, nothing changes.
    priorities: bool = False
    #: With priorities: a waiting level passed over this many times in a row gets the
    #: next pick, so no level starves (see `actormesh._worker._priority`).
    priority_fairness: int = 8

    def __post_init__(self) -> None:
        if not 1 <= self.partitions <= 1024:
            raise ConfigError("partitions must be between 1 and 1024")
        if self.priorities and self.partitions > 1:
            raise ConfigError(
                "a mailbox takes priorities or partitions, not both: each partition "
                "would need a consumer per level (not supported)"
            )
        if self.priority_fairness < 1:
            raise ConfigError("priority_fairness must be >= 1")
        if self.max_msgs < 1 or self.max_bytes < 1 or self.max_msg_size < 1:
            raise ConfigError("mailbox bounds must be positive: a mailbox is always bounded")
        if self.max_deliver < 1:
            raise ConfigError("max_deliver must be >= 1")
        if self.ack_wait <= 0:
            raise ConfigError("ack_wait must be > 0")
        if self.storage not in ("file", "memory"):
            raise ConfigError("storage must be 'file' or 'memory'")
        if any(d < 0 for d in self.backoff):
            raise ConfigError("backoff delays must be >= 0")
        _check_replicas(self.replicas, self.placement_tags)

    @classmethod
    def from_retry(cls, policy: RetryPolicy, **settings: Any) -> MailboxConfig:
        """A mailbox whose redeliveries follow `policy`: `attempts` deliveries, spaced
        by its delays (without jitter: the broker schedules them)."""
        plain = RetryPolicy(
            attempts=policy.attempts,
            base=policy.base,
            multiplier=policy.multiplier,
            cap=policy.cap,
            jitter=0.0,
        )
        backoff = tuple(plain.delays()) or (0.0,)
        return cls(max_deliver=policy.attempts, backoff=backoff, **settings)

    def redelivery_delay(self, deliveries: int) -> float:
        """Delay before the next delivery after `deliveries` failed ones."""
        if not self.backoff:
            return 0.0
        return self.backoff[min(deliveries, len(self.backoff)) - 1]


class Replication(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """The mesh-wide replication of every stream and bucket the mesh creates.

    Mailboxes, parked messages, dead letters, events, actor state, the tool
    registry, grants and approvals all take `replicas` copies (JetStream's R1,
    R3, R5), placed on servers carrying every one of `placement_tags` (JetStream
    placement; empty: anywhere). An actor type overrides both for its own
    streams and state with `MailboxConfig(replicas=..., placement_tags=...)`.
    Set it on the connection (`mesh.replication`), in mesh.toml (`[mesh]
    replicas`, `placement_tags`) or with ACTORMESH_REPLICAS and
    ACTORMESH_PLACEMENT_TAGS. A stream or bucket that exists with fewer
    replicas is scaled up when the mesh next ensures it; never down.
    """

    replicas: int = 1
    placement_tags: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        _check_replicas(self.replicas, self.placement_tags)

    def mailbox(self, cfg: MailboxConfig) -> MailboxConfig:
        """`cfg` with its replicas and placement resolved (the type's own, else ours)."""
        replicas = self.replicas if cfg.replicas is None else cfg.replicas
        tags = self.placement_tags if cfg.placement_tags is None else cfg.placement_tags
        if (replicas, tags) == (cfg.replicas, cfg.placement_tags):
            return cfg
        return msgspec.structs.replace(cfg, replicas=replicas, placement_tags=tags)


#: The most failing keys (or keyless messages) a worker tracks at once: bounds the
#: supervision bookkeeping, since `max_failing_keys` may not exceed it.
MAX_TRACKED_KEYS = 10_000


class SupervisionPolicy(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """What a worker does with an actor instance whose handler raised (OTP terms).

    Failures are contained to the key they hit (see `actormesh._worker._containment`):
    redeliveries of one message count once, and intensity is counted per key. A key
    whose distinct failing messages exceed `max_restarts` within `within` seconds
    is parked (`on_intensity`); the worker itself escalates (publishes `escalated`,
    drains, exits 3) only when the process is failing: more than `max_failing_keys`
    distinct keys failing within `within`, activation (`on_start`) failing for
    `max_failed_starts` distinct keys in a row with no message handled between them,
    or an internal error of supervision. Keyless actors count each failing message
    as its own key: a poison message is dead-lettered after `max_deliver`.
    """

    #: restart: a fresh instance (on_restart); resume: keep the instance and its
    #: state; stop: drop the instance (on_stop), a later message starts a new one.
    on_error: Literal["restart", "resume", "stop"] = "restart"
    #: Restart intensity of one key: more than `max_restarts` distinct failing
    #: messages of a key within `within` seconds and the key is parked.
    max_restarts: int = 3
    within: float = 60.0
    #: What happens to a key past its intensity, and to its messages until it is
    #: released: park: they wait in the type's parked stream, visible and
    #: releasable (`actormesh.lowlevel.release_parked`); dead_letter: they go to
    #: the dead-letter stream (code `key_parked`). Asks to a parked key are
    #: answered with a `key_parked` error and dead-lettered either way.
    on_intensity: Literal["park", "dead_letter"] = "park"
    #: Seconds after which a parked key is released by its worker even if no one
    #: asked: no message is held for good. A released key that fails again is
    #: parked again; a message that failed `max_deliver` times in all is
    #: dead-lettered instead of parked again.
    park_for: float = 600.0
    #: The worker escalates when more than this many distinct keys (for a keyless
    #: actor: distinct messages) failed within `within` seconds.
    max_failing_keys: int = 10
    #: The worker escalates when activation (`on_start`) failed for this many
    #: distinct keys in a row, with no message handled in between.
    max_failed_starts: int = 3

    def __post_init__(self) -> None:
        if self.on_error not in ("restart", "resume", "stop"):
            raise ConfigError("on_error must be 'restart', 'resume' or 'stop'")
        if self.max_restarts < 0 or self.within <= 0:
            raise ConfigError("max_restarts must be >= 0 and within > 0")
        if self.on_intensity not in ("park", "dead_letter"):
            raise ConfigError("on_intensity must be 'park' or 'dead_letter'")
        if self.park_for <= 0:
            raise ConfigError("park_for must be > 0: a parked key is released in time")
        if not 1 <= self.max_failing_keys <= MAX_TRACKED_KEYS:
            raise ConfigError(f"max_failing_keys must be between 1 and {MAX_TRACKED_KEYS}")
        if self.max_failed_starts < 1:
            raise ConfigError("max_failed_starts must be >= 1")


class FullPolicy(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """What a sender does when the mailbox is full: wait with backoff, then raise."""

    #: Seconds to keep retrying; 0 raises `MailboxFull` at once.
    wait: float = 0.0
    backoff: RetryPolicy = RetryPolicy(attempts=1_000_000, base=0.05, multiplier=2.0, cap=1.0)


class WorkerConfig(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """How one worker process runs its actor type."""

    #: Handlers running at once (messages to one key still run one at a time).
    concurrency: int = 64
    #: Messages held in memory (running + waiting in lanes + requested): bounds memory.
    prefetch: int = 256
    #: Pull requests expire after this long and are renewed.
    pull_expires: float = 30.0
    #: The server sends an idle heartbeat this often on an open pull; missing two
    #: means our pulls were lost (broker restart) and are re-issued.
    pull_idle_heartbeat: float = 2.0
    #: Seconds to finish in-flight work on SIGTERM before the rest is handed back.
    drain_grace: float = 30.0
    heartbeat_interval: float = 1.0
    #: Double ack (`ack_sync`): wait for the server to confirm each ack.
    ack_sync: bool = False
    #: Apply changed mailbox settings to an existing stream instead of refusing.
    update_mailbox: bool = False
    worker_id: str | None = None
    #: Name of the supervisor child this worker runs as (set by the supervisor).
    supervisor_child: str = ""
    metrics_port: int | None = None
    #: Which partition of a partitioned mailbox this worker serves (0-based); ignored
    #: when the mailbox has one partition (the supervisor passes its replica index).
    partition: int | None = None
    #: Register the actor type as a NATS micro service (`$SRV.PING`, `$SRV.INFO`,
    #: `$SRV.STATS`), so standard NATS tooling discovers it.
    micro: bool = True

    def __post_init__(self) -> None:
        if self.concurrency < 1 or self.prefetch < 1:
            raise ConfigError("concurrency and prefetch must be >= 1")
        if self.pull_idle_heartbeat <= 0 or self.pull_expires <= 2 * self.pull_idle_heartbeat:
            raise ConfigError("need pull_expires > 2 * pull_idle_heartbeat > 0")


class Passivation(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """When a worker stops and drops live instances (Orleans' deactivation).

    A passivated instance runs `on_stop`; its durable state (if it declares
    `state`) stays in the bucket and is loaded again on the key's next message.
    Without declared state, whatever the instance kept in memory is gone: the
    defaults therefore passivate nothing.
    """

    #: Seconds without a message after which an instance is passivated (None: never).
    idle_after: float | None = None
    #: The most live instances per worker; past it the least recently used idle one
    #: is passivated (None: no bound).
    max_instances: int | None = None

    def __post_init__(self) -> None:
        if self.idle_after is not None and self.idle_after <= 0:
            raise ConfigError("passivation idle_after must be > 0 seconds (or None)")
        if self.max_instances is not None and self.max_instances < 1:
            raise ConfigError("passivation max_instances must be >= 1 (or None)")
