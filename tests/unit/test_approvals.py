"""The approval store's pure parts: ids stable across redeliveries, expiry, the
wait between looks, and the arguments preview."""

from __future__ import annotations

import time

import msgspec
import pytest
from nats.aio.msg import Msg

from actormesh._tools import Approval
from actormesh._tools._approvals import PREVIEW_CHARS, _preview, _wait, approval_id


def _msg(delivered: int, seq: int = 42, headers: dict[str, str] | None = None) -> Msg:
    reply = f"$JS.ACK.AM_MBOX_SAFE.safe.{delivered}.{seq}.{delivered}.1700000000000000000.0"
    return Msg(_client=None, subject="am.mbox.safe", reply=reply, data=b"{}", headers=headers)  # type: ignore[arg-type]


def _approval(**fields: object) -> Approval:
    base: dict[str, object] = {
        "id": "safe.1", "tool": "safe.open", "principal": "ops", "actor_type": "safe",
        "key": "_", "arguments": "{}", "deadline": None, "created": 1.0,
    }  # fmt: skip
    return msgspec.convert({**base, **fields}, Approval)


def test_every_redelivery_finds_the_same_record() -> None:
    assert approval_id("safe", _msg(1)) == approval_id("safe", _msg(7)) == "safe.42"
    assert approval_id("safe", _msg(1, seq=43)) != approval_id("safe", _msg(1))


def test_without_a_stream_sequence_the_message_id_names_it() -> None:
    a = Msg(_client=None, subject="x", headers={"Nats-Msg-Id": "m-1"})  # type: ignore[arg-type]
    b = Msg(_client=None, subject="x", headers={"Nats-Msg-Id": "m-1"})  # type: ignore[arg-type]
    assert approval_id("safe", a) == approval_id("safe", b)
    assert approval_id("safe", a).startswith("safe.m")


def test_a_pending_approval_past_its_deadline_is_expired() -> None:
    now = time.time()
    assert _approval(deadline=now + 60).effective_state(now) == "pending"
    assert _approval(deadline=now - 1).effective_state(now) == "expired"
    assert _approval(deadline=None).effective_state(now) == "pending"
    decided = _approval(deadline=now - 1, state="approved")
    assert decided.effective_state(now) == "approved"


def test_the_wait_never_passes_the_deadline() -> None:
    assert _wait(0.5, None) == 0.5
    assert _wait(0.5, time.time() + 60) == 0.5
    assert _wait(0.5, time.time() + 0.1) <= 0.12
    assert _wait(0.5, time.time() - 5) == pytest.approx(0.01)


def test_the_wire_form_is_strict_and_round_trips() -> None:
    record = _approval(deadline=123.5, state="rejected", decided_by="op", reason="no")
    raw = msgspec.json.encode(record)
    assert msgspec.json.decode(raw, type=Approval) == record
    with pytest.raises(msgspec.ValidationError):
        msgspec.json.decode(raw[:-1] + b',"extra":1}', type=Approval)
    with pytest.raises(msgspec.ValidationError):
        msgspec.json.decode(raw.replace(b"rejected", b"maybe"), type=Approval)


def test_the_preview_is_cut() -> None:
    assert _preview(b'{"door":"a"}') == '{"door":"a"}'
    assert len(_preview(b"x" * (PREVIEW_CHARS * 2))) == PREVIEW_CHARS + 1
    assert _preview(b"\xff") == "\ufffd"
