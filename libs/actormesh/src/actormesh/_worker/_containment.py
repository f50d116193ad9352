"""Containment: a failing message is a matter for its key, not for the process.

The rule (`SupervisionPolicy` holds the numbers):

- Redeliveries of one message count once: failures are counted by the message's
  mailbox stream sequence.
- Intensity is counted per key: a key with more than `max_restarts` distinct
  failing messages within `within` seconds is *parked*. Its messages, including
  those that arrive later, are moved to the actor type's parked stream
  (`on_intensity = "park"`) or dead-lettered (`"dead_letter"`) until the key is
  released: by `release_parked` (any process), or by its worker after
  `park_for` seconds. Asks to a parked key are answered with a `key_parked`
  error and dead-lettered: the asker knows at once, and nothing runs later
  behind its back.
- A keyless actor has one key (`_`), so each failing message counts as a key of
  its own; a poison message is dead-lettered after `max_deliver` deliveries.
- The worker escalates only when the process is failing: more than
  `max_failing_keys` distinct keys (keyless: messages) failing within `within`,
  activation (`on_start`) failing for `max_failed_starts` distinct keys in a row
  with no message handled between them, more than `MAX_PARKED` keys parked, or
  an error of supervision itself.

A parked copy is stored (deduplicated by the mailbox sequence) before the
original is acked; a released message is stored back in the mailbox (deduplicated
by the parked sequence) before the parked copy is deleted: nothing is lost, and a
crash between the steps leaves at most a copy the broker drops as a duplicate.
A released key takes new messages at once, so those may run before the released
ones; the failing message itself rejoins its parked key's messages when it is
redelivered, behind those parked meanwhile.

The bookkeeping is bounded: a key's window is freed when it empties, at most
`max_failing_keys + 1` windows exist before the worker escalates, and at most
`MAX_PARKED` keys are parked. A worker without parked keys runs no extra step per
message: the parking interceptor is only installed while a key is parked.

Over 500 lines because the rule, the parked stream and the release protocol are
one concept whose steps must agree on the same ids and order; split, each part
would need the others' invariants restated.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from typing import TYPE_CHECKING, Any

import msgspec
import nats.js.errors
from nats.js.api import DiscardPolicy, RetentionPolicy, StorageType, StreamConfig

from .._config import MAX_TRACKED_KEYS, MailboxConfig
from .._errors import ActorMeshError
from .._interceptor import HandleMessage, MessageInput, WorkerInterceptor
from .._mailbox import _ensure_stream, placement
from .._subjects import Subjects, stream_seq_of
from .._wire import Hdr

if TYPE_CHECKING:
    from nats.aio.msg import Msg

    from .._mesh import Mesh
    from ._facade import Worker

__all__ = [
    "MAX_PARKED",
    "Containment",
    "KeyParked",
    "list_parked",
    "parked_stream",
    "parked_subject",
    "release_parked",
    "release_subject",
]

log = logging.getLogger("actormesh.worker")

#: More parked keys than this in one worker: the process, not its keys, is failing.
MAX_PARKED = MAX_TRACKED_KEYS
#: Headers of a parked copy: when its key was parked, and the deliveries it had.
PARKED_AT = "Am-Parked-At"
PRIOR_DELIVERIES = "Am-Prior-Deliveries"
#: Header of a released message: when it was released (unparks its key on arrival).
RELEASED_AT = "Am-Released-At"

_encoder = msgspec.json.Encoder()


class _Release(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """The body of a release notice: one key, or every parked key when empty."""

    key: str = ""


class _Released(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """A worker's answer to a release notice."""

    worker: str
    keys: list[str]


_release_decoder = msgspec.json.Decoder(_Release)
_released_decoder = msgspec.json.Decoder(_Released)


