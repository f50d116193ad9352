"""`MessageParser` against nats-py's own `Parser`: the same calls, in the same
order, with the same bytes, however the stream is cut into reads."""

from __future__ import annotations

import json
import random
from typing import Any

import pytest
from nats.errors import ProtocolError
from nats.protocol.parser import Parser

from actormesh import _nats
from actormesh._nats import Client
from actormesh._nats_parser import MessageParser, parser_problems


class Recorder:
    """The client side a parser calls, recording each call."""

    def __init__(self, fail_on: bytes | None = None) -> None:
        self.calls: list[tuple[Any, ...]] = []
        self.fail_on = fail_on

    async def _process_msg(
        self, sid: int, subject: bytes, reply: bytes, data: bytes, headers: bytes | None
    ) -> None:
        # bytes() both sides: what matters is the content, and that it is a copy.
        self.calls.append(
            ("msg", sid, bytes(subject), bytes(reply), bytes(data), headers and bytes(headers))
        )
        if self.fail_on is not None and data == self.fail_on:
            raise RuntimeError("a handler failed")

    async def _process_ping(self) -> None:
        self.calls.append(("ping",))

    async def _process_pong(self) -> None:
        self.calls.append(("pong",))

    async def _process_info(self, info: dict[str, Any]) -> None:
        self.calls.append(("info", info))

    async def _process_err(self, err: str) -> None:
        self.calls.append(("err", err))


def hmsg(subject: str, sid: int, reply: str, headers: bytes, payload: bytes) -> bytes:
    line = f"HMSG {subject} {sid} {reply + ' ' if reply else ''}{len(headers)} "
    line += f"{len(headers) + len(payload)}\r\n"
    return line.encode() + headers + payload + b"\r\n"


def msg(subject: str, sid: int, reply: str, payload: bytes) -> bytes:
    line = f"MSG {subject} {sid} {reply + ' ' if reply else ''}{len(payload)}\r\n"
    return line.encode() + payload + b"\r\n"


def stream(rng: random.Random, n: int) -> bytes:
    """A server's side of a connection: messages of every form, now and then
    another operation between them."""
    out = bytearray()
    for i in range(n):
        payload = bytes(rng.randrange(256) for _ in range(rng.choice((0, 1, 20, 300))))
        reply = rng.choice(("", f"_INBOX.abc.{i}", f"$JS.ACK.S.c.1.{i}.{i}.17000.0"))
        kind = rng.random()
        if kind < 0.45:
            block = b"NATS/1.0\r\nNats-Msg-Id: m-%d\r\nAm-Deadline: 17\r\n\r\n" % i
            out += hmsg("mesh.mbox.t.k", 7, reply, block, payload)
        elif kind < 0.55:
            out += hmsg("_INBOX.x.1", 3, reply, b"NATS/1.0 503\r\n\r\n", b"")
        elif kind < 0.9:
            out += msg(f"_INBOX.abc.{i}", 2, reply, payload)
        else:
            out += rng.choice(
                (
                    b"PING\r\n",
                    b"PONG\r\n",
                    b"+OK\r\n",
                    b"-ERR 'Slow Consumer'\r\n",
                    b"INFO "
                    + json.dumps({"server_id": "x", "max_payload": 1024}).encode()
                    + b"\r\n",
                )
            )
    return bytes(out)


async def parse_all(parser_type: type[Parser], data: bytes, cuts: list[int]) -> list[Any]:
    recorder = Recorder()
    parser = parser_type(recorder)
    at = 0
    for cut in [*cuts, len(data)]:
        await parser.parse(data[at:cut])
        at = cut
    assert not parser.buf
    return recorder.calls


def test_nats_py_parser_has_the_expected_shape() -> None:
    assert parser_problems() == []
    assert _nats.PARSER_OK
    assert isinstance(Client()._ps, MessageParser)


@pytest.mark.parametrize("seed", range(8))
async def test_same_calls_as_nats_py_however_the_reads_are_cut(seed: int) -> None:
    rng = random.Random(seed)
    data = stream(rng, 300)
    expected = await parse_all(Parser, data, [])
    assert len(expected) >= 250  # all but the +OKs, which call nothing
    whole = await parse_all(MessageParser, data, [])
    assert whole == expected
    cuts = sorted(rng.sample(range(1, len(data)), 60))
    assert await parse_all(MessageParser, data, cuts) == expected
    # A byte at a time: every line and every message is split somewhere.
    short = stream(rng, 30)
    one_by_one = list(range(1, len(short)))
    assert await parse_all(MessageParser, short, one_by_one) == await parse_all(Parser, short, [])


async def test_a_large_message_is_read_once_it_is_whole() -> None:
    payload = bytes(range(256)) * 400
    data = hmsg("s", 1, "r", b"NATS/1.0\r\nA: b\r\n\r\n", payload) + msg("t", 2, "", b"x")
    recorder = Recorder()
    parser = MessageParser(recorder)
    reads = [data[i : i + 4096] for i in range(0, len(data), 4096)]
    for chunk in reads[:-1]:
        await parser.parse(chunk)
        assert recorder.calls == []  # nothing read until the message is whole
    await parser.parse(reads[-1])
    assert [c[4] for c in recorder.calls] == [payload, b"x"]


@pytest.mark.parametrize(
    "line",
    [
        b"MSG subj notanumber 2\r\nhi\r\n",
        b"HMSG subj 1 2\r\nhi\r\n",
        b"MSG subj 1 2 3 4 5\r\nhi\r\n",
        b"HMSG subj 1 x 4\r\nhi\r\n",
        b"BOGUS\r\n",
    ],
)
async def test_a_malformed_line_is_the_protocol_error_nats_py_raises(line: bytes) -> None:
    for parser_type in (Parser, MessageParser):
        with pytest.raises(ProtocolError):
            await parser_type(Recorder()).parse(msg("ok", 1, "", b"before") + line)


async def test_a_message_whose_handling_raises_is_consumed_as_nats_py_does() -> None:
    data = msg("a", 1, "", b"one") + msg("a", 1, "", b"two") + msg("a", 1, "", b"three")
    for parser_type in (Parser, MessageParser):
        recorder = Recorder(fail_on=b"two")
        parser = parser_type(recorder)
        with pytest.raises(RuntimeError):
            await parser.parse(data)
        await parser.parse()
        assert [c[4] for c in recorder.calls] == [b"one", b"two", b"three"]


async def test_reset_forgets_a_half_read_message() -> None:
    recorder = Recorder()
    parser = MessageParser(recorder)
    whole = msg("a", 1, "", b"x" * 100)
    await parser.parse(whole[:50])
    parser.reset()  # a reconnect: what was half read is gone
    await parser.parse(msg("b", 2, "", b"y"))
    assert [c[2] for c in recorder.calls] == [b"b"]


def test_a_changed_nats_py_parser_keeps_its_own_with_one_warning(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from actormesh import _nats_parser

    monkeypatch.setattr(_nats_parser, "_CONTROL", None)
    assert parser_problems()[0] == "nats.protocol.parser has no AWAITING_CONTROL_LINE state"
    with pytest.warns(_nats.NatsOverridesDisabled, match="nats-py's own parser runs instead"):
        assert not _nats.check_parser()
