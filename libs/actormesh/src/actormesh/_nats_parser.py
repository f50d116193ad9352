"""The reader of a `Client`'s connection: nats-py's protocol parser, with
message lines (`MSG`, `HMSG`) read in one pass over the bytes a read brought.

nats-py's `Parser` tries a regular expression per protocol operation on the
head of its buffer, copies each header block and payload twice (a bytearray
slice, then `bytes`), and deletes each message from the front of the buffer
before the next; a message with headers, what every actormesh message is,
costs it about 4-6 µs (`MSG` without headers, about 2-3 µs). `MessageParser`
reads the message lines of one read with a `split` each and one copy of the
read's bytes, then deletes them from the buffer at once: about 2 µs per message
with headers on the machine it was measured on (`tests/unit/test_nats_parser.py`
pins the result against nats-py's parser, byte for byte, split anywhere).

Anything else at the head of the buffer (`INFO`, `PING`, `PONG`, `+OK`, `-ERR`,
a malformed line, a message nats-py's parser is half-way through) is left to
nats-py's `parse`, which then reads the rest of the buffer as it always did.
A message not yet whole stays in the buffer, its line unread, and the next
read is not looked at until it has the bytes that message needs.

`check_parser` looks at nats-py's parser for the shape this expects (its
buffer, state and reset); if it has changed, `Client` keeps nats-py's parser
and one `NatsOverridesDisabled` warning says why.
"""

from __future__ import annotations

import inspect
from typing import Any

from nats.protocol import parser as _parser
from nats.protocol.parser import Parser

__all__ = ["MessageParser", "parser_problems"]

_CONTROL = getattr(_parser, "AWAITING_CONTROL_LINE", None)
_HMSG = b"HMSG "
_MSG = b"MSG "
_HMSG_AT = len(_HMSG)
_MSG_AT = len(_MSG)


class MessageParser(Parser):
    """nats-py's parser with a one-pass reading of message lines (see the module)."""

    def __init__(self, nc: Any = None) -> None:
        #: The buffer's length the message at its head needs before it can be read.
        self._wanted = 0
        super().__init__(nc)

    def reset(self) -> None:
        super().reset()
        self._wanted = 0

    async def parse(self, data: bytes = b"") -> None:
        buf = self.buf
        buf.extend(data)
        if self.state != _CONTROL:
            await super().parse()  # nats-py's, half-way through a message of its own
            return
        size = len(buf)
        if size < self._wanted:
            return
        self._wanted = 0
        # One copy of what was read: the slices are one copy each, and the buffer is
        # cut once, not per message.
        view = bytes(buf)
        nc = self.nc
        pos = 0
        other = False
        try:
            while pos < size:
                got = _message(view, pos, size)
                if isinstance(got, int):
                    other = got == _OTHER
                    self._wanted = max(got, 0)
                    break
                # Consumed before it is handled, as nats-py does: a handler that
                # raises does not see its message again.
                pos, sid, subject, reply, headers, payload = got
                await nc._process_msg(sid, subject, reply, payload, headers)
        finally:
            if pos:
                del buf[:pos]
        if other:
            await super().parse()


#: `_message`: what is at the head is not a message line nats-py's parser would
#: read as one (another operation, or a malformed line).
_OTHER = -1

_Message = tuple[int, int, bytes, bytes, bytes | None, bytes]


def _message(view: bytes, pos: int, size: int) -> _Message | int:
    """The message at `pos` of `view` (`size` bytes): where the next one starts,
    its sid, subject, reply, header block (None for `MSG`) and payload. Else an
    int: `_OTHER`; or, for a message not yet whole, the bytes from `pos` it needs
    (0 while its line is not whole)."""
    if view.startswith(_HMSG, pos):
        at, sizes = _HMSG_AT, 2
    elif view.startswith(_MSG, pos):
        at, sizes = _MSG_AT, 1
    else:
        return _OTHER
    end = view.find(b"\r\n", pos)
    if end < 0:
        return 0
    args = view[pos + at : end].split()
    if len(args) == 3 + sizes:
        reply = args[2]
    elif len(args) == 2 + sizes:
        reply = b""
    else:
        return _OTHER
    sid, whole = args[1], args[-1]
    head = args[-2] if sizes == 2 else b"0"
    if not (sid.isdigit() and head.isdigit() and whole.isdigit()):
        return _OTHER
    start = end + 2
    stop = start + int(whole)
    if size < stop + 2:
        return stop + 2 - pos
    if sizes == 1:
        return stop + 2, int(sid), args[0], reply, None, view[start:stop]
    split = start + int(head)
    return stop + 2, int(sid), args[0], reply, view[start:split], view[split:stop]


def parser_problems() -> list[str]:
    """What in nats-py's parser is not as `MessageParser` expects."""
    problems = []
    if not isinstance(_CONTROL, int):
        problems.append("nats.protocol.parser has no AWAITING_CONTROL_LINE state")
    if not inspect.iscoroutinefunction(Parser.parse):
        problems.append("Parser.parse is not a coroutine method")
    try:
        probe = Parser()
        if not (isinstance(probe.buf, bytearray) and probe.state == _CONTROL):
            problems.append("a new Parser has no bytearray buf in the control-line state")
    except Exception as exc:  # any surprise in a parser made only to be looked at
        problems.append(f"a Parser cannot be made to check its attributes ({exc!r})")
    return problems
