"""One message: decode, run the handler on its key's instance, reply, then ack.

The interceptor chains (`actormesh._interceptor`) are composed here once per
change of the worker's interceptors, so a worker without any calls the handler
directly.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from nats.aio.msg import Msg

from .._actor import Actor, Context, Handler
from .._interceptor import (
    CallHandler,
    HandleMessage,
    MessageInput,
    Outcome,
    WorkerInterceptor,
    compose_handler,
    compose_message,
    overrides_outcome,
    report_outcome,
)
from .._subjects import deliveries_of
from .._wire import Hdr
from ._dispatch import key_of

if TYPE_CHECKING:
    from ._facade import Worker

__all__ = ["Handling"]

log = logging.getLogger("actormesh.worker")


class Handling:
    """The live actor instances (one per key) and the composed handling chains."""

    def __init__(self, worker: Worker, *, base: str) -> None:
        self._w = worker
        self._base = base
        self._partitioned = worker.partition is not None
        spec = worker.spec
        self._actor_type = spec.actor_type
        self._decoder = spec.decoder
        self._handlers = spec.handlers
        self.instances: dict[str, Actor] = {}
        self._outcomes: tuple[WorkerInterceptor, ...] = ()
        self._failing: set[int] = set()
        self._step: HandleMessage = self._handle
        self._calls: dict[type[Any], CallHandler] = {}
        self._plain_calls: frozenset[type[Any]] = frozenset()
        self._direct: frozenset[type[Any]] = frozenset()
        self.compose(())

    def compose(self, interceptors: tuple[WorkerInterceptor, ...]) -> None:
        """Build the chains: worker-wide interceptors outside a handler's own."""
        self._outcomes = tuple(i for i in interceptors if overrides_outcome(i))
        self._step = compose_message(interceptors, self._handle)
        # Handlers no interceptor wraps run on the direct path (see `process`).
        self._direct = frozenset(
            message_type
            for message_type, handler in self._handlers.items()
            if not interceptors and not handler.interceptors
        )
        self._calls = {
            message_type: compose_handler((*interceptors, *handler.interceptors), _call_handler)
            for message_type, handler in self._handlers.items()
        }
        # Handlers whose call nothing wraps (a tracer wraps the message only): `_handle`
        # calls them itself, one coroutine frame less per message.
        self._plain_calls = frozenset(
            message_type for message_type, call in self._calls.items() if call is _call_handler
        )

    # -- the flow ---------------------------------------------------------------------

    async def process(self, key: str, msg: Msg) -> None:
        w = self._w
        headers = msg.headers or {}
        reply_to = headers.get(Hdr.REPLY_TO)
        deadline = headers.get(Hdr.DEADLINE)
        if deadline is not None and _expired(deadline):
            await w._failures.expired(self._input(key, msg, headers, reply_to), deadline)
            return
        try:
            obj = self._decoder.decode(msg.data)
            handler = self._handlers[type(obj)]
        except Exception as exc:
            # Whatever decoding raises (bad UTF-8, nesting too deep, an unknown
            # type, no memory) is the input's fault: settle it now, never leave it held.
            await w._failures.bad_message(self._input(key, msg, headers, reply_to), exc)
            return
        if type(obj) in self._direct:
            await self._direct_call(key, msg, headers, reply_to, obj, handler)
            return
        inp = self._input(key, msg, headers, reply_to)
        inp.message = obj
        inp.handler = handler
        inp.started = time.perf_counter()
        if await self._step(inp) is None:
            await w._settler.ack(msg)
            w.handled += 1
            if self._outcomes:
                self.report("handled", inp, time.perf_counter() - inp.started)

    async def _direct_call(
        self,
        key: str,
        msg: Msg,
        headers: dict[str, str],
        reply_to: str | None,
        obj: Any,
        handler: Handler,
    ) -> None:
        """`_handle` for a handler no interceptor wraps, without a `MessageInput`
        (built only if it fails) or a `Context` the handler does not take: what
        most messages cost, kept to the handler, its reply and the ack."""
        w = self._w
        ctx: Context | None = None
        w.in_flight += 1
        try:
            instance = self.instances.get(key)
            if instance is None:
                instance = await self._new_instance(key)
            if handler.wants_context:
                ctx = self._context(key, self.subject_of(key, msg), headers, msg, reply_to)
                result = handler.fn(instance, obj, ctx)
            else:
                result = handler.fn(instance, obj)
            if handler.is_async:
                result = await result
        except asyncio.CancelledError:
            w.in_flight -= 1
            raise
        except Exception as exc:
            w.in_flight -= 1
            w.failed += 1
            inp = self._input(key, msg, headers, reply_to)
            inp.message, inp.handler, inp.context = obj, handler, ctx
            inp.actor = self.instances.get(key)
            await w._failures.handler_failed(inp, exc)
            return
        w.in_flight -= 1
        if reply_to and (ctx is None or not ctx.replied):
            await w._replies.value(reply_to, result)
        await w._settler.ack(msg)
        w.handled += 1

    def _input(
        self, key: str, msg: Msg, headers: dict[str, str], reply_to: str | None
    ) -> MessageInput:
        return MessageInput(
            actor_type=self._actor_type,
            key=key,
            subject=self.subject_of(key, msg),
            headers=headers,
            msg=msg,
            reply_to=reply_to,
        )

    async def _handle(self, inp: MessageInput) -> BaseException | None:
        """The innermost message step: the handler chain, then its reply or failure."""
        w = self._w
        reply_to = inp.reply_to
        w.in_flight += 1
        try:
            instance = self.instances.get(inp.key)
            if instance is None:
                instance = await self._new_instance(inp.key)
            inp.actor = instance
            handler = inp.handler
            if handler is not None and handler.wants_context:
                inp.context = self._context(
                    inp.key, inp.subject, inp.headers, inp.msg, reply_to, inp._deliveries
                )
            message = inp.message
            if handler is not None and type(message) in self._plain_calls:
                if handler.wants_context:
                    result = handler.fn(instance, message, inp.context)
                else:
                    result = handler.fn(instance, message)
                if handler.is_async:
                    result = await result
            else:
                result = await self._calls[type(message)](inp)
        except asyncio.CancelledError:
            w.in_flight -= 1
            raise
        except Exception as exc:
            w.in_flight -= 1
            w.failed += 1
            if self._outcomes:
                self.report("failed", inp, time.perf_counter() - inp.started)
            # Failure handling and replies run inside the message chain: a tracer's
            # span covers them, and their log lines carry its ids.
            await w._failures.handler_failed(inp, exc)
            return exc
        w.in_flight -= 1
        ctx = inp.context
        if reply_to and (ctx is None or not ctx.replied):
            await w._replies.value(reply_to, result)
        return None

    # -- outcomes -----------------------------------------------------------------------

    def report(self, outcome: Outcome, inp: MessageInput | None, seconds: float) -> None:
        if self._outcomes:
            report_outcome(self._outcomes, self._w, outcome, inp, seconds, self._failing)

    def report_raw(self, outcome: Outcome, msg: Msg) -> None:
        """Report an outcome known only from the delivered message."""
        if self._outcomes:
            key = key_of(self._base, msg)
            inp = MessageInput(
                actor_type=self._actor_type,
                key=key,
                subject=self.mailbox_subject(msg),
                headers=msg.headers or {},
                msg=msg,
            )
            self.report(outcome, inp, 0.0)

    # -- instances and context --------------------------------------------------------

    def mailbox_subject(self, msg: Msg) -> str:
        """The subject senders used (a partitioned mailbox stores another one)."""
        return self.subject_of(key_of(self._base, msg), msg) if self._partitioned else msg.subject

    def subject_of(self, key: str, msg: Msg) -> str:
        """`mailbox_subject` for a message whose key is known."""
        if not self._partitioned:
            return msg.subject
        return self._w.mesh.subjects.mailbox(self._actor_type, key)

    def _context(
        self,
        key: str,
        subject: str,
        headers: dict[str, str],
        msg: Msg,
        reply_to: str | None,
        deliveries: int = 0,
    ) -> Context:
        reply: Callable[[Any], Awaitable[None]] | None = None
        if reply_to is not None:
            replies = self._w._replies

            async def reply(value: Any) -> None:
                await replies.value(reply_to, value)

        return Context(
            mesh=self._w.mesh,
            actor_type=self._actor_type,
            key=key,
            subject=subject,
            headers=headers,
            deliveries=deliveries or deliveries_of(msg),
            reply=reply,
        )

    async def _new_instance(self, key: str) -> Actor:
        instance = self._w.spec.cls()
        instance.key = key
        await instance.on_start()
        self.instances[key] = instance
        return instance

    async def stop_instance(self, key: str, instance: Actor) -> None:
        try:
            await instance.on_stop()
        except Exception:
            log.exception("on_stop of %s/%s failed", self._actor_type, key)

    async def stop_all(self) -> None:
        for key, instance in list(self.instances.items()):
            await self.stop_instance(key, instance)
        self.instances.clear()


async def _call_handler(inp: MessageInput) -> Any:
    handler = inp.handler
    if handler is None:  # never: the chain runs decoded messages only
        raise RuntimeError("a handler chain ran without a handler")
    if handler.wants_context:
        result = handler.fn(inp.actor, inp.message, inp.context)
    else:
        result = handler.fn(inp.actor, inp.message)
    if handler.is_async:
        result = await result
    return result


def _expired(deadline: str) -> bool:
    try:
        return time.time() * 1000 > int(deadline)
    except ValueError:
        return False
