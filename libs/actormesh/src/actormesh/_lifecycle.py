"""Lifecycle control from outside a worker: pause and resume an actor type, stop
(passivate) one actor instance, list a worker's instances.

Pausing uses JetStream's consumer pause (nats-server 2.11+): the server stops
delivering from the type's durable consumer (every partition's) and keeps the
messages in the mailbox stream, so nothing is lost and nothing is in memory.
Senders keep publishing; a full mailbox is `MailboxFull` as ever. Workers keep
their pulls open (the server answers them with idle heartbeats only), notice the
pause by the server's pause advisory, and report `paused` in their heartbeats.

A pause without `seconds` lasts until resumed: JetStream has no "forever", so it
is a `pause_until` far in the future (`INDEFINITE`); it survives server and
worker restarts because it is part of the consumer's stored config. A pause with
`seconds` ends on its own on the server.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
from collections.abc import Iterable
from typing import TYPE_CHECKING

import msgspec
import nats.errors
import nats.js.errors
from nats.aio.msg import Msg

from ._errors import ActorMeshError, NoSuchActorType
from ._subjects import LEVELS, check_actor_type, check_key
from ._wire import ControlReply, ControlRequest, Heartbeat

if TYPE_CHECKING:
    from ._mesh import Mesh

__all__ = [
    "INDEFINITE",
    "NotPausable",
    "PauseState",
    "WorkerUnreachable",
    "drain_worker",
    "list_instances",
    "parse_until",
    "pause_actor_type",
    "pause_state",
    "passivate_instance",
    "resume_actor_type",
    "type_workers",
]

#: `pause_until` of a pause that lasts until resumed (the server saturates the
#: remaining time at its maximum duration, some 292 years).
INDEFINITE = "9999-12-31T23:59:59Z"
_EPOCH = "1970-01-01T00:00:00Z"
_INDEFINITE_AFTER = 100 * 365 * 86400.0

_encode = msgspec.json.Encoder().encode
_reply = msgspec.json.Decoder(ControlReply)
_heartbeat = msgspec.json.Decoder(Heartbeat)


class PauseState(msgspec.Struct, frozen=True, kw_only=True):
    """Whether an actor type's mailbox consumers are paused."""

    actor_type: str
    #: Any of its consumers (one per partition) is paused.
    paused: bool
    #: Unix time the pause ends by itself; None when not paused or until resumed.
    until: float | None = None
    #: Each consumer's durable name and whether it is paused.
    consumers: dict[str, bool] = {}


class NotPausable(ActorMeshError):
    """The actor type has a mailbox but no consumer yet: no worker started for it."""

    code = "not_pausable"

    def __init__(self, actor_type: str) -> None:
        super().__init__(
            f"actor type {actor_type!r} has no mailbox consumer yet: start a worker for "
            "it once, then pause it"
        )
        self.actor_type = actor_type


class WorkerUnreachable(ActorMeshError):
    """No worker answered a control request in time."""

    code = "worker_unreachable"

    def __init__(self, what: str) -> None:
        super().__init__(what)


async def _consumers(mesh: Mesh, actor_type: str) -> tuple[str, list[str]]:
    """The mailbox stream of `actor_type` and its workers' durable consumers."""
    check_actor_type(actor_type)
    subjects = mesh.subjects
    stream = subjects.mailbox_stream(actor_type)
    try:
        infos = await mesh.js.consumers_info(stream)
    except nats.js.errors.NotFoundError:
        raise NoSuchActorType(actor_type, subject=subjects.mailbox(actor_type, "*")) from None
    base = subjects.consumer(actor_type)
    # Every partition's consumer, or every priority level's (`<type>_high`, ...).
    levels = {subjects.consumer(actor_type, level=lv) for lv in LEVELS}
    names = sorted(
        c.name
        for c in infos
        if c.name in levels
        or (c.name.startswith(base + "_p") and c.name[len(base) + 2 :].isdigit())
    )
    if not names:
        raise NotPausable(actor_type)
    return stream, names


