"""Actors: typed handlers discovered from annotations, lifecycle hooks, Context."""

from __future__ import annotations

import dataclasses
import inspect
import typing
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar, Union

import msgspec

from ._config import MailboxConfig, Passivation, SupervisionPolicy
from ._errors import ConfigError
from ._interceptor import HandlerInterceptor, handler_interceptors
from ._state import state_type_of
from ._subjects import check_actor_type
from ._tools._declare import ToolSpec, tool_options, tool_spec
from ._wire import Message

if TYPE_CHECKING:
    from ._mesh import ActorRef, Mesh
    from ._tools import ContextTools

__all__ = ["Actor", "ActorSpec", "Context", "Handler", "spec_of"]


class Actor:
    """Base class of actors.

    Subclass it and write one method per message type, annotated with the
    message Struct and the reply type::

        class Counter(Actor):
            def __init__(self) -> None:
                self.n = 0

            async def inc(self, msg: Inc) -> None:
                self.n += msg.by

            async def get(self, msg: Get) -> int:
                return self.n

    A handler may take a second parameter, the `Context`. One instance lives per
    key (actor id), created on its first message; `self.key` is its key.
    """

    #: The actor type's name on the wire; defaults to the class name in lower case.
    actor_type: ClassVar[str] = ""
    #: The mailbox's bounds and delivery settings.
    mailbox: ClassVar[MailboxConfig] = MailboxConfig()
    #: What to do with an instance whose handler raised, and the restart intensity.
    supervision: ClassVar[SupervisionPolicy] = SupervisionPolicy()
    #: Keyless actors get every message on key "_", run concurrently on one instance.
    keyless: ClassVar[bool] = False
    #: When idle instances are stopped and dropped (their durable state is kept).
    passivation: ClassVar[Passivation] = Passivation()

    key: str = ""

    async def on_start(self) -> None:
        """Called once before the instance handles its first message."""

    async def on_stop(self) -> None:
        """Called when the instance is stopped: worker drain, or policy `stop`."""

    async def on_restart(self, error: BaseException) -> None:
        """Called on the fresh instance that replaces one whose handler raised.

        The default runs `on_start`, as a new instance would.
        """
        await self.on_start()


class Context:
    """What a handler knows of the message it handles, and its way to the mesh."""

    __slots__ = (
        "_origin",
        "_reply",
        "_sends",
        "actor_type",
        "deliveries",
        "headers",
        "key",
        "mesh",
        "msg_id",
        "replied",
        "sender",
        "seq",
        "subject",
    )

    def __init__(
        self,
        *,
        mesh: Mesh,
        actor_type: str,
        key: str,
        subject: str,
        headers: dict[str, str],
        deliveries: int,
        reply: Callable[[Any], Awaitable[None]] | None,
        origin: str = "",
        seq: int = 0,
    ) -> None:
        self.mesh = mesh
        self.actor_type = actor_type
        self.key = key
        self.subject = subject
        self.headers = headers
        self.sender = headers.get("Am-Sender", "")
        self.msg_id = headers.get("Nats-Msg-Id", "")
        self.deliveries = deliveries
        #: The message's sequence in its mailbox stream (0: not from a stream).
        self.seq = seq
        self._reply = reply
        self.replied = False
        #: What identifies the message being handled: its id, or its stream sequence.
        self._origin = origin or self.msg_id
        self._sends = 0

    @property
    def is_ask(self) -> bool:
        return self._reply is not None

    def ref(self, actor: type[Actor] | str, key: str | None = None) -> ActorRef[Any]:
        """A reference to another actor, to `tell` or `ask` it.

        Its tells carry ids derived from the message being handled and the send's
        ordinal (the n-th tell of this handler run gets the same id each run), so
        when the message is delivered again and the handler runs again, the target
        mailbox drops the repeated tells within its duplicate window. Keep a
        handler's sends in a deterministic order for that to hold. Asks are not
        deduplicated (a dropped ask would never be answered): they are at least once.
        """
        ref = self.mesh.ref(actor, key)
        ref._ids = self._next_id
        ref._principal = self.actor_type
        ref._deadline = self.deadline
        return ref

    @property
    def deadline(self) -> float | None:
        """The message's deadline (unix seconds), if its sender set one (asks do)."""
        raw = self.headers.get("Am-Deadline")
        if raw is None:
            return None
        try:
            return int(raw) / 1000
        except ValueError:
            return None

    @property
    def tools(self) -> ContextTools:
        """Call tools as this actor type (its principal), within this message's deadline;
        `ctx.tools.progress(data)` reports to the caller of the tool call being handled."""
        from ._tools import ContextTools

        return ContextTools(
            self.mesh.tools, principal=self.actor_type, deadline=self.deadline, headers=self.headers
        )

    def _next_id(self) -> str:
        self._sends += 1
        return f"{self.actor_type}:{self.key}:{self._origin}:{self._sends}"

    async def reply(self, value: Any) -> None:
        """Reply now, before the handler returns; the return value is then not sent."""
        if self._reply is None or self.replied:
            return
        self.replied = True
        await self._reply(value)