class KeyParked(ActorMeshError):
    """The actor key failed past its restart intensity and is parked until released."""

    code = "key_parked"
    retryable = True

    def __init__(self, actor_type: str, key: str) -> None:
        super().__init__(
            f"{actor_type}/{key} is parked after failing past its restart intensity: "
            "release it (actormesh.lowlevel.release_parked) once the cause is fixed"
        )
        self.actor_type = actor_type
        self.key = key

    def fields(self) -> dict[str, Any]:
        return {**super().fields(), "actor_type": self.actor_type, "key": self.key}


class _Settled(Exception):
    """Returned (never raised) by the parking step: the message is settled, no ack."""


_SETTLED = _Settled("settled by containment")


def parked_stream(subjects: Subjects, actor_type: str) -> str:
    return f"{subjects.prefix}_PARKED_{actor_type}".upper().replace("-", "_")


def parked_subject(subjects: Subjects, actor_type: str, key: str = "*") -> str:
    return f"{subjects.prefix}.parked.{actor_type}.{key}"


def release_subject(subjects: Subjects, actor_type: str) -> str:
    return f"{subjects.prefix}.sys.release.{actor_type}"


def parked_stream_config(subjects: Subjects, actor_type: str, cfg: MailboxConfig) -> StreamConfig:
    """Follows the mailbox's bounds, storage and replicas; refuses (never drops) when full."""
    return StreamConfig(
        name=parked_stream(subjects, actor_type),
        description=f"actormesh parked messages of {actor_type}",
        subjects=[parked_subject(subjects, actor_type)],
        retention=RetentionPolicy.LIMITS,
        discard=DiscardPolicy.NEW,
        max_msgs=cfg.max_msgs,
        max_bytes=cfg.max_bytes,
        max_msg_size=-1,
        storage=StorageType.FILE if cfg.storage == "file" else StorageType.MEMORY,
        num_replicas=cfg.replicas or 1,
        placement=placement(cfg.placement_tags),
        duplicate_window=cfg.duplicate_window,
    )


Escalation = tuple[str, dict[str, str]]


