"""The dead-letter stream: list, replay to the mailbox, purge."""

from __future__ import annotations

import contextlib
import time
from typing import Any

import nats.js.errors
from nats.js.api import RawStreamMsg

from ._errors import ActorMeshError
from ._mesh import Mesh, Receipt
from ._wire import DeadLetterInfo, Hdr

__all__ = ["DeadLetterNotFound", "DeadLetters"]


class DeadLetterNotFound(ActorMeshError):
    """No dead letter has this sequence (never stored, replayed, purged or aged out)."""

    code = "dead_letter_not_found"

    def __init__(self, seq: int, *, stream: str) -> None:
        super().__init__(f"no dead letter #{seq} in stream {stream}")
        self.seq = seq
        self.stream = stream

    def fields(self) -> dict[str, Any]:
        return {**super().fields(), "seq": self.seq, "stream": self.stream}


class DeadLetters:
    """Dead letters of one mesh, by actor type."""

    def __init__(self, mesh: Mesh) -> None:
        self.mesh = mesh
        self.stream = mesh.subjects.dlq_stream

    async def list(
        self, actor_type: str | None = None, *, limit: int = 100
    ) -> list[DeadLetterInfo]:
        """The newest dead letters (up to `limit`), oldest first."""
        subject = (
            self.mesh.subjects.dlq(actor_type)
            if actor_type
            else f"{self.mesh.subjects.prefix}.dlq.>"
        )
        js = self.mesh.js
        try:
            info = await js.stream_info(self.stream)
        except nats.js.errors.NotFoundError:
            return []
        if info.state.messages == 0:
            return []
        start = max(info.state.first_seq, info.state.last_seq - 5 * limit)
        out: list[DeadLetterInfo] = []
        seq = start
        while seq <= info.state.last_seq:
            try:
                raw = await js.get_msg(self.stream, seq=seq, next=True, subject=subject)
            except nats.js.errors.NotFoundError:
                break
            if raw.seq is None:
                break
            out.append(_info(raw.seq, raw.subject or "", raw.headers or {}, raw.data or b""))
            seq = raw.seq + 1
        return out[-limit:]

    async def _raw(self, seq: int) -> RawStreamMsg:
        if seq < 1:
            # Stream sequences start at 1; the server answers 0 or less with a bad request.
            raise DeadLetterNotFound(seq, stream=self.stream)
        try:
            return await self.mesh.js.get_msg(self.stream, seq=seq)
        except nats.js.errors.NotFoundError:
            raise DeadLetterNotFound(seq, stream=self.stream) from None

    async def get(self, seq: int) -> DeadLetterInfo:
        """One dead letter; `DeadLetterNotFound` when there is none with `seq`."""
        raw = await self._raw(seq)
        return _info(seq, raw.subject or "", raw.headers or {}, raw.data or b"")

    async def replay(self, seq: int) -> Receipt:
        """Send a dead letter back to its mailbox (new delivery count), then remove it.

        `DeadLetterNotFound` when there is none with `seq`.
        """
        raw = await self._raw(seq)
        headers = {
            k: v
            for k, v in (raw.headers or {}).items()
            if not k.startswith("Am-") and not k.startswith("Nats-")
        }
        original = (raw.headers or {}).get(Hdr.ORIGINAL_SUBJECT)
        if not original:
            raise ActorMeshError(f"dead letter {seq} has no {Hdr.ORIGINAL_SUBJECT} header")
        # A fresh id: the original's may still be inside the mailbox's duplicate window.
        headers[Hdr.MSG_ID] = f"replay-{seq}-{int(time.time() * 1000)}"
        receipt = await self.mesh.publish(original, raw.data or b"", headers=headers)
        with contextlib.suppress(nats.js.errors.NotFoundError):
            await self.mesh.js.delete_msg(self.stream, seq)
        return receipt

    async def purge(self, actor_type: str | None = None) -> int:
        """Delete dead letters (of one type, or all); returns how many went."""
        js = self.mesh.js
        try:
            before = (await js.stream_info(self.stream)).state.messages
        except nats.js.errors.NotFoundError:
            return 0
        if actor_type:
            await js.purge_stream(self.stream, subject=self.mesh.subjects.dlq(actor_type))
        else:
            await js.purge_stream(self.stream)
        after = (await js.stream_info(self.stream)).state.messages
        return before - after


def _info(seq: int, subject: str, headers: dict[str, str], data: bytes) -> DeadLetterInfo:
    def num(name: str, conv: type[int] | type[float]) -> float:
        try:
            return conv(headers.get(name, "0"))
        except ValueError:
            return 0

    return DeadLetterInfo(
        seq=seq,
        actor_type=subject.rsplit(".", 1)[-1],
        subject=subject,
        original_subject=headers.get(Hdr.ORIGINAL_SUBJECT, ""),
        error_code=headers.get(Hdr.ERROR_CODE, ""),
        error_type=headers.get(Hdr.ERROR_TYPE, ""),
        error_message=headers.get(Hdr.ERROR_MESSAGE, ""),
        deliveries=int(num(Hdr.DELIVERIES, int)),
        worker=headers.get(Hdr.WORKER, ""),
        dead_at=float(num(Hdr.DEAD_AT, float)),
        payload=data.decode("utf-8", errors="replace"),
        headers=dict(headers),
    )