@dataclass(frozen=True, slots=True)
class Handler:
    name: str
    message_type: type[Message]
    reply_type: Any
    fn: Callable[..., Any]
    is_async: bool
    wants_context: bool
    #: The handler's own interceptors, innermost last (`@actormesh.patterns.policy`
    #: declares one); they run inside the worker-wide ones.
    interceptors: tuple[HandlerInterceptor, ...] = ()
    #: Set when the handler is exposed as a tool (`@actormesh.tool`).
    tool: ToolSpec | None = None


_NO_PASSIVATION = Passivation()


@dataclass(frozen=True, slots=True)
class ActorSpec:
    """Everything the runtime derives once from an actor class."""

    cls: type[Actor]
    actor_type: str
    handlers: dict[type[Message], Handler]
    by_tag: dict[str, Handler]
    decoder: msgspec.json.Decoder[Any]
    mailbox: MailboxConfig
    supervision: SupervisionPolicy
    keyless: bool
    #: The Struct declared as `state: T` (durable state), or None.
    state_type: type[msgspec.Struct] | None = None
    passivation: Passivation = _NO_PASSIVATION
    #: The handlers exposed as tools.
    tools: tuple[ToolSpec, ...] = ()

    def reply_type_for(self, message_type: type[Message]) -> Any:
        return self.handlers[message_type].reply_type


_SPECS: dict[type[Actor], ActorSpec] = {}


class _NoMessage(Message, tag="\x00actormesh-never"):
    """Never sent: only there to make every actor's decoder a tagged union."""


def spec_of(cls: type[Actor]) -> ActorSpec:
    """Discover (once) the handlers of an actor class."""
    try:
        return _SPECS[cls]
    except KeyError:
        pass
    if not (isinstance(cls, type) and issubclass(cls, Actor)):
        raise ConfigError(f"{cls!r} is not an Actor subclass")
    actor_type = check_actor_type(cls.actor_type or cls.__name__.lower())
    handlers: dict[type[Message], Handler] = {}
    for name, fn in inspect.getmembers(cls, inspect.isfunction):
        if name.startswith("_") or name in ("on_start", "on_stop", "on_restart"):
            continue
        handler = _handler_of(cls, name, fn)
        if handler is None:
            continue
        if handler.message_type in handlers:
            other = handlers[handler.message_type].name
            raise ConfigError(
                f"{cls.__name__}: {name} and {other} both handle {handler.message_type.__name__}"
            )
        handlers[handler.message_type] = handler
    if not handlers:
        raise ConfigError(
            f"{cls.__name__} has no handlers: write methods like "
            "`async def inc(self, msg: Inc) -> None` where Inc subclasses actormesh.Message"
        )
    # A union always (the sentinel makes one of a single type), so a message without
    # its `type` tag is rejected rather than decoded as the only type.
    union: Any = Union[(*handlers, _NoMessage)]
    handlers = {t: _as_tool(cls, actor_type, h) for t, h in handlers.items()}
    by_tag = {tag_of(t): h for t, h in handlers.items()}
    spec = ActorSpec(
        cls=cls,
        actor_type=actor_type,
        handlers=handlers,
        by_tag=by_tag,
        decoder=msgspec.json.Decoder(union),
        mailbox=cls.mailbox,
        supervision=cls.supervision,
        keyless=cls.keyless,
        state_type=_state_type(cls),
        passivation=cls.passivation,
        tools=tuple(h.tool for h in handlers.values() if h.tool is not None),
    )
    if spec.state_type is not None:
        _check_duplicate_window(cls.__name__, cls.mailbox)
    _SPECS[cls] = spec
    return spec


