"""JetStream KV buckets the mesh keeps (actor state, tools, grants, approvals): bound
if they exist, created if not, idempotently across processes starting together;
one that exists with fewer replicas than asked for is scaled up (never down)."""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING, Any

import nats.js.errors
from nats.js.api import Placement

if TYPE_CHECKING:
    from nats.js.api import KeyValueConfig
    from nats.js.client import JetStreamContext
    from nats.js.kv import KeyValue

    from ._mesh import Mesh

__all__ = ["bucket_replication", "key_value"]


def bucket_replication(mesh: Mesh) -> dict[str, Any]:
    """`KeyValueConfig` fields for a mesh-wide bucket: the mesh's replicas and placement."""
    r = mesh.replication
    return {
        "replicas": r.replicas,
        "placement": Placement(tags=list(r.placement_tags)) if r.placement_tags else None,
    }


async def key_value(js: JetStreamContext, config: KeyValueConfig) -> KeyValue:
    """The bucket `config.bucket`; created with `config` if it does not exist."""
    bucket = config.bucket or ""
    try:
        kv = await js.key_value(bucket)
    except nats.js.errors.BucketNotFoundError:
        pass
    else:
        await _scale_up(js, bucket, config.replicas)
        return kv
    from ._mailbox import placed

    try:
        return await placed(lambda: js.create_key_value(config), what=f"bucket {bucket}")
    except nats.js.errors.BadRequestError:
        kv = await js.key_value(bucket)  # another process created it in between
        await _scale_up(js, bucket, config.replicas)
        return kv


async def _scale_up(js: JetStreamContext, bucket: str, replicas: int) -> None:
    """Give the bucket's stream `replicas` copies if it has fewer (a mesh that
    moved to a cluster keeps its buckets, now replicated)."""
    if replicas <= 1:
        return
    info = await js.stream_info(f"KV_{bucket}")
    if (info.config.num_replicas or 1) < replicas:
        from ._mailbox import placed

        grown = dataclasses.replace(info.config, num_replicas=replicas)
        await placed(lambda: js.update_stream(grown), what=f"bucket {bucket}")
