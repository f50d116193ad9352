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
from collections.abc import Coroutine
from typing import TYPE_CHECKING, Any

import msgspec
import nats.js.errors
from nats.js.api import KeyValueConfig

from .._buckets import bucket_replication, key_value
from .._errors import (
    AskTimeout,
    NoSuchActorType,
    RemoteError,
    ToolArgumentsInvalid,
    ToolDenied,
    ToolFailed,
    ToolNotFound,
    ToolRejected,
    ToolTimeout,
)
from .._hooks import NO_SPAN, ToolTracer
from .._wire import Hdr
from ._approvals import Approvals
from ._declare import KEY_ARG, ToolSpec
from ._fastcheck import Check, checker
from ._grants import Grants
from ._progress import OnProgress, ToolProgress, encode, progress_inbox

if TYPE_CHECKING:
    from nats.js.kv import KeyValue

    from .._mesh import Mesh
    from .._ref import ActorRef

__all__ = ["DEFAULT_TIMEOUT", "ContextTools", "ToolBus"]

#: A tool call's timeout when the caller gives none (the design's default).
DEFAULT_TIMEOUT = 30.0
#: References kept for calls (one per actor instance called).
_REFS_MAX = 4096

_spec_decoder = msgspec.json.Decoder(ToolSpec)
_encoder = msgspec.json.Encoder()


class ToolBus:
    """Publish, list and call the mesh's tools (`mesh.tools`)."""

    def __init__(self, mesh: Mesh) -> None:
        self._mesh = mesh
        self.bucket = f"{mesh.subjects.prefix}_tools"
        self.grants = Grants(mesh)
        #: Calls waiting for an operator (`_approvals`).
        self.approvals = Approvals(mesh)
        #: The caller's span per call (`actormesh.observability` sets it); None: none.
        self.tracer: ToolTracer | None = None
        #: Calls waiting for an operator now, by tool: what the tool metrics report.
        self.pending_approvals: dict[str, int] = {}
        self._kv: KeyValue | None = None
        self._specs: dict[str, ToolSpec] = {}
        self._validators: dict[str, Any] = {}
        #: The fast argument checks (`_fastcheck`), None for a schema without one.
        self._checks: dict[str, Check | None] = {}
        self._refs: dict[tuple[str, str | None], ActorRef[Any]] = {}

    async def _registry(self) -> KeyValue:
        if self._kv is None:
            config = KeyValueConfig(
                bucket=self.bucket,
                history=1,
                description="actormesh: tools",
                **bucket_replication(self._mesh),
            )
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
            self._checks.pop(spec.name, None)

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
        grant = await self.grants.get(principal, fresh=True)
        from ._grants import matches

        return [s for s in await self.list_tools() if matches(grant.tools, s.name)]

    # -- calling ------------------------------------------------------------------------

    def validate(self, spec: ToolSpec, args: dict[str, Any]) -> None:
        try:
            check = self._checks[spec.name]
        except KeyError:
            check = self._checks[spec.name] = checker(spec.input_schema)
        if check is not None and check(args):
            return  # valid for sure; anything else goes to jsonschema, which says why
        validator = self._validators.get(spec.name)
        if validator is None:
            # Imported on the first call: most processes never validate arguments.
            from jsonschema import Draft202012Validator

            validator = self._validators[spec.name] = Draft202012Validator(spec.input_schema)
        error = next(iter(validator.iter_errors(args)), None)
        if error is not None:
            where = "/".join(str(p) for p in error.absolute_path) or "(arguments)"
            raise ToolArgumentsInvalid(spec.name, f"{where}: {error.message}")

    def call(
        self,
        name: str,
        args: dict[str, Any] | None = None,
        *,
        principal: str,
        timeout: float = DEFAULT_TIMEOUT,
        headers: dict[str, str] | None = None,
        on_progress: OnProgress | None = None,
        call_id: str | None = None,
    ) -> Coroutine[Any, Any, Any]:
        """Call tool `name` with `args` as `principal`; returns its result.

        `on_progress` receives the `ToolProgress` events the tool's handler, and
        the tools it calls in turn, report while this call waits; `call_id` names
        the call (`gen_ai.tool.call.id` on its spans, `ToolProgress.call_id`; one
        is made when the call is traced or listens to progress, if none is given).

        Raises `ToolNotFound`, `ToolArgumentsInvalid` (nothing sent), `ToolDenied`,
        `ToolTimeout`, `ToolRejected` (an operator said no) or `ToolFailed`.

        A plain function returning the call's coroutine (await it): one coroutine
        frame less on the way to the reply.
        """
        hdrs = dict(headers) if headers else {}
        if call_id:
            hdrs[Hdr.TOOL_CALL_ID] = call_id
        if on_progress is None:
            return self._call(name, args or {}, principal, timeout, None, hdrs)
        return self._reporting(name, args or {}, principal, timeout, hdrs, on_progress)

    async def _reporting(
        self,
        name: str,
        args: dict[str, Any],
        principal: str,
        timeout: float,
        hdrs: dict[str, str],
        on_progress: OnProgress,
    ) -> Any:
        async with progress_inbox(self._mesh.nc, on_progress) as inbox:
            hdrs[Hdr.PROGRESS_TO] = inbox
            return await self._call(name, args, principal, timeout, None, hdrs)

    def set_approvals_pending(self, tool: str, count: int) -> None:
        """How many calls of `tool` wait for an operator now (the tool metrics' gauge)."""
        self.pending_approvals[tool] = count

    async def _call(
        self,
        name: str,
        args: dict[str, Any],
        principal: str,
        timeout: float,
        deadline: float | None,
        headers: dict[str, str] | None,
    ) -> Any:
        # The hot path of every call: no coroutine or reference more than needed
        # (`make bench` compares it with a plain ask to the same handler).
        spec = self._specs.get(name) or await self.spec(name)
        check = self._checks.get(name)
        if check is None or not check(args):
            try:
                self.validate(spec, args)  # makes the check on first use, or says what is wrong
            except ToolArgumentsInvalid:
                # The spec may be stale (a worker since published a new schema): the
                # registry's decides.
                spec = await self.spec(name, fresh=True)
                self.validate(spec, args)
        if deadline is not None:
            # The timeout hierarchy: at most what is left of the parent's deadline.
            left = deadline - time.time()
            if left <= 0:
                raise ToolTimeout(name, 0.0)
            timeout = min(timeout, left)
        # The tag first: the worker's decoder reads a tagged union fastest that way.
        body: dict[str, Any] = {"type": spec.message_type}
        if spec.keyed:
            key: str | None = str(args[KEY_ARG])
            body.update((k, v) for k, v in args.items() if k != KEY_ARG)
        else:
            key = None
            body.update(args)
        hdrs = dict(headers) if headers else {}
        hdrs[Hdr.PRINCIPAL] = principal
        hdrs[Hdr.TOOL] = name
        tracer = self.tracer
        # A call has an id when something shows it (spans, progress events, or the
        # caller's own); otherwise the header is not worth its bytes.
        call_id = hdrs.get(Hdr.TOOL_CALL_ID, "")
        if not call_id and (tracer is not None or Hdr.PROGRESS_TO in hdrs):
            call_id = hdrs[Hdr.TOOL_CALL_ID] = self._mesh.new_msg_id()
        span = (
            NO_SPAN
            if tracer is None
            else tracer.tool_call(tool=name, call_id=call_id, description=spec.description)
        )
        ref = self._refs.get((spec.actor_type, key)) or self._ref(spec.actor_type, key)
        try:
            with span:
                return await ref.ask(_encoder.encode(body), timeout=timeout, headers=hdrs)
        except AskTimeout as exc:
            raise ToolTimeout(name, exc.timeout) from None
        except RemoteError as exc:
            if exc.code == "bad_message":
                # The worker could not decode what our spec allowed: read it afresh next time.
                self._specs.pop(name, None)
            raise _from_remote(name, principal, exc) from None
        except NoSuchActorType:
            self._specs.pop(name, None)  # the tool's type is gone: ask the registry again
            raise

    def _ref(self, actor_type: str, key: str | None) -> ActorRef[Any]:
        """A new reference shared by the calls to one instance: the principal and the
        deadline travel in each call's headers and timeout, not in the reference."""
        if len(self._refs) >= _REFS_MAX:  # a bound: keyed tools have unbounded keys
            self._refs.clear()
        ref = self._refs[(actor_type, key)] = self._mesh.ref(actor_type, key)
        return ref


