"""`actormesh._nats.Client` writes and reads headers exactly as nats-py does.

Both directions are compared with nats-py's own code (the base class's
methods), over hand-picked edge cases and a seeded fuzz, so an upgrade of
nats-py that changes either side fails here rather than on the wire.
"""

from __future__ import annotations

import importlib.metadata
import inspect
import random
from typing import Any

import pytest
from nats.aio.client import Client as NatsClient
from nats.errors import BadHeaderError, BadSubjectError, ConnectionClosedError
from packaging.requirements import Requirement

from actormesh import _nats
from actormesh._nats import (
    OVERRIDES,
    Client,
    NatsOverridesDisabled,
    NotCommon,
    check_overrides,
    parse_header_block,
)
from tests.unit._buffer import buffering

TRACEPARENT = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"


@pytest.mark.parametrize("method", ["_send_publish", "_process_headers", "_process_msg"])
def test_overrides_keep_the_signature_of_nats_py(method: str) -> None:
    ours = inspect.signature(getattr(Client, method))
    theirs = inspect.signature(getattr(NatsClient, method))
    assert list(ours.parameters) == list(theirs.parameters)


def test_the_installed_nats_py_is_one_the_overrides_were_checked_against() -> None:
    (pin,) = [
        Requirement(r)
        for r in importlib.metadata.requires("actormesh") or []
        if Requirement(r).name == "nats-py"
    ]
    assert pin.specifier.contains(importlib.metadata.version("nats-py"))
    assert _nats.OVERRIDDEN
    for name in OVERRIDES:
        assert getattr(Client, name) is not getattr(NatsClient, name)


def _unpatched() -> type[NatsClient]:
    """A class like `Client`, with the overrides, for `check_overrides` to judge."""
    return type("Probe", (NatsClient,), {name: Client.__dict__[name] for name in OVERRIDES})


