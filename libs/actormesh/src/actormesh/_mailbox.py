"""Create or check mailbox streams and consumers, idempotently and without surprises."""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import nats.js.errors
from nats.js import JetStreamContext
from nats.js.api import (
    AckPolicy,
    ConsumerConfig,
    DeliverPolicy,
    DiscardPolicy,
    Placement,
    RetentionPolicy,
    StorageType,
    StreamConfig,
    StreamInfo,
    SubjectTransform,
)

from ._config import MailboxConfig, Replication
from ._errors import ActorMeshError, ConfigError, MailboxConflict
from ._subjects import LEVELS, Subjects

__all__ = ["ensure_mailbox", "ensure_system_streams", "mailbox_stream_config", "placement"]

WEEK = 7 * 24 * 3600.0
_ERR_NO_STORAGE = 10047
_ERR_NO_PEERS = 10005  # "no suitable peers for placement"
#: How long a create waits for the cluster to have servers for all its replicas:
#: a cluster that just formed, or lost a node a moment ago, gets them soon.
PLACEMENT_WAIT = 10.0

T = TypeVar("T")


async def placed(create: Callable[[], Awaitable[T]], *, what: str) -> T:
    """Run `create` (a stream, consumer or bucket create or update), trying again
    for `PLACEMENT_WAIT` seconds while JetStream has no suitable peers for it, or
    does not answer in time (a cluster's meta leader busy or being elected). Each
    is idempotent: the same config again is no change."""
    deadline = time.monotonic() + PLACEMENT_WAIT
    delay = 0.1
    while True:
        try:
            return await create()
        except (nats.errors.TimeoutError, nats.js.errors.ServiceUnavailableError):
            if time.monotonic() >= deadline:
                raise
        except nats.js.errors.APIError as exc:
            if exc.err_code != _ERR_NO_PEERS:
                raise
            if time.monotonic() >= deadline:
                raise ActorMeshError(
                    f"JetStream has no servers to place {what} on ({exc.description}): "
                    "fewer servers are up (or carry its placement tags) than it has "
                    "replicas; lower the mesh's replicas or start more servers"
                ) from exc
        await asyncio.sleep(delay)
        delay = min(delay * 2, 1.0)


def placement(tags: tuple[str, ...] | None) -> Placement | None:
    """JetStream placement on servers carrying all of `tags` (None: anywhere)."""
    return Placement(tags=list(tags)) if tags else None


def mailbox_stream_config(
    subjects: Subjects,
    actor_type: str,
    cfg: MailboxConfig,
    replication: Replication | None = None,
) -> StreamConfig:
    """The mailbox stream; replicas and placement are `cfg`'s, else `replication`'s."""
    cfg = (replication or Replication()).mailbox(cfg)
    return StreamConfig(
        name=subjects.mailbox_stream(actor_type),
        description=f"actormesh mailbox of {actor_type}",
        subjects=[subjects.mailbox(actor_type, "*")]
        + [subjects.priority_base(actor_type, lv) + "*" for lv in _extra_levels(cfg)],
        retention=RetentionPolicy.WORK_QUEUE,
        discard=DiscardPolicy.NEW,
        max_msgs=cfg.max_msgs,
        max_bytes=cfg.max_bytes,
        max_msg_size=cfg.max_msg_size,
        storage=StorageType.FILE if cfg.storage == "file" else StorageType.MEMORY,
        num_replicas=cfg.replicas or 1,
        placement=placement(cfg.placement_tags),
        duplicate_window=cfg.duplicate_window,
        # Senders keep publishing to <prefix>.mbox.<type>.<key>; the stream stores a
        # partitioned mailbox's messages as <prefix>.mbox.<type>.<partition>.<key>,
        # the partition a hash of the key (the server's deterministic partition()).
        subject_transform=SubjectTransform(
            src=subjects.mailbox(actor_type, "*"),
            dest=f"{subjects.prefix}.mbox.{actor_type}."
            f"{{{{partition({cfg.partitions},1)}}}}.{{{{wildcard(1)}}}}",
        )
        if cfg.partitions > 1
        else None,
    )


def _extra_levels(cfg: MailboxConfig) -> tuple[str, ...]:
    """The priority levels with subjects and a consumer of their own (not normal)."""
    return tuple(lv for lv in LEVELS if lv != "normal") if cfg.priorities else ()


