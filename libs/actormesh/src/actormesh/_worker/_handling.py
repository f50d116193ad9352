"""One message: decode, run the handler on its key's instance, reply, then ack.

The interceptor chains (`actormesh._interceptor`) are composed here once per
change of the worker's interceptors, so a worker without any calls the handler
directly.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import random
import time
from collections import deque
from collections.abc import Awaitable, Callable, Coroutine
from typing import TYPE_CHECKING, Any

from nats.aio.msg import Msg

from .._actor import Actor, Context, Handler
from .._errors import StateConflict
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
from .._state import STATE_ATTR, StateSlot, StateStore
from .._subjects import deliveries_of, stream_seq_of
from .._tools._approvals import gate as approval_gate
from .._tools._approvals import needs_approval
from .._wire import Hdr
from ._batch import Prepared, StatefulBatch
from ._dispatch import key_of
from ._passivation import Passivator

if TYPE_CHECKING:
    from ._facade import Worker

__all__ = ["HANDLER_SAMPLES", "Handling", "percentiles"]

#: Handler times a worker keeps between two heartbeats (the newest win): bounded
#: memory, and a sort per heartbeat that stays cheap.
HANDLER_SAMPLES = 4096


def percentiles(samples: deque[float]) -> tuple[float, float]:
    """The median and the 99th percentile (nearest rank) of `samples`; (0, 0) when empty."""
    if not samples:
        return 0.0, 0.0
    ordered = sorted(samples)
    n = len(ordered)
    return ordered[(n - 1) // 2], ordered[min(n - 1, (99 * n + 99) // 100 - 1)]


log = logging.getLogger("actormesh.worker")


class Handling:
    """The live actor instances (one per key) and the composed handling chains."""

    def __init__(self, worker: Worker, *, base: str) -> None:
        self._w = worker
        self._base = base
        #: The key of a delivered message (the worker sets another with priorities).
        self.key_of: Callable[[Msg], str] = functools.partial(key_of, base)
        self._partitioned = worker.partition is not None
        spec = worker.spec
        self._actor_type = spec.actor_type
        self._decoder = spec.decoder
        self._handlers = spec.handlers
        self.instances: dict[str, Actor] = {}
        #: Handler times since the last heartbeat took them (bounded: the newest only).
        self.durations: deque[float] = deque(maxlen=HANDLER_SAMPLES)
        self._outcomes: tuple[WorkerInterceptor, ...] = ()
        self._failing: set[int] = set()
        self._step: HandleMessage = self._handle
        #: The chain of a message to a tool (`tools_only` interceptors too).
        self._tool_step: HandleMessage = self._handle
        self.chained: frozenset[type[Any]] = frozenset()
        self._calls: dict[type[Any], CallHandler] = {}
        self._plain_calls: frozenset[type[Any]] = frozenset()
        self._direct: frozenset[type[Any]] = frozenset()
        #: Durable state (an actor that declares `state`), set up by `start_state`.
        self.store: StateStore | None = None
        #: Each live key's view of its state entry.
        self._slots: dict[str, StateSlot] = {}
        #: Messages acked without running: their effect was already in the state.
        self.skipped = 0
        self.passivator = Passivator(
            self, spec.passivation, busy=lambda key: worker._dispatcher.busy(key)
        )
        self._touch = self.passivator.touch if self.passivator.enabled else None
        #: Runs a key's queued messages together, one commit for all (durable state,
        #: no interceptors); set by `compose`.
        self.batch: StatefulBatch | None = None
        self.compose(())

    def compose(self, interceptors: tuple[WorkerInterceptor, ...]) -> None:
        """Build the chains: worker-wide interceptors outside a handler's own.

        Interceptors that say `tools_only` wrap the messages to tool handlers only:
        the others keep the direct path and batched commits."""
        self._outcomes = tuple(i for i in interceptors if overrides_outcome(i))
        general = tuple(i for i in interceptors if not i.tools_only)
        self._step = compose_message(general, self._handle)
        self._tool_step = compose_message(interceptors, self._handle)

        def around(handler: Handler) -> tuple[WorkerInterceptor, ...]:
            return interceptors if handler.tool is not None else general

        self._calls = {
            message_type: compose_handler((*around(handler), *handler.interceptors), _call_handler)
            for message_type, handler in self._handlers.items()
        }
        #: Message types a batch of an actor with state must not run itself.
        self.chained = frozenset(
            message_type
            for message_type, handler in self._handlers.items()
            if around(handler) or handler.interceptors
        )
        unwrapped = frozenset(self._handlers) - self.chained
        # Without state, handlers no interceptor wraps run on the direct path (see
        # `process`); with state, a batch runs them.
        self._direct = unwrapped if self._w.spec.state_type is None else frozenset()
        self.batch = StatefulBatch(self) if self.store is not None and unwrapped else None
        # Handlers whose call nothing wraps (a tracer wraps the message only): `_handle`
        # calls them itself, one coroutine frame less per message.
        self._plain_calls = frozenset(
            message_type for message_type, call in self._calls.items() if call is _call_handler
        )

    # -- the flow ---------------------------------------------------------------------

    async def process(self, key: str, msg: Msg) -> None:
        """One message, from decoding to its ack.

        A handler no interceptor wraps runs here without a `MessageInput` (built
        only if it fails) or a `Context` it does not take: what most messages cost,
        kept to the handler, its reply and the ack, in this one coroutine frame
        (`prepare`, `run_prepared` and the call inlined)."""
        if self.batch is not None:
            await self.batch.run(key, msg)
            return
        ready = self._decoded(key, msg)
        if not isinstance(ready, Prepared):
            await ready  # settled: an expired ask, or bad input
            return
        _, _, headers, reply_to, obj, handler = ready
        if handler.tool is not None and not await self._gate(ready):
            return
        if type(obj) not in self._direct:
            await self._chain(ready)
            return
        w = self._w
        ctx: Context | None = None
        w.in_flight += 1
        started = time.perf_counter()
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
            self.durations.append(time.perf_counter() - started)
            inp = self._input(key, msg, headers, reply_to)
            inp.message, inp.handler, inp.context = obj, handler, ctx
            inp.actor = self.instances.get(key)
            await w._failures.handler_failed(inp, exc)
            return
        except BaseException:
            # Not a failure of the handler's (SystemExit and the like): the dispatcher
            # settles the message; the count must not leak.
            w.in_flight -= 1
            raise
        w.in_flight -= 1
        self.durations.append(time.perf_counter() - started)
        pending = self._answer(msg, reply_to if ctx is None or not ctx.replied else None, result)
        if pending is not None:
            await pending
        w.handled += 1

    def _answer(
        self, msg: Msg, reply_to: str | None, result: Any
    ) -> Coroutine[Any, Any, None] | None:
        """The reply (to an ask) and the ack, put on the write buffer: what is left
        to await, if anything (not a coroutine itself: the common case costs none)."""
        w = self._w
        if reply_to:
            pending = w._replies.value_soon(reply_to, result)
            if pending is not None:
                return self._answer_after(pending, msg)
        return w._settler.ack_soon(msg)

    async def _answer_after(self, reply: Coroutine[Any, Any, None], msg: Msg) -> None:
        await reply
        pending = self._w._settler.ack_soon(msg)
        if pending is not None:
            await pending

    async def prepare(self, key: str, msg: Msg) -> Prepared | None:
        """Decode `msg` and check its grant; None when it was settled here (an
        expired ask, bad input, no grant) or waits for an operator's approval."""
        ready = self._decoded(key, msg)
        if not isinstance(ready, Prepared):
            await ready
            return None
        if ready.handler.tool is not None and not await self._gate(ready):
            return None
        return ready

    def _decoded(self, key: str, msg: Msg) -> Prepared | Coroutine[Any, Any, None]:
        """The decoded message, or the coroutine that settles it (not a coroutine
        itself: the common case costs no frame)."""
        if self._touch is not None:
            self._touch(key)
        w = self._w
        headers = msg.headers or {}
        reply_to = headers.get(Hdr.REPLY_TO)
        deadline = headers.get(Hdr.DEADLINE)
        if deadline is not None and _expired(deadline):
            return w._failures.expired(self._input(key, msg, headers, reply_to), deadline)
        try:
            obj = self._decoder.decode(msg.data)
            handler = self._handlers[type(obj)]
        except Exception as exc:
            # Whatever decoding raises (bad UTF-8, nesting too deep, an unknown
            # type, no memory) is the input's fault: settle it now, never leave it held.
            return w._failures.bad_message(self._input(key, msg, headers, reply_to), exc)
        return Prepared(key, msg, headers, reply_to, obj, handler)

    async def _gate(self, ready: Prepared) -> bool:
        """A message to a tool: whether it may run now (its principal has a grant,
        and an approval it needs was given); if not, it was settled or handed back."""
        w = self._w
        key, msg, headers, reply_to, _, handler = ready
        tool = handler.tool
        if tool is None:
            return True
        if not await self._admitted(tool.name, headers):
            await w._failures.denied(self._input(key, msg, headers, reply_to), tool.name)
            return False
        if await needs_approval(w, tool, headers):
            inp = self._input(key, msg, headers, reply_to)
            return await approval_gate(w, inp, tool) == "run"
        return True

    async def _admitted(self, tool: str, headers: dict[str, str]) -> bool:
        """Whether the message's principal has a grant for `tool` (default deny)."""
        grants = self._w.mesh.tools.grants
        principal = headers.get(Hdr.PRINCIPAL, "")
        if grants.allowed_now(principal, tool):
            return True
        # Not loaded yet, or a refusal: asked of the bucket itself before refusing, so
        # a grant made a moment ago (the watch not there yet) is never refused.
        return await grants.allowed(principal, tool, fresh=True)

    async def run_prepared(self, ready: Prepared) -> None:
        """Run a decoded, admitted message through the handling chain, then ack it
        (the batch's path: an actor with state never takes `process`'s direct one)."""
        await self._chain(ready)

    async def _chain(self, ready: Prepared) -> None:
        w = self._w
        key, msg, headers, reply_to, obj, handler = ready
        inp = self._input(key, msg, headers, reply_to)
        inp.message = obj
        inp.handler = handler
        inp.started = time.perf_counter()
        step = self._tool_step if handler.tool is not None else self._step
        if await step(inp) is None:
            self.durations.append(time.perf_counter() - inp.started)
            await w._settler.ack(msg)
            w.handled += 1
            if self._outcomes:
                self.report("handled", inp, time.perf_counter() - inp.started)

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
            if self.store is None:
                result = await self._call(inp, instance)
            else:
                result = await self._call_stateful(inp, instance)
                if result is _SKIPPED:
                    w.in_flight -= 1
                    return None
        except asyncio.CancelledError:
            w.in_flight -= 1
            raise
        except Exception as exc:
            w.in_flight -= 1
            w.failed += 1
            self.durations.append(time.perf_counter() - inp.started)
            if self._outcomes:
                self.report("failed", inp, time.perf_counter() - inp.started)
            # Failure handling and replies run inside the message chain: a tracer's
            # span covers them, and their log lines carry its ids.
            await w._failures.handler_failed(inp, exc)
            return exc
        except BaseException:
            # Not a failure of the handler's (SystemExit and the like): the dispatcher
            # settles the message; the count must not leak.
            w.in_flight -= 1
            raise
        w.in_flight -= 1
        ctx = inp.context
        if reply_to and (ctx is None or not ctx.replied):
            await w._replies.value(reply_to, result)
        return None

    async def _call(self, inp: MessageInput, instance: Actor) -> Any:
        handler, message = inp.handler, inp.message
        if handler is not None and type(message) in self._plain_calls:
            if handler.wants_context:
                result = handler.fn(instance, message, inp.context)
            else:
                result = handler.fn(instance, message)
            if handler.is_async:
                result = await result
            return result
        return await self._calls[type(message)](inp)

    async def _call_stateful(self, inp: MessageInput, instance: Actor) -> Any:
        """Run the handler and commit the state it changed, before the ack.

        A message whose effect is already in the state is not run (`_SKIPPED`). A
        compare-and-set conflict reloads the state and runs the handler again."""
        store, key = self.store, inp.key
        if store is None:  # never: only called with a store
            raise RuntimeError("stateful call without a state store")
        seq = stream_seq_of(inp.msg)
        msg_id = inp.headers.get(Hdr.MSG_ID)
        for attempt in range(_MAX_CONFLICTS):
            if attempt > 1:
                # Two writers on one key that keep colliding: a random pause lets one
                # of them through (writers on one key are a misconfiguration anyway).
                await asyncio.sleep(random.uniform(0, 0.002 * attempt))  # noqa: S311
            slot = self._slots[key]
            if slot.contains(seq) or store.recent.copy_of_applied(msg_id, key, seq):
                self.skipped += 1
                slot.acked.append(seq)  # acked next, before this key's next commit
                return _SKIPPED
            result = await self._call(inp, instance)
            raw = store.changed(slot, getattr(instance, STATE_ATTR))
            if raw is not None:
                try:
                    await store.commit(key, slot, raw, [seq])
                except StateConflict:
                    instance = await self._reload(key, instance)
                    inp.actor = instance
                    continue
            slot.acked.append(seq)
            store.recent.remember(msg_id, key, seq)
            return result
        raise StateConflict(store.bucket, key, expected=self._slots[key].revision)

    async def _reload(self, key: str, instance: Actor) -> Actor:
        """The state as committed now, into the live instance."""
        store = self.store
        if store is None:
            return instance
        state, self._slots[key] = await store.load(key)
        setattr(instance, STATE_ATTR, state)
        return instance

    # -- outcomes -----------------------------------------------------------------------

    def report(self, outcome: Outcome, inp: MessageInput | None, seconds: float) -> None:
        if self._outcomes:
            report_outcome(self._outcomes, self._w, outcome, inp, seconds, self._failing)

    def report_raw(self, outcome: Outcome, msg: Msg) -> None:
        """Report an outcome known only from the delivered message."""
        if self._outcomes:
            key = self.key_of(msg)
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
        return self.subject_of(self.key_of(msg), msg) if self._partitioned else msg.subject

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
        seq = stream_seq_of(msg)
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
            # A message published without an id is known by its stream sequence.
            origin=headers.get(Hdr.MSG_ID) or f"seq{seq}",
            seq=seq,
        )

    async def already_applied(self, key: str, msg: Msg) -> bool:
        """Whether `msg`'s effect is in `key`'s durable state (False without state)."""
        store = self.store
        if store is None:
            return False
        slot = self._slots.get(key)
        if slot is None:
            _, slot = await store.load(key)
        seq = stream_seq_of(msg)
        msg_id = (msg.headers or {}).get(Hdr.MSG_ID)
        return slot.contains(seq) or bool(store.recent.copy_of_applied(msg_id, key, seq))

    async def fresh_instance(self, key: str) -> Actor:
        """A new instance for `key`, with its committed state loaded (no hook run)."""
        instance = self._w.spec.cls()
        instance.key = key
        if self.store is not None:
            await self._reload(key, instance)
        return instance

    async def _new_instance(self, key: str) -> Actor:
        instance = await self.fresh_instance(key)
        await instance.on_start()
        self.instances[key] = instance
        if self._touch is not None:
            self._touch(key)
            await self.passivator.admitted()
        return instance

    async def start_state(self) -> None:
        """Bind the state bucket (an actor that declares `state`) and keep its ack floor."""
        w = self._w
        state_type = w.spec.state_type
        if state_type is None:
            return
        subjects = w.mesh.subjects
        self.store = StateStore(
            w.mesh,
            actor_type=self._actor_type,
            state_type=state_type,
            mailbox=w.spec.mailbox,
            stream=subjects.mailbox_stream(self._actor_type),
            durable=subjects.consumer(self._actor_type, w.partition),
        )
        await self.store.ensure()
        w._dispatcher.spawn(self.store.floor_loop(), "state-floor")

    async def passivate(self, key: str) -> None:
        """Stop and drop a live instance; its committed state stays in the bucket."""
        instance = self.instances.pop(key, None)
        self._slots.pop(key, None)
        self.passivator.forget(key)
        if instance is None:
            return
        self._w.passivated += 1
        await self.stop_instance(key, instance)

    def drop(self, key: str) -> Actor | None:
        """Forget a live instance (supervision replaces or stops it)."""
        self._slots.pop(key, None)
        self.passivator.forget(key)
        return self.instances.pop(key, None)

    async def stop_instance(self, key: str, instance: Actor) -> None:
        try:
            await instance.on_stop()
        except Exception:
            log.exception("on_stop of %s/%s failed", self._actor_type, key)

    async def stop_all(self) -> None:
        for key, instance in list(self.instances.items()):
            await self.stop_instance(key, instance)
        self.instances.clear()
        self._slots.clear()


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


#: What `_call_stateful` returns for a message already applied.
_SKIPPED: Any = object()
#: Compare-and-set conflicts in a row before the message counts as failed.
_MAX_CONFLICTS = 32


def _expired(deadline: str) -> bool:
    try:
        return time.time() * 1000 > int(deadline)
    except ValueError:
        return False
