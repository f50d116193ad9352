"""The worker's one seam: interceptors, after temporalio's worker interceptors.

A `WorkerInterceptor` may wrap three things, each optional:

- `intercept_message(next)`: the whole handling of one decoded message (the
  handler, its reply, and failure handling). The step returns the handler's
  exception, or None, so a tracer can mark its span failed; the ack of a handled
  message happens after the step.
- `intercept_handler(next)`: only the handler call; raising is failing.
- `outcome(worker, outcome, input, seconds)`: told how each message ended, for
  counters. An exception from it is logged (naming the interceptor) and never
  breaks the message.

Chains are composed once, when the worker starts (or when its interceptors
change): an interceptor that keeps the defaults costs nothing per message, and a
worker without interceptors calls its handlers directly. The first interceptor
is the outermost. Interceptors in `Mesh.interceptors` serve every worker built
on that mesh, ahead of the worker's own.

A handler's own interceptors (`@actormesh.patterns.policy` declares one) sit in
`fn.__actormesh_interceptors__`; they run inside the worker-wide handler chain.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Iterable
from typing import TYPE_CHECKING, Any, ClassVar, Literal, Protocol, TypeVar

from ._subjects import deliveries_of

if TYPE_CHECKING:
    from nats.aio.msg import Msg

    from ._actor import Actor, Context, Handler
    from ._wire import Message
    from ._worker import Worker

__all__ = [
    "INTERCEPTORS_ATTR",
    "CallHandler",
    "HandleMessage",
    "HandlerInterceptor",
    "MessageInput",
    "Outcome",
    "WorkerInterceptor",
    "add_handler_interceptor",
    "compose_handler",
    "compose_message",
    "handler_interceptors",
]

log = logging.getLogger("actormesh.worker")

#: How a message ended (or, for `restarted`, what a failure did to its instance).
Outcome = Literal[
    "handled", "failed", "dead_lettered", "expired", "bad_message", "restarted", "denied"
]

S = TypeVar("S")

#: The attribute holding a handler function's own interceptors (a tuple).
INTERCEPTORS_ATTR = "__actormesh_interceptors__"


class MessageInput:
    """One delivered message, as the interceptors see it.

    `message` and `handler` are None for a message that was never decoded
    (`expired`, `bad_message`, and `dead_lettered` outcomes) and for one
    refused for want of a grant (`denied`); `actor` and
    `context` are set just before the handler chain runs (`context` only for a
    handler that takes one).
    """

    __slots__ = (
        "_deliveries",
        "actor",
        "actor_type",
        "context",
        "handler",
        "headers",
        "key",
        "message",
        "msg",
        "reply_to",
        "started",
        "subject",
    )

    def __init__(
        self,
        *,
        actor_type: str,
        key: str,
        subject: str,
        headers: dict[str, str],
        msg: Msg,
        message: Message | None = None,
        handler: Handler | None = None,
        reply_to: str | None = None,
        deliveries: int = 0,
    ) -> None:
        self.actor_type = actor_type
        self.key = key
        #: The subject the sender used (a partitioned mailbox stores another one).
        self.subject = subject
        self.headers = headers
        #: The NATS message as delivered (`msg.data` is the raw payload).
        self.msg = msg
        self.message = message
        self.handler = handler
        #: Where an ask's reply goes; None for a tell.
        self.reply_to = reply_to
        self.actor: Actor | None = None
        self.context: Context | None = None
        #: `time.perf_counter()` when handling began.
        self.started = 0.0
        # Parsed from the ack subject on first use: most messages never ask.
        self._deliveries = deliveries

    @property
    def data(self) -> bytes:
        """The raw payload."""
        return self.msg.data

    @property
    def deliveries(self) -> int:
        """How many times the broker delivered this message (1 on the first)."""
        if self._deliveries <= 0:
            self._deliveries = deliveries_of(self.msg)
        return self._deliveries


#: One message's handling step: returns the handler's exception, or None.
HandleMessage = Callable[[MessageInput], Awaitable[BaseException | None]]
#: One handler call: returns the handler's result, raises its exception.
CallHandler = Callable[[MessageInput], Awaitable[Any]]


class HandlerInterceptor(Protocol):
    """What a handler function may declare for itself (see `INTERCEPTORS_ATTR`)."""

    def intercept_handler(self, next: CallHandler) -> CallHandler: ...


class WorkerInterceptor:
    """Base class of worker interceptors: every method passes through."""

    #: True: it wraps only messages to tool handlers (`intercept_message` and
    #: `intercept_handler`); the worker's other messages keep the path nothing
    #: wraps (no chain, and batched commits for an actor with state).
    tools_only: ClassVar[bool] = False

    def intercept_message(self, next: HandleMessage) -> HandleMessage:
        """Wrap the handling of one decoded message (handler, reply, failure handling)."""
        return next

    def intercept_handler(self, next: CallHandler) -> CallHandler:
        """Wrap the handler call alone."""
        return next

    def outcome(
        self, worker: Worker, outcome: Outcome, input: MessageInput | None, seconds: float
    ) -> None:
        """How a message ended; `seconds` is the handler's run time (0 when it did not run).

        `input` is None for `restarted`."""
        return None


def overrides_outcome(interceptor: WorkerInterceptor) -> bool:
    return type(interceptor).outcome is not WorkerInterceptor.outcome


def _compose(wrappers: Iterable[Callable[[S], S]], innermost: S) -> S:
    """Apply `wrappers` so that the first one is the outermost."""
    step = innermost
    for wrap in reversed(tuple(wrappers)):
        step = wrap(step)
    return step


def compose_message(
    interceptors: Iterable[WorkerInterceptor], innermost: HandleMessage
) -> HandleMessage:
    return _compose((i.intercept_message for i in interceptors), innermost)


def compose_handler(
    interceptors: Iterable[HandlerInterceptor], innermost: CallHandler
) -> CallHandler:
    return _compose((i.intercept_handler for i in interceptors), innermost)


def handler_interceptors(fn: object) -> tuple[HandlerInterceptor, ...]:
    """The interceptors declared on a handler function."""
    found = getattr(fn, INTERCEPTORS_ATTR, ())
    return tuple(found)


def add_handler_interceptor(fn: Callable[..., Any], interceptor: HandlerInterceptor) -> None:
    """Declare `interceptor` on `fn`, inside (after) those already declared."""
    setattr(fn, INTERCEPTORS_ATTR, (*handler_interceptors(fn), interceptor))


def report_outcome(
    interceptors: tuple[WorkerInterceptor, ...],
    worker: Worker,
    outcome: Outcome,
    input: MessageInput | None,
    seconds: float,
    failing: set[int],
) -> None:
    """Tell each interceptor; one that raises does not stop the rest or the message.

    Its first failure is logged with the traceback; later ones (ids in `failing`)
    at debug level, so a broken counter does not flood the log.
    """
    for interceptor in interceptors:
        try:
            interceptor.outcome(worker, outcome, input, seconds)
        except Exception:
            name = type(interceptor).__qualname__
            if id(interceptor) in failing:
                log.debug("interceptor %s failed again on outcome %s", name, outcome)
                continue
            failing.add(id(interceptor))
            log.exception(
                "interceptor %s failed on outcome %s (further failures are logged at debug level)",
                name,
                outcome,
            )