def _filter(
    subjects: Subjects, actor_type: str, cfg: MailboxConfig, partition: int | None, level: str
) -> str | None:
    if partition is not None:
        return subjects.partition_base(actor_type, partition) + "*"
    if level != "normal":
        return subjects.priority_base(actor_type, level) + "*"
    # A work-queue stream's consumers may not overlap: with priorities, the normal
    # consumer takes only the normal subjects.
    return subjects.mailbox(actor_type, "*") if cfg.priorities else None


def consumer_config(
    subjects: Subjects,
    actor_type: str,
    cfg: MailboxConfig,
    partition: int | None = None,
    level: str = "normal",
) -> ConsumerConfig:
    return ConsumerConfig(
        durable_name=subjects.consumer(actor_type, partition, level),
        filter_subject=_filter(subjects, actor_type, cfg, partition, level),
        description=f"actormesh workers of {actor_type}",
        deliver_policy=DeliverPolicy.ALL,
        ack_policy=AckPolicy.EXPLICIT,
        ack_wait=cfg.ack_wait,
        # Unlimited: the worker decides which delivery is the last (`max_deliver`)
        # and dead-letters it. A server-side limit would strand a message whose
        # dead-lettering failed at the last delivery: never delivered again.
        max_deliver=-1,
        max_ack_pending=cfg.max_ack_pending,
        max_waiting=512,
    )


_STREAM_FIELDS = (
    "subjects",
    "subject_transform",
    "retention",
    "discard",
    "max_msgs",
    "max_bytes",
    "max_msg_size",
    "storage",
    "num_replicas",
    "duplicate_window",
)
_CONSUMER_FIELDS = (
    "filter_subject",
    "ack_policy",
    "ack_wait",
    "max_deliver",
    "max_ack_pending",
    "deliver_policy",
)
#: Consumer settings that are ours, not the user's: a consumer made by an older
#: version (with the mailbox's `max_deliver` on the server) is updated in place,
#: without asking for `update`.
_OWN_CONSUMER_FIELDS = ("max_deliver",)


async def _create_stream(js: JetStreamContext, want: StreamConfig) -> StreamInfo | None:
    """Add `want`; None if we did, the stream's info if another process did first."""
    try:
        await placed(lambda: js.add_stream(want), what=f"stream {want.name}")
        return None
    except nats.js.errors.BadRequestError as exc:
        # Another replica created it between our look and our add: compare with it.
        try:
            return await js.stream_info(want.name or "")
        except nats.js.errors.NotFoundError:
            raise exc from None  # it was not that: the refusal says why
    except nats.js.errors.APIError as exc:
        if exc.err_code == _ERR_NO_STORAGE:
            raise ActorMeshError(
                f"JetStream cannot reserve {want.max_bytes} bytes for stream {want.name}: "
                "the server's storage limit is taken by other streams' max_bytes. Lower "
                "MailboxConfig.max_bytes, delete unused streams, or raise the server's "
                "jetstream max_file_store"
            ) from exc
        raise


def _diff(have: Any, want: Any, fields: tuple[str, ...]) -> dict[str, tuple[Any, Any]]:
    out: dict[str, tuple[Any, Any]] = {}
    for f in fields:
        a, b = getattr(have, f), getattr(want, f)
        if isinstance(a, float) or isinstance(b, float):
            if a is None or b is None or abs(float(a) - float(b)) > 1e-3:
                out[f] = (a, b)
        elif a != b:
            out[f] = (a, b)
    return out


async def _ensure_stream(
    js: JetStreamContext, want: StreamConfig, *, update: bool, scale_up: bool = False
) -> None:
    """Create `want`, or compare an existing stream with it. With `scale_up`, an
    existing stream with fewer replicas gets `want`'s, one with more keeps its own."""
    if want.name is None:
        raise ConfigError("a mailbox stream config needs a name")
    try:
        info = await js.stream_info(want.name)
    except nats.js.errors.NotFoundError:
        created = await _create_stream(js, want)
        if created is None:
            return
        info = created
    except nats.errors.NoRespondersError as exc:
        raise ActorMeshError("the NATS server has no JetStream: start it with -js") from exc
    diff = _diff(info.config, want, _STREAM_FIELDS)
    if scale_up and "num_replicas" in diff:
        have, wanted = (r or 1 for r in diff.pop("num_replicas"))
        if have < wanted and not diff:
            grown = dataclasses.replace(info.config, num_replicas=wanted)
            await placed(lambda: js.update_stream(grown), what=f"stream {want.name}")
            return
        if have < wanted:
            diff["num_replicas"] = (have, wanted)
    if diff:
        if not update:
            raise MailboxConflict(f"stream {want.name}", diff)
        await js.update_stream(want)