def tag_of(t: type[Message]) -> str:
    """The `type` tag a message type is sent with."""
    tag = msgspec.inspect.type_info(t).tag  # type: ignore[attr-defined]
    return str(tag)


def _handler_of(cls: type[Actor], name: str, fn: Callable[..., Any]) -> Handler | None:
    try:
        hints = typing.get_type_hints(fn)
    except Exception as exc:
        raise ConfigError(f"{cls.__name__}.{name}: cannot resolve annotations: {exc}") from exc
    params = [p for p in inspect.signature(fn).parameters.values() if p.name != "self"]
    if not params:
        return None
    first = hints.get(params[0].name)
    if not (isinstance(first, type) and issubclass(first, Message)):
        return None
    if first is Message:
        raise ConfigError(f"{cls.__name__}.{name}: annotate a Message subclass, not Message")
    wants_context = len(params) >= 2
    if wants_context and hints.get(params[1].name) not in (Context, None):
        raise ConfigError(f"{cls.__name__}.{name}: the second parameter must be a Context")
    if len(params) > 2:
        raise ConfigError(f"{cls.__name__}.{name}: a handler takes (msg) or (msg, ctx)")
    return Handler(
        name=name,
        message_type=first,
        reply_type=hints.get("return", Any),
        fn=fn,
        is_async=inspect.iscoroutinefunction(fn),
        wants_context=wants_context,
        interceptors=handler_interceptors(fn),
    )


def _state_type(cls: type[Actor]) -> type[msgspec.Struct] | None:
    declared = state_type_of(cls)
    if declared is not None and cls.keyless:
        raise ConfigError(
            f"{cls.__name__} is keyless and declares state: keyless messages run "
            "concurrently on one instance, so there is no key to keep state for; "
            "make it keyed"
        )
    return declared


def _check_duplicate_window(name: str, mailbox: MailboxConfig) -> None:
    """A message delivered again re-runs its handler, whose tells repeat their ids:
    the duplicate window must outlast the worst gap from its first delivery to its
    last one, or a repeated tell would be stored twice."""
    worst = sum(
        max(mailbox.ack_wait, mailbox.redelivery_delay(d)) for d in range(1, mailbox.max_deliver)
    )
    if mailbox.duplicate_window < worst:
        raise ConfigError(
            f"{name}: duplicate_window {mailbox.duplicate_window:g}s is shorter than the "
            f"worst redelivery delay, {worst:g}s ({mailbox.max_deliver - 1} redeliveries, "
            f"each up to max(ack_wait {mailbox.ack_wait:g}s, its backoff)): tells sent "
            "by a handler that runs again could be stored twice. Raise duplicate_window "
            f"to at least {worst:g}, or lower max_deliver, ack_wait or the backoff."
        )


def _as_tool(cls: type[Actor], actor_type: str, handler: Handler) -> Handler:
    """`handler`, with its tool spec if `@tool` exposed it."""
    options = tool_options(handler.fn)
    if options is None:
        return handler
    spec = tool_spec(
        actor_type=actor_type,
        handler=handler.name,
        fn=handler.fn,
        message_type=handler.message_type,
        tag=tag_of(handler.message_type),
        reply_type=handler.reply_type,
        keyed=not cls.keyless,
        options=options,
    )
    return dataclasses.replace(handler, tool=spec)
