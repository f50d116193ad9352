"""Approvals: tool calls that wait for an operator's yes or no.

A tool declared `@tool(needs_approval=True)`, or a grant whose `approval`
patterns match the tool, makes every call wait. The callee's worker, when such
a message arrives, stores a pending `Approval` in a KV bucket
(`<prefix>_approvals`) and hands the message back to the mailbox with a delay
(a nak), without running it. Each redelivery reads the record again: approved,
the call runs; rejected, the asker gets `ToolRejected` (a tell is
dead-lettered); still pending, it is handed back again. Everything lives in
JetStream (the message in the mailbox, the record in KV), so a pending approval
survives restarts of every process, and the call's deadline still applies: the
worker's deadline check comes first on every delivery, so a call whose deadline
passes while it waits is never run and its caller gets `ToolTimeout`.

The record's id is the mailbox stream sequence (`<actor_type>.<seq>`): every
redelivery of the message finds the same record. Handing a message back counts
as a delivery on the broker; the worker, which decides the last delivery,
treats a message held for approval as never exhausted (`holding`).
"""

from __future__ import annotations

import builtins
import contextlib
import hashlib
import logging
import time
from typing import TYPE_CHECKING, Literal

import msgspec
import nats.js.errors
from nats.aio.msg import Msg
from nats.js.api import KeyValueConfig

from .._buckets import bucket_replication, key_value
from .._errors import ActorMeshError, ToolRejected
from .._state import kv_key
from .._subjects import stream_seq_of
from .._wire import Hdr

if TYPE_CHECKING:
    from nats.js.kv import KeyValue

    from .._interceptor import MessageInput
    from .._mesh import Mesh
    from .._worker._facade import Worker
    from ._declare import ToolSpec

__all__ = [
    "APPROVAL_POLL",
    "Approval",
    "ApprovalError",
    "ApprovalState",
    "Approvals",
    "Gate",
    "approval_id",
    "gate",
    "needs_approval",
]

log = logging.getLogger("actormesh.tools")

#: pending until an operator decides; expired once the call's deadline passed first.
ApprovalState = Literal["pending", "approved", "rejected", "expired"]
#: What the worker does with a message to a tool: run it now, or it was settled
#: here (handed back to wait, or answered with the rejection).
Gate = Literal["run", "settled"]

#: Seconds between looks at a pending record (each is one redelivery and one read).
APPROVAL_POLL = 0.5
#: Seconds a record is kept after it was last written: decided ones stay this long
#: for the record; a call still pending after this long gets a fresh record.
RETENTION = 7 * 24 * 3600.0
#: The arguments shown to the operator are cut to this many characters.
PREVIEW_CHARS = 2000


