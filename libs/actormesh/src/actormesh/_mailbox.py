"""Create or check mailbox streams and consumers, idempotently and without surprises."""

from __future__ import annotations

import dataclasses
from typing import Any

import nats.js.errors
from nats.js import JetStreamContext
from nats.js.api import (
    AckPolicy,
    ConsumerConfig,
    DeliverPolicy,
    DiscardPolicy,
    RetentionPolicy,
    StorageType,
    StreamConfig,
    SubjectTransform,
)

from ._config import MailboxConfig
from ._errors import ActorMeshError, ConfigError, MailboxConflict
from ._subjects import Subjects

__all__ = ["ensure_mailbox", "ensure_system_streams", "mailbox_stream_config"]

WEEK = 7 * 24 * 3600.0
_ERR_NO_STORAGE = 10047


def mailbox_stream_config(subjects: Subjects, actor_type: str, cfg: MailboxConfig) -> StreamConfig:
    return StreamConfig(
        name=subjects.mailbox_stream(actor_type),
        description=f"actormesh mailbox of {actor_type}",
        subjects=[subjects.mailbox(actor_type, "*")],
        retention=RetentionPolicy.WORK_QUEUE,
        discard=DiscardPolicy.NEW,
        max_msgs=cfg.max_msgs,
        max_bytes=cfg.max_bytes,
        max_msg_size=cfg.max_msg_size,
        storage=StorageType.FILE if cfg.storage == "file" else StorageType.MEMORY,
        num_replicas=cfg.replicas,
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


def consumer_config(
    subjects: Subjects, actor_type: str, cfg: MailboxConfig, partition: int | None = None
) -> ConsumerConfig:
    return ConsumerConfig(
        durable_name=subjects.consumer(actor_type, partition),
        filter_subject=subjects.partition_base(actor_type, partition) + "*"
        if partition is not None
        else None,
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
        try:
            await js.add_stream(want)
            return
        except nats.js.errors.BadRequestError:
            # Another replica created it between our look and our add: compare with it.
            info = await js.stream_info(want.name)
        except nats.js.errors.APIError as exc:
            if exc.err_code == _ERR_NO_STORAGE:
                raise ActorMeshError(
                    f"JetStream cannot reserve {want.max_bytes} bytes for stream {want.name}: "
                    "the server's storage limit is taken by other streams' max_bytes. Lower "
                    "MailboxConfig.max_bytes, delete unused streams, or raise the server's "
                    "jetstream max_file_store"
                ) from exc
            raise
    except nats.errors.NoRespondersError as exc:
        raise ActorMeshError("the NATS server has no JetStream: start it with -js") from exc
    diff = _diff(info.config, want, _STREAM_FIELDS)
    if scale_up and "num_replicas" in diff:
        have, wanted = (r or 1 for r in diff.pop("num_replicas"))
        if have < wanted and not diff:
            await js.update_stream(dataclasses.replace(info.config, num_replicas=wanted))
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
) -> None:
    """Make the actor type's stream and durable consumer exist with `cfg`'s settings.

    A partitioned mailbox has a consumer per partition: `partition` names the one
    to ensure (a worker's), None ensures them all. An existing stream or consumer
    with other settings raises `MailboxConflict` unless `update` is set.
    """
    await _ensure_stream(js, mailbox_stream_config(subjects, actor_type, cfg), update=update)
    stream = subjects.mailbox_stream(actor_type)
    if cfg.partitions == 1:
        wanted = [consumer_config(subjects, actor_type, cfg)]
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
    try:
        info = await js.consumer_info(stream, want.durable_name)
    except nats.js.errors.NotFoundError:
        await js.add_consumer(stream, want)
        return
    diff = _diff(info.config, want, _CONSUMER_FIELDS)
    own = {f: diff.pop(f) for f in _OWN_CONSUMER_FIELDS if f in diff}
    if own and not diff:
        await js.add_consumer(stream, want)  # an update: same durable name
        return
    if diff:
        if not update:
            raise MailboxConflict(f"consumer {stream}/{want.durable_name}", diff)
        await js.add_consumer(stream, want)


async def ensure_system_streams(
    js: JetStreamContext, subjects: Subjects, *, replicas: int = 1
) -> None:
    """The dead-letter and events streams: limits retention, kept 7 days.

    `replicas` is the mailbox's: a type's dead letters are as safe as its
    messages were. Streams that exist with fewer replicas are scaled up to it,
    never down (another actor type of the mesh may have asked for more).
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
                duplicate_window=120.0,
            ),
            update=False,
            scale_up=True,
        )