async def test_a_changed_method_turns_the_overrides_off_with_one_warning(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    async def changed(self: Any, subject: str, payload: bytes, headers: Any) -> None:
        pass  # a nats-py whose _send_publish lost a parameter

    monkeypatch.setattr(NatsClient, "_send_publish", changed)
    probe = _unpatched()
    with pytest.warns(NatsOverridesDisabled, match="_send_publish") as caught:
        assert not check_overrides(probe)
    assert len(caught) == 1
    # nats-py's own code runs, the header parser included.
    assert inspect.getattr_static(probe, "_send_publish") is changed
    assert inspect.getattr_static(probe, "_process_headers") is NatsClient._process_headers
    block = b"NATS/1.0\r\nk: v\r\n\r\n"
    assert await probe()._process_headers(block) == {"k": "v"}


def test_a_client_without_the_counters_turns_the_overrides_off(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    original = NatsClient.__init__

    def init(self: NatsClient, *args: Any, **kwargs: Any) -> None:
        original(self, *args, **kwargs)
        del self._flush_queue

    monkeypatch.setattr(NatsClient, "__init__", init)
    probe = _unpatched()
    with pytest.warns(NatsOverridesDisabled, match="_flush_queue"):
        assert not check_overrides(probe)
    assert "_send_publish" not in probe.__dict__


def test_the_installed_nats_py_keeps_the_overrides_without_a_warning() -> None:
    probe = _unpatched()
    assert check_overrides(probe)  # a warning would fail the test (filterwarnings=error)
    assert probe.__dict__["_send_publish"] is Client.__dict__["_send_publish"]


def _capturing(cls: type[NatsClient]) -> tuple[NatsClient, list[bytes]]:
    """A client of `cls` whose commands are kept instead of sent."""
    nc = cls()
    sent: list[bytes] = []

    async def keep(cmd: bytes, priority: bool = False) -> None:
        sent.append(cmd)

    nc._send_command = keep  # type: ignore[method-assign]
    return nc, sent


WRITTEN: list[dict[str, str] | None] = [
    None,
    {},
    {"Nats-Msg-Id": "abc-1", "Am-Sender": "driver", "traceparent": TRACEPARENT},
    {"k": "  padded value \t"},
    {"k": "line\r\nbreak\rand\nmore"},
    {"  spaced-name  ": "v"},
    {"": "empty name is skipped", "   ": "so is a blank one"},
    {"unicode": "naïve ☃ 値"},
    {"empty": ""},
    {"x": "1", "X": "2"},
    {"name\u00a0": "stripped as str, as nats-py does"},
]


@pytest.mark.parametrize("headers", WRITTEN)
async def test_writes_the_bytes_nats_py_writes(headers: dict[str, str] | None) -> None:
    ours, ours_sent = _capturing(Client)
    theirs, theirs_sent = _capturing(NatsClient)
    for nc in (ours, theirs):
        await nc._send_publish("am.mbox.t.k", "_INBOX.x.1", b"payload", 7, headers)
    assert ours_sent == theirs_sent
    assert ours.stats["out_msgs"] == theirs.stats["out_msgs"] == 1
    assert ours.stats["out_bytes"] == theirs.stats["out_bytes"] == 7


@pytest.mark.parametrize("name", ["bad name", "colon:name", "ключ", "tab\tname", "a\r\nb"])
async def test_refuses_the_names_nats_py_refuses(name: str) -> None:
    for cls in (Client, NatsClient):
        nc, sent = _capturing(cls)
        with pytest.raises(BadHeaderError):
            await nc._send_publish("s", "", b"", 0, {name: "v"})
        assert sent == []


async def test_an_empty_subject_is_refused_by_nats_py() -> None:
    nc, sent = _capturing(Client)
    with pytest.raises(BadSubjectError):
        await nc._send_publish("", "", b"", 0, {"k": "v"})
    assert sent == []


READ: list[bytes] = [
    b"",
    b"NATS/1.0\r\n\r\n",
    f"NATS/1.0\r\nNats-Msg-Id: abc\r\nAm-Sender: d\r\ntraceparent: {TRACEPARENT}\r\n\r\n".encode(),
    b"NATS/1.0\r\nk:v\r\nk2:\tv2 \r\n\r\n",
    b"NATS/1.0\r\n  k  :  v  \r\n\r\n",
    b"NATS/1.0\r\nno colon here\r\nk: v\r\n\r\n",
    b"NATS/1.0\r\n: empty name\r\n\r\n",
    b"NATS/1.0\r\nbad name: v\r\nk: v\r\n\r\n",
    b"NATS/1.0\r\nk: a\r\nk: b\r\n\r\n",
    b"NATS/1.0\r\nk: a: b: c\r\n\r\n",
    b"NATS/1.0\r\nk: lone\nnewline\r\n\r\n",
    b"NATS/1.0\r\nk\x1c: v\r\n\r\n",
    b"NATS/1.0\r\nk: \x1cv\x1c\r\n\r\n",
    "NATS/1.0\r\nk: naïve\r\n\r\n".encode(),
    b"NATS/1.0\r\nk: \xff\xfe\r\n\r\n",
    b"NATS/1.0 503\r\n\r\n",
    b"NATS/1.0 404 No Messages\r\n\r\n",
    b"NATS/1.0 100 Idle Heartbeat\r\nNats-Last-Consumer: 5\r\nNats-Last-Stream: 7\r\n\r\n",
    b"NATS/1.0 408 Request Timeout\r\nNats-Pending-Messages: 1\r\nNats-Pending-Bytes: 0\r\n\r\n",
    b"NATS/1.0",
]


async def _read(cls: type[NatsClient], block: bytes) -> object:
    """What a client of `cls` makes of `block`: the headers, or the error's type."""
    try:
        return await cls()._process_headers(block)
    except Exception as exc:  # a truncated block raises in nats-py: so must ours
        return type(exc)


@pytest.mark.parametrize("block", READ)
async def test_reads_the_headers_nats_py_reads(block: bytes) -> None:
    assert await _read(Client, block) == await _read(NatsClient, block)


async def test_reads_like_nats_py_on_fuzzed_blocks() -> None:
    rng = random.Random(20261124)
    alphabet = ["a", "B", "-", "_", ":", " ", "\t", "\r", "\n", "\r\n", "\x0b", "\x1c", "é", "1"]
    common = 0
    for _ in range(3000):
        lines = [
            "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 12)))
            for _ in range(rng.randint(0, 4))
        ]
        block = ("NATS/1.0\r\n" + "\r\n".join(lines) + "\r\n\r\n").encode()
        assert await _read(Client, block) == await _read(NatsClient, block), block
        try:
            parse_header_block(block)
            common += 1
        except NotCommon:
            pass
    # The fuzz reached both paths: the one-pass parser and nats-py's.
    assert 100 < common < 3000


def test_parse_takes_the_common_case_and_leaves_the_rest() -> None:
    assert parse_header_block(b"NATS/1.0\r\nA: 1\r\nb:2\r\n\r\n") == {"A": "1", "b": "2"}
    assert parse_header_block(b"NATS/1.0\r\n\r\n") is None
    odd_blocks = [
        b"NATS/1.0 503\r\n\r\n",
        "NATS/1.0\r\nk: é\r\n\r\n".encode(),
        b"NATS/1.0\r\na b: c\r\n\r\n",
    ]
    for odd in odd_blocks:
        with pytest.raises(NotCommon):
            parse_header_block(odd)


@pytest.mark.parametrize("headers", WRITTEN)
async def test_publish_soon_buffers_what_nats_py_publish_buffers(
    headers: dict[str, str] | None,
) -> None:
    ours, theirs = buffering(Client), buffering(NatsClient)
    assert isinstance(ours, Client)
    pending = ours.publish_soon("am.mbox.t.k", b"payload", "_INBOX.x.1", headers)
    if pending is not None:
        await pending
    await theirs.publish("am.mbox.t.k", b"payload", reply="_INBOX.x.1", headers=headers)
    assert ours._pending == theirs._pending
    assert ours.stats["out_msgs"] == theirs.stats["out_msgs"] == 1
    assert ours.stats["out_bytes"] == theirs.stats["out_bytes"] == 7


@pytest.mark.parametrize("subject", ["", "a b", "a\tb", "a\r\nPUB x 1"])
async def test_publish_soon_refuses_the_subjects_publish_refuses(subject: str) -> None:
    ours, theirs = buffering(Client), buffering(NatsClient)
    assert isinstance(ours, Client)
    with pytest.raises(BadSubjectError):
        ours.publish_soon(subject, b"x", "", None)
    with pytest.raises(BadSubjectError):
        ours.publish_soon("ok", b"x", subject or " ", None)
    with pytest.raises(BadSubjectError):
        await theirs.publish(subject, b"x")
    assert ours._pending == []


async def test_publish_soon_leaves_a_closed_client_to_publish() -> None:
    nc = Client()
    nc._status = NatsClient.CLOSED
    pending = nc.publish_soon("am.mbox.t.k", b"x", "", None)
    assert pending is not None  # nats-py's publish, which refuses
    with pytest.raises(ConnectionClosedError):
        await pending