async def ensure_mailbox(
    js: JetStreamContext,
    subjects: Subjects,
    actor_type: str,
    cfg: MailboxConfig,
    *,
    update: bool = False,
    partition: int | None = None,
    replication: Replication | None = None,
) -> None:
    """Make the actor type's stream and durable consumer exist with `cfg`'s settings.

    A partitioned mailbox has a consumer per partition: `partition` names the one
    to ensure (a worker's), None ensures them all. A mailbox with priorities has a
    consumer per level (`<type>`, `<type>_high`, `<type>_low`), all ensured. An
    existing stream or consumer with other settings raises `MailboxConflict` unless
    `update` is set; one with fewer replicas than `cfg` (else `replication`) asks
    for is scaled up.
    """
    await _ensure_stream(
        js,
        mailbox_stream_config(subjects, actor_type, cfg, replication),
        update=update,
        scale_up=True,
    )
    stream = subjects.mailbox_stream(actor_type)
    if cfg.partitions == 1:
        # The normal consumer first: a priority consumer added while an older one
        # without a filter exists would overlap it (refused on a work queue).
        wanted = [consumer_config(subjects, actor_type, cfg)] + [
            consumer_config(subjects, actor_type, cfg, level=lv) for lv in _extra_levels(cfg)
        ]
    elif partition is None:
        wanted = [consumer_config(subjects, actor_type, cfg, p) for p in range(cfg.partitions)]
    else:
        wanted = [consumer_config(subjects, actor_type, cfg, partition)]
    for want in wanted:
        await _ensure_consumer(js, stream, want, update=update)


async def _ensure_consumer(
    js: JetStreamContext, stream: str, want: ConsumerConfig, *, update: bool
) -> None:
    if want.durable_name is None:
        raise ConfigError("a mailbox consumer config needs a durable name")
    what = f"consumer {stream}/{want.durable_name}"
    try:
        info = await js.consumer_info(stream, want.durable_name)
    except nats.js.errors.NotFoundError:
        await placed(lambda: js.add_consumer(stream, want), what=what)
        return
    diff = _diff(info.config, want, _CONSUMER_FIELDS)
    own = {f: diff.pop(f) for f in _OWN_CONSUMER_FIELDS if f in diff}
    if own and not diff:
        # An update: same durable name.
        await placed(lambda: js.add_consumer(stream, want), what=what)
        return
    if diff:
        if not update:
            raise MailboxConflict(what, diff)
        await placed(lambda: js.add_consumer(stream, want), what=what)


async def ensure_system_streams(
    js: JetStreamContext,
    subjects: Subjects,
    *,
    replicas: int = 1,
    placement_tags: tuple[str, ...] = (),
) -> None:
    """The dead-letter and events streams: limits retention, kept 7 days.

    `replicas` is the mesh's, or a mailbox's if more: a type's dead letters are
    as safe as its messages were. Streams that exist with fewer replicas are
    scaled up to it, never down (another actor type may have asked for more).
    `placement_tags` apply when a stream is created.
    """
    for name, subject in (
        (subjects.dlq_stream, f"{subjects.prefix}.dlq.>"),
        (subjects.events_stream, f"{subjects.prefix}.sys.evt.>"),
    ):
        await _ensure_stream(
            js,
            StreamConfig(
                name=name,
                subjects=[subject],
                retention=RetentionPolicy.LIMITS,
                discard=DiscardPolicy.OLD,
                max_age=WEEK,
                max_bytes=1024 * 1024 * 1024,
                max_msgs=-1,
                max_msg_size=-1,
                storage=StorageType.FILE,
                num_replicas=replicas,
                placement=placement(placement_tags),
                duplicate_window=120.0,
            ),
            update=False,
            scale_up=True,
        )