class Containment:
    """One worker's failure windows per key, its parked keys, and their release."""

    def __init__(self, worker: Worker) -> None:
        self._w = worker
        self._policy = worker.spec.supervision
        self._keyed = not worker.spec.keyless
        subjects = worker.mesh.subjects
        self._stream = parked_stream(subjects, worker.actor_type)
        self._mailbox_stream = subjects.mailbox_stream(worker.actor_type)
        #: Every counted failure in time order: (monotonic time, unit, seq).
        self._log: deque[tuple[float, str, int]] = deque()
        #: A unit (a key, or a keyless message) to its counted failures in `within`.
        self._windows: dict[str, deque[tuple[float, str, int]]] = {}
        self._failed_starts: set[str] = set()
        self._handled_mark = -1
        self._unknown = 0
        #: Parked keys, to when (unix time) they were parked.
        self.parked: dict[str, float] = {}
        self._interceptor = _Parking(self)
        self._sub: Any = None
        self._sweeper: asyncio.Task[Any] | None = None

    # -- lifecycle ----------------------------------------------------------------------

    async def start(self) -> None:
        """Keyed actors: the parked stream, the keys a previous worker left parked,
        and the release notices."""
        if not self._keyed:
            return
        w = self._w
        subjects = w.mesh.subjects
        await _ensure_stream(
            w.mesh.js,
            parked_stream_config(subjects, w.actor_type, w.spec.mailbox),
            update=w.config.update_mailbox,
        )
        await self._restore()
        self._sub = await w.mesh.nc.subscribe(
            release_subject(subjects, w.actor_type), cb=self._on_release
        )

    async def stop(self) -> None:
        if self._sub is not None:
            with contextlib.suppress(Exception):
                await self._sub.unsubscribe()
            self._sub = None

    async def _restore(self) -> None:
        w = self._w
        js = w.mesh.js
        filt = parked_subject(w.mesh.subjects, w.actor_type)
        info = await js.stream_info(self._stream, subjects_filter=filt)
        for subject in list(info.state.subjects or {})[:MAX_PARKED]:
            key = subject.rsplit(".", 1)[-1]
            try:
                raw = await js.get_msg(self._stream, seq=1, next=True, subject=subject)
                at = float((raw.headers or {}).get(PARKED_AT, "0") or 0)
            except (nats.js.errors.NotFoundError, ValueError):
                at = 0.0
            self._park_key(key, at or time.time())
        if self.parked:
            log.warning("%s: %d keys still parked: %s", w.id, len(self.parked), sorted(self.parked))

    # -- counting failures --------------------------------------------------------------

    async def failed(self, key: str, msg: Msg | None, *, activated: bool) -> Escalation | None:
        """Count a handler failure of `key`; park the key past its intensity.

        Returns why the worker must escalate, or None."""
        policy = self._policy
        now = time.monotonic()
        self._prune(now)
        seq = stream_seq_of(msg) if msg is not None else 0
        unit = key if self._keyed else self._unit_of(seq)
        window = self._windows.get(unit)
        if window is None:
            if len(self._windows) >= MAX_TRACKED_KEYS:
                return ("failing_keys", {"keys": str(len(self._windows))})
            window = self._windows[unit] = deque()
        if not seq or all(s != seq for _, _, s in window):
            entry = (now, unit, seq)
            window.append(entry)
            self._log.append(entry)
        if len(self._windows) > policy.max_failing_keys:
            return (
                "failing_keys",
                {"keys": str(len(self._windows)), "max_failing_keys": str(policy.max_failing_keys)},
            )
        verdict = self._activation(key, activated)
        if verdict is not None:
            return verdict
        if self._keyed and len(window) > policy.max_restarts and key not in self.parked:
            return await self.park(key, failures=len(window))
        return None

    def _unit_of(self, seq: int) -> str:
        if seq:
            return f"#{seq}"
        # No sequence to tell redeliveries apart: each failure is a message of its own.
        self._unknown += 1
        return f"#?{self._unknown}"

    def _activation(self, key: str, activated: bool) -> Escalation | None:
        if activated:
            self._failed_starts.clear()
            return None
        handled = self._w.handled
        if handled != self._handled_mark:
            # A message was handled since the last failed start: the process can serve.
            self._failed_starts.clear()
            self._handled_mark = handled
        self._failed_starts.add(key)
        limit = self._policy.max_failed_starts
        if len(self._failed_starts) >= limit:
            return ("failed_starts", {"keys": str(len(self._failed_starts)), "limit": str(limit)})
        return None

    def _prune(self, now: float) -> None:
        within, entries, windows = self._policy.within, self._log, self._windows
        while entries and now - entries[0][0] > within:
            entry = entries.popleft()
            window = windows.get(entry[1])
            # `is`: a released key's window may have been dropped and begun again.
            if window and window[0] is entry:
                window.popleft()
                if not window:
                    del windows[entry[1]]

    # -- parking ------------------------------------------------------------------------

    async def park(self, key: str, *, failures: int) -> Escalation | None:
        if len(self.parked) >= MAX_PARKED:
            return ("parked_keys", {"parked": str(len(self.parked))})
        policy = self._policy
        self._park_key(key, time.time())
        log.warning(
            "%s/%s: %d failing messages within %.0fs (intensity %d): key parked (%s)",
            self._w.actor_type,
            key,
            failures,
            policy.within,
            policy.max_restarts,
            policy.on_intensity,
        )
        await self._w._reporter.event(
            "key_parked",
            reason=f"{failures} failing messages within {policy.within:g}s",
            detail={"key": key, "failures": str(failures), "on_intensity": policy.on_intensity},
        )
        return None

    def _park_key(self, key: str, at: float) -> None:
        w = self._w
        first = not self.parked
        self.parked[key] = at
        w.parked = len(self.parked)
        if first:
            w.add_interceptor(self._interceptor)
        if self._sweeper is None or self._sweeper.done():
            self._sweeper = w._dispatcher.spawn(self._sweep(), "park-sweeper")

    async def unpark(self, key: str, *, why: str) -> bool:
        """Take `key` out of the parked keys (its parked messages are not moved here)."""
        w = self._w
        if self.parked.pop(key, None) is None:
            return False
        self._windows.pop(key, None)
        w.parked = len(self.parked)
        if not self.parked:
            w.remove_interceptor(self._interceptor)
        log.info("%s/%s: key released (%s)", w.actor_type, key, why)
        await w._reporter.event("key_released", reason=why, detail={"key": key})
        return True

    async def hold(self, inp: MessageInput) -> BaseException:
        """A message of a parked key: parked, or dead-lettered, then settled."""
        w, policy = self._w, self._policy
        msg, key = inp.msg, inp.key
        prior = _int(inp.headers.get(PRIOR_DELIVERIES)) + inp.deliveries - 1
        if inp.reply_to:
            parked = KeyParked(w.actor_type, key)
            await w._replies.error(inp.reply_to, parked, status="503")
            await w._failures.dead_letter(
                msg, code=parked.code, type_="KeyParked", message=parked.message
            )
            return _SETTLED
        if policy.on_intensity == "dead_letter" or prior >= w.spec.mailbox.max_deliver:
            await w._failures.dead_letter(
                msg,
                code=KeyParked.code,
                type_="KeyParked",
                message=f"{w.actor_type}/{key} is parked ({prior} deliveries so far)",
                deliveries=max(prior, 1),
            )
            return _SETTLED
        await self._store(inp, prior)
        return _SETTLED

    async def _store(self, inp: MessageInput, prior: int) -> None:
        w, msg = self._w, inp.msg
        drop = (Hdr.MSG_ID, Hdr.REPLY_TO, PARKED_AT, RELEASED_AT, PRIOR_DELIVERIES)
        headers = {k: v for k, v in inp.headers.items() if k not in drop}
        headers.update(
            {
                # Parking the same stored message twice (a crash before the ack) is
                # deduplicated by the parked stream.
                Hdr.MSG_ID: f"{self._mailbox_stream}:{stream_seq_of(msg)}",
                Hdr.ORIGINAL_SUBJECT: inp.subject,
                Hdr.WORKER: w.id,
                PARKED_AT: f"{self.parked.get(inp.key, time.time()):.3f}",
                PRIOR_DELIVERIES: str(prior),
            }
        )
        subject = parked_subject(w.mesh.subjects, w.actor_type, inp.key)
        try:
            await w.mesh.publish(subject, msg.data, headers=headers)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            log.error(
                "parking %s/%s failed (%r): it stays in the mailbox", w.actor_type, inp.key, exc
            )
            await w._settler.nak(msg, w.spec.mailbox.redelivery_delay(max(inp.deliveries, 1)))
            return
        await w._settler.ack(msg)

    async def _sweep(self) -> None:
        """Release keys parked for `park_for`: no message is held for good."""
        park_for = self._policy.park_for
        tick = max(0.05, min(park_for / 4, 5.0))
        while self.parked:
            await asyncio.sleep(tick)
            now = time.time()
            for key, at in list(self.parked.items()):
                if now - at >= park_for and await self.unpark(key, why="park_for"):
                    try:
                        await move_parked(self._w.mesh, self._w.actor_type, key)
                    except asyncio.CancelledError:
                        raise
                    except Exception as exc:
                        # Kept in the parked stream; the next worker start restores the key.
                        log.warning("releasing %s failed: %r", key, exc)
                        self._park_key(key, now)

    async def _on_release(self, msg: Msg) -> None:
        try:
            req = _release_decoder.decode(msg.data)
        except (msgspec.DecodeError, msgspec.ValidationError):
            return
        keys = [req.key] if req.key else list(self.parked)
        released = [k for k in keys if await self.unpark(k, why="released")]
        if msg.reply:
            with contextlib.suppress(Exception):
                await msg.respond(_encoder.encode(_Released(worker=self._w.id, keys=released)))


