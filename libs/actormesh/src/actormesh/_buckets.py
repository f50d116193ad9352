"""JetStream KV buckets the mesh keeps (actor state, tools, grants): bound if they
exist, created if not, idempotently across processes starting together."""

from __future__ import annotations

from typing import TYPE_CHECKING

import nats.js.errors

if TYPE_CHECKING:
    from nats.js.api import KeyValueConfig
    from nats.js.client import JetStreamContext
    from nats.js.kv import KeyValue

__all__ = ["key_value"]


async def key_value(js: JetStreamContext, config: KeyValueConfig) -> KeyValue:
    """The bucket `config.bucket`; created with `config` if it does not exist."""
    bucket = config.bucket or ""
    try:
        return await js.key_value(bucket)
    except nats.js.errors.BucketNotFoundError:
        pass
    try:
        return await js.create_key_value(config)
    except nats.js.errors.BadRequestError:
        return await js.key_value(bucket)  # another process created it in between