def _from_remote(name: str, principal: str, exc: RemoteError) -> Exception:
    if exc.code == ToolDenied.code:
        return ToolDenied(name, principal)
    if exc.code == ToolRejected.code:
        # The remote message is a ToolRejected's own: keep only the operator's reason.
        reason = exc.remote_message.partition("rejected by an operator")[2]
        return ToolRejected(name, reason.removeprefix(":").strip())
    if exc.code == "bad_message":
        return ToolArgumentsInvalid(name, exc.remote_message)
    if exc.code == ToolTimeout.code or exc.code == "deadline_exceeded":
        return ToolTimeout(name, 0.0)
    return ToolFailed(name, exc)


class ContextTools:
    """`ctx.tools`: calls as the handling actor's type, within its message's deadline;
    progress events to the caller of the tool call being handled."""

    def __init__(
        self,
        bus: ToolBus,
        *,
        principal: str,
        deadline: float | None,
        headers: dict[str, str] | None = None,
    ) -> None:
        self._bus = bus
        self.principal = principal
        self.deadline = deadline
        #: The message being handled's headers (its tool call, where progress goes).
        self._headers = headers or {}

    async def progress(self, data: Any = None) -> None:
        """Report `data` (any JSON value) to the caller waiting on this tool call, and
        to whoever waits on the call that made it; nothing when none listens."""
        to = self._headers.get(Hdr.PROGRESS_TO)
        if not to:
            return
        event = ToolProgress(
            tool=self._headers.get(Hdr.TOOL, ""),
            call_id=self._headers.get(Hdr.TOOL_CALL_ID, ""),
            data=data,
        )
        await self._bus._mesh.nc.publish(to, encode(event))

    async def call(
        self, name: str, args: dict[str, Any] | None = None, *, timeout: float = DEFAULT_TIMEOUT
    ) -> Any:
        if self.deadline is not None:
            left = self.deadline - time.time()
            if left <= 0:
                raise ToolTimeout(name, 0.0)
            timeout = min(timeout, left)
        # Progress of the calls this one makes goes to the same caller.
        to = self._headers.get(Hdr.PROGRESS_TO)
        hdrs = {Hdr.PROGRESS_TO: to} if to else None
        return await self._bus._call(name, args or {}, self.principal, timeout, self.deadline, hdrs)

    async def list_available_tools(self) -> list[ToolSpec]:
        return await self._bus.list_available_tools(self.principal)