class _Parking(WorkerInterceptor):
    """Installed while keys are parked: their messages are held, not handled."""

    def __init__(self, containment: Containment) -> None:
        self._c = containment

    def intercept_message(self, next: HandleMessage) -> HandleMessage:
        c = self._c

        async def step(inp: MessageInput) -> BaseException | None:
            at = c.parked.get(inp.key)
            if at is None:
                return await next(inp)
            released = _float(inp.headers.get(RELEASED_AT))
            if released >= at:
                # Released after its key was parked: someone released the key.
                await c.unpark(inp.key, why="released")
                return await next(inp)
            return await c.hold(inp)

        return step


# -- release, from any process ------------------------------------------------------------


async def move_parked(mesh: Mesh, actor_type: str, key: str | None = None) -> int:
    """Store a parked key's (or every key's) messages back in the mailbox, in order."""
    js, subjects = mesh.js, mesh.subjects
    stream = parked_stream(subjects, actor_type)
    subject = parked_subject(subjects, actor_type, key or "*")
    moved, seq = 0, 1
    released_at = f"{time.time():.3f}"
    while True:
        try:
            raw = await js.get_msg(stream, seq=seq, next=True, subject=subject)
        except nats.js.errors.NotFoundError:
            return moved
        if raw.seq is None:
            return moved
        headers = {k: v for k, v in (raw.headers or {}).items() if not k.startswith("Nats-")}
        original = headers.pop(Hdr.ORIGINAL_SUBJECT, "") or subjects.mailbox(
            actor_type, (raw.subject or "").rsplit(".", 1)[-1]
        )
        for name in (Hdr.WORKER, PARKED_AT):
            headers.pop(name, None)
        headers[RELEASED_AT] = released_at
        # Moving it twice (a crash before the delete, two releasers) is deduplicated
        # by the mailbox.
        headers[Hdr.MSG_ID] = f"released:{stream}:{raw.seq}"
        await mesh.publish(original, raw.data or b"", headers=headers)
        with contextlib.suppress(nats.js.errors.NotFoundError):
            await js.delete_msg(stream, raw.seq)
        moved += 1
        seq = raw.seq + 1


