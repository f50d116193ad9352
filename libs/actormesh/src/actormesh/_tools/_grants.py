"""Grants: which principal may call which tools. Default deny.

A grant maps a principal (an actor type, or an external principal such as an
MCP client) to tool names or `fnmatch` patterns (`counter.*`, `*`). Grants live
in a JetStream KV bucket (`<prefix>_grants`, one entry per principal), so they
survive restarts, and every process that enforces them watches the bucket: a
grant or a revoke takes effect as soon as the watch delivers it (well under a
second on one broker), with no restart.
"""

from __future__ import annotations

import asyncio
import contextlib
import fnmatch
import logging
import re
from typing import TYPE_CHECKING

import msgspec
import nats.js.errors
from nats.js.api import KeyValueConfig

from .._buckets import bucket_replication, key_value
from .._errors import ConfigError
from .._state import kv_key

if TYPE_CHECKING:
    from nats.js.kv import KeyValue

    from .._mesh import Mesh

__all__ = ["Grant", "Grants", "matches"]

log = logging.getLogger("actormesh.tools")


class Grant(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """One principal's grant, as the bucket holds it."""

    principal: str
    #: Tool names or fnmatch patterns the principal may call.
    tools: list[str] = msgspec.field(default_factory=list)
    #: Of those, the ones whose calls wait for an operator's approval.
    approval: list[str] = msgspec.field(default_factory=list)


_decoder = msgspec.json.Decoder(Grant)
#: What JetStream accepts as a KV key (a principal's escaped name must be one).
_KV_KEY = re.compile(r"^[-/_=.a-zA-Z0-9]+$")
_encoder = msgspec.json.Encoder()


def matches(patterns: list[str], tool: str) -> bool:
    return any(p == tool or fnmatch.fnmatchcase(tool, p) for p in patterns)


class Grants:
    """The grants bucket, and a live copy of it once `watch` runs."""

    def __init__(self, mesh: Mesh) -> None:
        self._mesh = mesh
        self.bucket = f"{mesh.subjects.prefix}_grants"
        self._kv: KeyValue | None = None
        self._live: dict[str, Grant] = {}
        self._watching: asyncio.Task[None] | None = None
        self._ready = asyncio.Event()

    async def kv(self) -> KeyValue:
        if self._kv is None:
            config = KeyValueConfig(
                bucket=self.bucket,
                history=5,
                description="actormesh: grants",
                **bucket_replication(self._mesh),
            )
            self._kv = await key_value(self._mesh.js, config)
        return self._kv

    # -- reading ------------------------------------------------------------------------

    async def get(self, principal: str, *, fresh: bool = False) -> Grant:
        """`principal`'s grant: from the live copy when watching, else (or `fresh`)
        read from the bucket."""
        if self._watching is not None and not fresh:
            await self._ready.wait()
            return self._live.get(principal) or Grant(principal=principal)
        key = kv_key(principal)
        if not _KV_KEY.match(key):
            return Grant(principal=principal)  # no principal, or one no grant can name
        kv = await self.kv()
        try:
            entry = await kv.get(key)
        except nats.js.errors.KeyNotFoundError:
            return Grant(principal=principal)
        return _decoder.decode(entry.value or b"")

    async def all(self) -> list[Grant]:
        kv = await self.kv()
        try:
            keys = await kv.keys()
        except nats.js.errors.NoKeysError:
            return []
        out = []
        for key in keys:
            with contextlib.suppress(nats.js.errors.KeyNotFoundError):
                entry = await kv.get(key)
                out.append(_decoder.decode(entry.value or b""))
        return sorted(out, key=lambda g: g.principal)

    async def allowed(self, principal: str, tool: str, *, fresh: bool = False) -> bool:
        return matches((await self.get(principal, fresh=fresh)).tools, tool)

    def allowed_now(self, principal: str, tool: str) -> bool | None:
        """From the live copy, without waiting; None before the watch has loaded."""
        if not self._ready.is_set():
            return None
        grant = self._live.get(principal)
        return grant is not None and matches(grant.tools, tool)

    async def needs_approval(self, principal: str, tool: str) -> bool:
        grant = await self.get(principal)
        if not matches(grant.tools, tool):
            # The live copy is behind the grant the call was admitted by: go by the
            # bucket, or a call could skip an approval granted a moment ago.
            grant = await self.get(principal, fresh=True)
        return matches(grant.approval, tool)

    # -- writing ------------------------------------------------------------------------

    async def grant(self, principal: str, *tools: str, approval: bool = False) -> Grant:
        """Let `principal` call `tools` (names or patterns); with `approval`, each call
        waits for an operator."""
        return await self._update(principal, add=tools, approval=approval)

    async def revoke(self, principal: str, *tools: str) -> Grant:
        """Take `tools` back (all of the principal's when none are named)."""
        return await self._update(principal, remove=tools or None)

    async def _update(
        self,
        principal: str,
        *,
        add: tuple[str, ...] = (),
        remove: tuple[str, ...] | None = (),
        approval: bool = False,
    ) -> Grant:
        key = kv_key(principal)
        if not _KV_KEY.match(key):
            raise ConfigError(
                f"invalid principal {principal!r}: use letters, digits and - _ . : @ = +"
            )
        kv = await self.kv()
        for _ in range(10):  # compare-and-set: concurrent editors lose nothing
            try:
                entry = await kv.get(key)
                current, revision = _decoder.decode(entry.value or b""), entry.revision or 0
            except nats.js.errors.KeyNotFoundError as exc:
                current = Grant(principal=principal)
                marker = getattr(exc, "entry", None)
                revision = getattr(marker, "revision", None) or 0
            tools = [t for t in current.tools if remove is not None and t not in remove]
            needs = [t for t in current.approval if remove is not None and t not in remove]
            tools += [t for t in add if t not in tools]
            if approval:
                needs += [t for t in add if t not in needs]
            new = Grant(principal=principal, tools=tools, approval=needs)
            try:
                await kv.update(key, _encoder.encode(new), last=revision)
            except nats.js.errors.KeyWrongLastSequenceError:
                continue
            return new
        raise RuntimeError(f"grants of {principal!r} kept changing under us")

    # -- watching -----------------------------------------------------------------------

    async def watch(self, wait: float | None = None) -> bool:
        """Keep the live copy (idempotent); wait up to `wait` seconds (None: for
        good) for it to load. Returns whether it has loaded: until then, `allowed`
        reads the bucket, so nothing is admitted without a grant either way."""
        if self._watching is None:
            self._watching = asyncio.get_running_loop().create_task(self._watch())
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(wait):
                await self._ready.wait()
        return self._ready.is_set()

    async def _watch(self) -> None:
        while True:
            try:
                kv = await self.kv()
                watcher = await kv.watchall()
                async for entry in watcher:
                    if entry is None:  # the initial values are in
                        self._ready.set()
                        continue
                    if entry.operation in ("DEL", "PURGE") or not entry.value:
                        self._live = {p: g for p, g in self._live.items() if kv_key(p) != entry.key}
                        continue
                    with contextlib.suppress(msgspec.DecodeError, msgspec.ValidationError):
                        grant = _decoder.decode(entry.value)
                        self._live[grant.principal] = grant
                    self._ready.set()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("grants watch interrupted (%r); watching again", exc)
                await asyncio.sleep(1.0)

    async def close(self) -> None:
        if self._watching is not None:
            self._watching.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._watching
            self._watching = None