class Approval(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """One call waiting for (or decided by) an operator, as the bucket holds it."""

    id: str
    tool: str
    principal: str
    actor_type: str
    key: str
    #: The call's arguments as JSON, cut to `PREVIEW_CHARS`.
    arguments: str
    #: Unix time (seconds) after which the call is not run; None: no deadline (a tell).
    deadline: float | None
    created: float
    state: ApprovalState = "pending"
    decided_by: str = ""
    decided_at: float = 0.0
    reason: str = ""
    #: What the call is (tool, principal, deadline, payload), hashed: a record left
    #: from a deleted and recreated mailbox stream never approves another call.
    digest: str = ""

    def effective_state(self, now: float | None = None) -> ApprovalState:
        """`state`, with a pending call past its deadline shown as expired."""
        now = time.time() if now is None else now
        if self.state == "pending" and self.deadline is not None and now > self.deadline:
            return "expired"
        return self.state


class ApprovalError(ActorMeshError):
    """An approval that cannot be decided: unknown, already decided, or expired."""

    code = "approval_error"

    def __init__(self, message: str, *, approval_id: str, state: str = "") -> None:
        super().__init__(message)
        self.approval_id = approval_id
        self.state = state


_decoder = msgspec.json.Decoder(Approval)
_encoder = msgspec.json.Encoder()


def approval_id(actor_type: str, msg: Msg) -> str:
    """The record id of a mailbox message: the same for every redelivery."""
    seq = stream_seq_of(msg)
    if seq:
        return f"{kv_key(actor_type)}.{seq}"
    # Not from a stream (never for a worker's mailbox): the sender's message id.
    msg_id = (msg.headers or {}).get(Hdr.MSG_ID, "")
    return f"{kv_key(actor_type)}.m{hashlib.sha256(msg_id.encode()).hexdigest()[:24]}"


class Approvals:
    """The approvals bucket (`mesh.tools.approvals`): list, approve, reject."""

    def __init__(self, mesh: Mesh) -> None:
        self._mesh = mesh
        self.bucket = f"{mesh.subjects.prefix}_approvals"
        self.poll = APPROVAL_POLL
        self._kv: KeyValue | None = None

    async def kv(self) -> KeyValue:
        if self._kv is None:
            config = KeyValueConfig(
                bucket=self.bucket,
                history=1,
                ttl=RETENTION,
                description="actormesh: tool approvals",
                **bucket_replication(self._mesh),
            )
            self._kv = await key_value(self._mesh.js, config)
        return self._kv

    # -- reading ------------------------------------------------------------------------

    async def get(self, approval_id: str) -> Approval | None:
        kv = await self.kv()
        try:
            entry = await kv.get(approval_id)
        except (nats.js.errors.KeyNotFoundError, nats.js.errors.InvalidKeyError):
            return None
        if not entry.value:
            return None
        try:
            return _decoder.decode(entry.value)
        except (msgspec.DecodeError, msgspec.ValidationError):
            log.warning("approval %s is unreadable; ignoring it", approval_id)
            return None

    async def list(self, *, state: ApprovalState | None = None) -> list[Approval]:
        """Every approval (or those in `state`, counting expiry), oldest first."""
        kv = await self.kv()
        try:
            keys = await kv.keys()
        except nats.js.errors.NoKeysError:
            return []
        now = time.time()
        found = []
        for key in keys:
            approval = await self.get(key)
            if approval is not None and (state is None or approval.effective_state(now) == state):
                found.append(approval)
        return sorted(found, key=lambda a: (a.created, a.id))

    async def pending(self) -> builtins.list[Approval]:
        return await self.list(state="pending")

    # -- deciding -----------------------------------------------------------------------

    async def approve(self, approval_id: str, *, by: str, reason: str = "") -> Approval:
        """Let the call run (at its next delivery, within `poll` seconds)."""
        return await self._decide(approval_id, "approved", by, reason)

    async def reject(self, approval_id: str, *, by: str, reason: str = "") -> Approval:
        """Refuse the call: its caller gets `ToolRejected`; it never runs."""
        return await self._decide(approval_id, "rejected", by, reason)

    async def _decide(
        self, approval_id: str, state: ApprovalState, by: str, reason: str
    ) -> Approval:
        kv = await self.kv()
        for _ in range(10):  # compare-and-set: two operators, one decision
            try:
                entry = await kv.get(approval_id)
            except (nats.js.errors.KeyNotFoundError, nats.js.errors.InvalidKeyError):
                raise ApprovalError(
                    f"no approval {approval_id!r}", approval_id=approval_id
                ) from None
            current = _decoder.decode(entry.value or b"")
            now = time.time()
            if current.effective_state(now) != "pending":
                raise ApprovalError(
                    f"approval {approval_id!r} is {current.effective_state(now)}, not pending",
                    approval_id=approval_id,
                    state=current.effective_state(now),
                )
            decided = msgspec.structs.replace(
                current, state=state, decided_by=by, decided_at=now, reason=reason[:500]
            )
            try:
                await kv.update(approval_id, _encoder.encode(decided), last=entry.revision)
            except nats.js.errors.KeyWrongLastSequenceError:
                continue
            log.info("approval %s (%s) %s by %s", approval_id, current.tool, state, by)
            return decided
        raise ApprovalError(f"approval {approval_id!r} kept changing", approval_id=approval_id)

    # -- the worker's side --------------------------------------------------------------

    async def open(self, record: Approval) -> Approval:
        """Store `record` unless a redelivery stored it first; returns what is stored."""
        kv = await self.kv()
        try:
            await kv.create(record.id, _encoder.encode(record))
        except nats.js.errors.KeyWrongLastSequenceError:
            existing = await self.get(record.id)
            if existing is not None:
                return existing
            await kv.put(record.id, _encoder.encode(record))
        return record

    async def discard(self, approval_id: str) -> None:
        kv = await self.kv()
        with contextlib.suppress(nats.js.errors.KeyNotFoundError):
            await kv.purge(approval_id)

    async def holding(self, actor_type: str, msg: Msg) -> bool:
        """Whether `msg` waits for (or was given) an approval: its deliveries were
        spent waiting, so reaching `max_deliver` does not exhaust it."""
        with contextlib.suppress(nats.js.errors.Error):
            return await self.get(approval_id(actor_type, msg)) is not None
        return False


def _deadline_of(headers: dict[str, str]) -> float | None:
    raw = headers.get(Hdr.DEADLINE)
    try:
        return int(raw) / 1000 if raw is not None else None
    except ValueError:
        return None


def _digest(tool: str, principal: str, headers: dict[str, str], data: bytes) -> str:
    h = hashlib.sha256()
    for part in (tool, principal, headers.get(Hdr.DEADLINE, ""), headers.get(Hdr.MSG_ID, "")):
        h.update(part.encode() + b"\0")
    h.update(data)
    return h.hexdigest()[:32]


def _preview(data: bytes) -> str:
    text = data.decode("utf-8", errors="replace")
    return text if len(text) <= PREVIEW_CHARS else text[:PREVIEW_CHARS] + "…"


async def needs_approval(w: Worker, spec: ToolSpec, headers: dict[str, str]) -> bool:
    """Whether a call to `spec` waits for an operator: the tool says so, or the
    caller's grant does (from the worker's live copy of the grants)."""
    if spec.needs_approval:
        return True
    return await w.mesh.tools.grants.needs_approval(headers.get(Hdr.PRINCIPAL, ""), spec.name)


async def gate(w: Worker, inp: MessageInput, spec: ToolSpec) -> Gate:
    """For a message to tool `spec` that needs approval (admitted by its grant): run
    it, or wait for an operator (the message handed back), or answer a rejection."""
    approvals = w.mesh.tools.approvals
    principal = inp.headers.get(Hdr.PRINCIPAL, "")
    rid = approval_id(w.actor_type, inp.msg)
    digest = _digest(spec.name, principal, inp.headers, inp.msg.data)
    record = await approvals.get(rid)
    if record is not None and record.digest != digest:
        record = None  # another message under a reused sequence: a stale record
        await approvals.discard(rid)
    if record is None:
        record = await approvals.open(
            Approval(
                id=rid,
                tool=spec.name,
                principal=principal,
                actor_type=w.actor_type,
                key=inp.key,
                arguments=_preview(inp.msg.data),
                deadline=_deadline_of(inp.headers),
                created=time.time(),
                digest=digest,
            )
        )
        log.info("%s: call %s by %r waits for approval %s", w.actor_type, spec.name, principal, rid)
    if record.state == "approved":
        return "run"
    if record.state == "pending":
        await w._settler.nak(inp.msg, _wait(approvals.poll, record.deadline))
        return "settled"
    await _refuse(w, inp, record)
    return "settled"


def _wait(poll: float, deadline: float | None) -> float:
    """Until the next look: `poll`, or just past the deadline if that comes first
    (the expired call is then settled as any expired ask)."""
    if deadline is None:
        return poll
    return max(0.01, min(poll, deadline - time.time() + 0.01))


async def _refuse(w: Worker, inp: MessageInput, record: Approval) -> None:
    rejected = ToolRejected(record.tool, record.reason or f"by {record.decided_by or 'operator'}")
    if inp.reply_to:
        await w._replies.error(inp.reply_to, rejected, status="403")
        await w._settler.ack(inp.msg)
        return
    await w._failures.dead_letter(
        inp.msg, code=rejected.code, type_="ToolRejected", message=rejected.message
    )