def _rfc3339(at: float) -> str:
    return dt.datetime.fromtimestamp(at, tz=dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def parse_until(text: str | None) -> float | None:
    """A server `pause_until` as Unix time; None for none, the epoch or `INDEFINITE`."""
    if not text or text.startswith("0001-") or text.startswith("1970-"):
        return None
    try:
        at = dt.datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None
    return None if at - _now() > _INDEFINITE_AFTER else at


def _now() -> float:
    return dt.datetime.now(tz=dt.UTC).timestamp()


async def pause_actor_type(
    mesh: Mesh, actor_type: str, *, seconds: float | None = None
) -> PauseState:
    """Pause every mailbox consumer of `actor_type`: until resumed, or for `seconds`."""
    if seconds is not None and seconds <= 0:
        raise ActorMeshError("a pause lasts a positive number of seconds (or until resumed)")
    stream, names = await _consumers(mesh, actor_type)
    until = INDEFINITE if seconds is None else _rfc3339(_now() + seconds)
    for name in names:
        await mesh.js.pause_consumer(stream, name, until)
    return await pause_state(mesh, actor_type)


async def resume_actor_type(mesh: Mesh, actor_type: str) -> PauseState:
    """Resume every mailbox consumer of `actor_type`; waiting messages flow again."""
    stream, names = await _consumers(mesh, actor_type)
    for name in names:
        await mesh.js.pause_consumer(stream, name, _EPOCH)
    return await pause_state(mesh, actor_type)


async def pause_state(mesh: Mesh, actor_type: str) -> PauseState:
    """What the server says about `actor_type`'s consumers now."""
    stream, names = await _consumers(mesh, actor_type)
    consumers: dict[str, bool] = {}
    until: float | None = None
    for name in names:
        info = await mesh.js.consumer_info(stream, name)
        paused = bool(getattr(info, "paused", False))
        consumers[name] = paused
        if paused:
            until = parse_until(info.config.pause_until)
    return PauseState(
        actor_type=actor_type, paused=any(consumers.values()), until=until, consumers=consumers
    )


async def type_workers(mesh: Mesh, actor_type: str, *, window: float = 2.0) -> list[str]:
    """The workers of `actor_type` heard heartbeating within `window` seconds."""
    check_actor_type(actor_type)
    seen: dict[str, str] = {}

    async def on_hb(msg: Msg) -> None:
        with contextlib.suppress(msgspec.DecodeError, msgspec.ValidationError):
            hb = _heartbeat.decode(msg.data)
            seen[hb.worker] = hb.status

    sub = await mesh.nc.subscribe(mesh.subjects.heartbeat(actor_type, "*"), cb=on_hb)
    try:
        await asyncio.sleep(window)
    finally:
        await sub.unsubscribe()
    return sorted(w for w, status in seen.items() if status in ("running", "starting"))


async def _control(
    mesh: Mesh, worker: str, req: ControlRequest, timeout: float, actor_type: str = ""
) -> ControlReply:
    """Ask a worker: under its type first when known (a broker with users lets only
    that type's user answer there), else or then on its id-only control subject."""
    subjects = mesh.subjects
    targets = [subjects.control(worker)]
    if actor_type:
        targets.insert(0, subjects.control_of(actor_type, worker))
    for i, subject in enumerate(targets):
        try:
            msg = await mesh.nc.request(subject, _encode(req), timeout=timeout)
        except nats.errors.NoRespondersError as exc:
            if i + 1 < len(targets):
                continue
            raise WorkerUnreachable(f"worker {worker} did not answer {req.op!r}: {exc!r}") from exc
        except (nats.errors.TimeoutError, TimeoutError) as exc:
            raise WorkerUnreachable(f"worker {worker} did not answer {req.op!r}: {exc!r}") from exc
        return _reply.decode(msg.data)
    raise WorkerUnreachable(f"worker {worker}: no control subject")


async def passivate_instance(
    mesh: Mesh,
    actor_type: str,
    key: str,
    *,
    workers: Iterable[str] | None = None,
    timeout: float = 10.0,
) -> dict[str, ControlReply]:
    """Stop the live instance of `actor_type`/`key` now, wherever it lives.

    Asked of each of the type's workers (`workers`, else those heartbeating);
    the one holding it stops it (`on_stop`), keeps its durable state, and the
    next message to the key activates it again. Returns each worker's reply: an
    `InstanceInfo` with state `passivated` where it was live, none elsewhere, or
    `ok=False` with `busy` when a message of the key kept running or queued.
    """
    check_actor_type(actor_type)
    check_key(key)
    names = list(workers) if workers is not None else await type_workers(mesh, actor_type)
    if not names:
        raise WorkerUnreachable(f"no running worker of {actor_type!r} heartbeats")
    req = ControlRequest(op="passivate", key=key)
    replies = await asyncio.gather(
        *(_control(mesh, w, req, timeout, actor_type) for w in names), return_exceptions=True
    )
    out: dict[str, ControlReply] = {}
    for worker, reply in zip(names, replies, strict=True):
        if isinstance(reply, BaseException):
            if isinstance(reply, asyncio.CancelledError):
                raise reply
            out[worker] = ControlReply(ok=False, op="passivate", error=str(reply))
        else:
            out[worker] = reply
    return out


async def list_instances(
    mesh: Mesh, worker: str, *, actor_type: str = "", timeout: float = 5.0
) -> ControlReply:
    """A worker's live instances, and those it passivated lately, with their state
    (`actor_type`, when known, addresses it under its type)."""
    return await _control(mesh, worker, ControlRequest(op="instances"), timeout, actor_type)


async def drain_worker(
    mesh: Mesh,
    worker: str,
    *,
    grace: float | None = None,
    actor_type: str = "",
    timeout: float = 5.0,
) -> ControlReply:
    """Ask a worker to finish its messages and stop (`grace`: seconds for in-flight
    work). `actor_type` addresses it under its type; left empty, a default worker
    id (`<type>-<host>-<pid>-<hex4>`) names it, and other ids get the id-only
    control subject."""
    if not actor_type:
        parts = worker.rsplit("-", 3)
        if len(parts) == 4 and parts[2].isdigit() and len(parts[3]) == 4:
            with contextlib.suppress(ValueError):
                actor_type = check_actor_type(parts[0])
    req = ControlRequest(op="drain", grace=grace)
    return await _control(mesh, worker, req, timeout, actor_type)