async def list_parked(mesh: Mesh, actor_type: str) -> dict[str, int]:
    """The parked keys of `actor_type` (none when no worker ever parked one),
    each with how many of its messages wait in the parked stream."""
    filt = parked_subject(mesh.subjects, actor_type)
    try:
        info = await mesh.js.stream_info(parked_stream(mesh.subjects, actor_type), filt)
    except nats.js.errors.NotFoundError:
        return {}
    return {s.rsplit(".", 1)[-1]: n for s, n in (info.state.subjects or {}).items()}


async def release_parked(
    mesh: Mesh, actor_type: str, key: str | None = None, *, timeout: float = 1.0
) -> int:
    """Release a parked key (or every parked key of `actor_type`): its workers stop
    parking it, and its parked messages go back to the mailbox, in order.

    Works without a running worker too. Returns how many messages went back.
    """
    nc = mesh.nc
    inbox = nc.new_inbox()
    sub = await nc.subscribe(inbox)
    try:
        await nc.publish(
            release_subject(mesh.subjects, actor_type),
            _encoder.encode(_Release(key=key or "")),
            reply=inbox,
        )
        # The workers' answers, so they stop parking before the messages are back;
        # a worker that answers late still unparks on the first released message.
        wait = timeout
        with contextlib.suppress(TimeoutError):
            while True:
                reply = await sub.next_msg(timeout=wait)
                with contextlib.suppress(msgspec.DecodeError, msgspec.ValidationError):
                    _released_decoder.decode(reply.data)
                wait = min(wait, 0.2)
    finally:
        with contextlib.suppress(Exception):
            await sub.unsubscribe()
    return await move_parked(mesh, actor_type, key)


def _int(value: str | None) -> int:
    try:
        return int(value or 0)
    except ValueError:
        return 0


def _float(value: str | None) -> float:
    try:
        return float(value or 0)
    except ValueError:
        return 0.0
