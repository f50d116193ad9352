"""The tool bus: the registry of published tools, and calling them.

`mesh.tools` is a `ToolBus`. Workers publish their tools' specs to a KV bucket
(`<prefix>_tools`, one entry per tool); any process lists them from there.
`call(name, args, principal=...)` looks the tool up, validates the arguments
against its input schema (the `jsonschema` package, Draft 2020-12) before
anything is sent, and sends the call as an ask through the actor's durable
mailbox, with the principal and the tool's name in headers and the call's
deadline. The callee's worker checks the grant again: a client that skips this
library is refused there too.
"""

from __future__ import annotations

import contextlib
import time
from typing import TYPE_CHECKING, Any

import msgspec
import nats.js.errors
from nats.js.api import KeyValueConfig

from .._buckets import key_value
from .._errors import (
    AskTimeout,
    RemoteError,
    ToolArgumentsInvalid,
    ToolDenied,
    ToolFailed,
    ToolNotFound,
    ToolRejected,
    ToolTimeout,
)
from .._wire import Hdr
from ._declare import KEY_ARG, ToolSpec
from ._grants import Grants

if TYPE_CHECKING:
    from nats.js.kv import KeyValue

    from .._mesh import Mesh

__all__ = ["DEFAULT_TIMEOUT", "ContextTools", "ToolBus"]

#: A tool call's timeout when the caller gives none (the design's default).
DEFAULT_TIMEOUT = 30.0

_spec_decoder = msgspec.json.Decoder(ToolSpec)
_encoder = msgspec.json.Encoder()


class ToolBus:
    """Publish, list and call the mesh's tools (`mesh.tools`)."""

    def __init__(self, mesh: Mesh) -> None:
        self._mesh = mesh
        self.bucket = f"{mesh.subjects.prefix}_tools"
        self.grants = Grants(mesh)
        self._kv: KeyValue | None = None
        self._specs: dict[str, ToolSpec] = {}
        self._validators: dict[str, Any] = {}

    async def _registry(self) -> KeyValue:
        if self._kv is None:
            config = KeyValueConfig(bucket=self.bucket, history=1, description="actormesh: tools")
            self._kv = await key_value(self._mesh.js, config)
        return self._kv

    # -- the registry -------------------------------------------------------------------

    async def publish(self, specs: tuple[ToolSpec, ...] | list[ToolSpec]) -> None:
        """Put `specs` in the registry (a worker does this when it starts)."""
        kv = await self._registry()
        for spec in specs:
            await kv.put(spec.name, _encoder.encode(spec))
            self._remember(spec)

    def _remember(self, spec: ToolSpec) -> None:
        if self._specs.get(spec.name) != spec:
            self._specs[spec.name] = spec
            self._validators.pop(spec.name, None)

    async def spec(self, name: str, *, fresh: bool = False) -> ToolSpec:
        """A tool's spec; `ToolNotFound` if no worker published it."""
        if not fresh and name in self._specs:
            return self._specs[name]
        kv = await self._registry()
        try:
            entry = await kv.get(name)
        except (nats.js.errors.KeyNotFoundError, nats.js.errors.InvalidKeyError):
            raise ToolNotFound(name) from None
        spec = _spec_decoder.decode(entry.value or b"")
        self._remember(spec)
        return spec

    async def list_tools(self) -> list[ToolSpec]:
        """Every published tool, by name."""
        kv = await self._registry()
        try:
            names = await kv.keys()
        except nats.js.errors.NoKeysError:
            return []
        specs = []
        for name in sorted(names):
            with contextlib.suppress(ToolNotFound):
                specs.append(await self.spec(name, fresh=True))
        return specs

    async def list_available_tools(self, principal: str) -> list[ToolSpec]:
        """The tools `principal` may call, with their schemas."""
        grant = await self.grants.get(principal)
        from ._grants import matches

        return [s for s in await self.list_tools() if matches(grant.tools, s.name)]

    # -- calling ------------------------------------------------------------------------

    def validate(self, spec: ToolSpec, args: dict[str, Any]) -> None:
        validator = self._validators.get(spec.name)
        if validator is None:
            # Imported on the first call: most processes never validate arguments.
            from jsonschema import Draft202012Validator

            validator = self._validators[spec.name] = Draft202012Validator(spec.input_schema)
        error = next(iter(validator.iter_errors(args)), None)
        if error is not None:
            where = "/".join(str(p) for p in error.absolute_path) or "(arguments)"
            raise ToolArgumentsInvalid(spec.name, f"{where}: {error.message}")

    async def call(
        self,
        name: str,
        args: dict[str, Any] | None = None,
        *,
        principal: str,
        timeout: float = DEFAULT_TIMEOUT,
        headers: dict[str, str] | None = None,
    ) -> Any:
        """Call tool `name` with `args` as `principal`; returns its result.

        Raises `ToolNotFound`, `ToolArgumentsInvalid` (nothing sent), `ToolDenied`,
        `ToolTimeout`, `ToolRejected` (an operator said no) or `ToolFailed`.
        """
        return await self._call(name, args or {}, principal, timeout, None, headers)

    async def _call(
        self,
        name: str,
        args: dict[str, Any],
        principal: str,
        timeout: float,
        deadline: float | None,
        headers: dict[str, str] | None,
    ) -> Any:
        spec = await self.spec(name)
        self.validate(spec, args)
        key = str(args[KEY_ARG]) if spec.keyed else None
        body = {k: v for k, v in args.items() if not (spec.keyed and k == KEY_ARG)}
        body["type"] = spec.message_type
        ref = self._mesh.ref(spec.actor_type, key)
        ref._deadline = deadline
        ref._principal = principal
        hdrs = {**(headers or {}), Hdr.TOOL: name}
        try:
            return await ref.ask(_encoder.encode(body), timeout=timeout, headers=hdrs)
        except AskTimeout as exc:
            raise ToolTimeout(name, exc.timeout) from None
        except RemoteError as exc:
            raise _from_remote(name, principal, exc) from None


def _from_remote(name: str, principal: str, exc: RemoteError) -> Exception:
    if exc.code == ToolDenied.code:
        return ToolDenied(name, principal)
    if exc.code == ToolRejected.code:
        return ToolRejected(name, exc.remote_message)
    if exc.code == "bad_message":
        return ToolArgumentsInvalid(name, exc.remote_message)
    if exc.code == ToolTimeout.code or exc.code == "deadline_exceeded":
        return ToolTimeout(name, 0.0)
    return ToolFailed(name, exc)


class ContextTools:
    """`ctx.tools`: calls as the handling actor's type, within its message's deadline."""

    def __init__(self, bus: ToolBus, *, principal: str, deadline: float | None) -> None:
        self._bus = bus
        self.principal = principal
        self.deadline = deadline

    async def call(
        self, name: str, args: dict[str, Any] | None = None, *, timeout: float = DEFAULT_TIMEOUT
    ) -> Any:
        if self.deadline is not None:
            left = self.deadline - time.time()
            if left <= 0:
                raise ToolTimeout(name, 0.0)
            timeout = min(timeout, left)
        return await self._bus._call(name, args or {}, self.principal, timeout, self.deadline, None)

    async def list_available_tools(self) -> list[ToolSpec]:
        return await self._bus.list_available_tools(self.principal)
