"""The NATS client a `Mesh` connects with: nats-py's, with message headers
written and read in one pass.

nats-py builds a header block line by line (a regular expression, two strips,
a translate and three buffer extends per header) and parses one the same way
(a generator over each name's characters), which makes a message with three
headers cost about five times one without. Every actormesh message carries
headers (message id, sender, trace context), so `Client` does the same work in
one pass over the common case and hands anything else to nats-py:

- writing, the bytes are exactly nats-py's (names stripped and checked against
  the same token rule, values stripped, CR and LF in them turned to spaces);
- reading, an all-ASCII block whose names are all tokens is parsed here, to
  the dict nats-py would return; a status line (`NATS/1.0 503`), non-ASCII
  bytes or an odd name go to nats-py's own parser.

A worker's pull inbox and a Mesh's reply inbox also skip nats-py's
per-subscription queue and task: `Client.deliver_directly` has the read loop
hand their messages to a plain function (see there). The read loop itself reads
message lines with `_nats_parser.MessageParser` instead of nats-py's parser.

These overrides replace three private methods of nats-py's client
(`_send_publish`, `_process_headers`, `_process_msg`) and call a few more of
its internals.
They were checked against the nats-py versions the package metadata allows
(`nats-py>=2.16,<2.17`: 2.16 is the first to refuse a header name that is not
a token, as the writer here does). At import, `check_overrides` looks at
nats-py's code for the shape the overrides expect (the methods and their
parameters, the client's counters and flush queue); when it has changed, the
overrides are taken off `Client`, which then runs nats-py's own code, and one
`NatsOverridesDisabled` warning says why. `tests/unit/test_nats_headers.py`
compares both directions, byte for byte and dict for dict, with nats-py's own
code, so an upgrade that changes what they do fails there.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import re
import warnings
from collections.abc import Callable, Coroutine, Mapping
from typing import Any

from nats.aio.client import Client as _NatsClient
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription
from nats.errors import BadHeaderError, BadSubjectError
from nats.protocol import command as _command
from nats.protocol.command import pub_cmd

from ._nats_parser import MessageParser, parser_problems

__all__ = [
    "Client",
    "NatsOverridesDisabled",
    "NotCommon",
    "check_overrides",
    "flushed",
    "header_block",
    "parse_header_block",
    "publish_bytes",
]

_log = logging.getLogger("actormesh.nats")

#: What nats-py's `publish` refuses in a subject (whitespace, CR, LF).
_BAD_SUBJECT = re.compile(r"[ \t\r\n]").search
#: nats-py's rule for a header name (an RFC 7230 token).
_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+").fullmatch
#: Names seen to be tokens: a token needs no strip and no second check.
_TOKENS: set[str] = set()
_TOKENS_MAX = 1024
#: What `bytes.strip()` strips: nats-py strips names and values as bytes.
_ASCII_SPACE = " \t\n\r\x0b\x0c"
_NEWLINES = str.maketrans({"\r": " ", "\n": " "})
_PREFIX = "NATS/1.0\r\n"
#: Where a header block's lines start, after `NATS/1.0\r\n`.
_LINES_AT = len(_PREFIX)
#: A status line has a space after `NATS/1.0`.
_STATUS_AT = len("NATS/1.0")
_SPACE = ord(" ")


def _remember(token: str) -> None:
    if len(_TOKENS) >= _TOKENS_MAX:  # a bound, should names be unbounded
        _TOKENS.clear()
    _TOKENS.add(token)


def _token(name: str) -> str | None:
    """`name` stripped, if it is a valid header name; None to skip an empty one."""
    key = name.strip()
    if not key:
        return None
    if _TOKEN(key) is None:
        raise BadHeaderError(key)
    _remember(key)
    return key


def header_block(headers: Mapping[str, str]) -> bytes:
    """The NATS header block nats-py would write for `headers`.

    Raises `nats.errors.BadHeaderError` for a name that is not a token.
    """
    parts = [_PREFIX]
    for name, value in headers.items():
        key = name if name in _TOKENS else _token(name)
        if key is None:
            continue
        value = value.strip()
        if "\r" in value or "\n" in value:
            value = value.translate(_NEWLINES)
        parts += key, ": ", value, "\r\n"
    parts.append("\r\n")
    return "".join(parts).encode()


def publish_bytes(
    subject: str, reply: str, payload: bytes, headers: Mapping[str, str] | None
) -> bytes:
    """The PUB or HPUB command nats-py writes for one message."""
    if headers is None:
        return pub_cmd(subject, reply, payload)
    block = header_block(headers)
    return b"HPUB %s %s %d %d\r\n%s%s\r\n" % (
        subject.encode(),
        reply.encode(),
        len(block),
        len(block) + len(payload),
        block,
        payload,
    )


class NotCommon(ValueError):
    """A header block `parse_header_block` leaves to nats-py's parser."""


def parse_header_block(block: bytes) -> dict[str, str] | None:
    """The headers nats-py would read from `block`, if it is all ASCII, has no
    status line and only token names; else raises `NotCommon`."""
    if len(block) <= _STATUS_AT or block[_STATUS_AT] == _SPACE or not block.isascii():
        raise NotCommon
    out: dict[str, str] = {}
    for line in block[_LINES_AT:].decode("ascii").split("\r\n"):
        if not line:
            continue
        name, sep, value = line.partition(":")
        if not sep:
            continue
        if name not in _TOKENS:
            name = name.strip(_ASCII_SPACE)
            if name not in _TOKENS:
                if _TOKEN(name) is None:
                    raise NotCommon  # nats-py's rules for odd names are its own
                _remember(name)
        out[name] = value.strip(_ASCII_SPACE)
    return out or None


class Client(_NatsClient):
    """nats-py's client, writing and reading message headers in one pass, and
    handing a subscription's messages to a plain function from the read loop
    (`deliver_directly`)."""

    #: Subscription ids to the functions their messages go to (`deliver_directly`).
    _direct: dict[int, Callable[[Msg], None]] | None = None

    def __init__(self) -> None:
        super().__init__()
        if PARSER_OK:
            self._ps = MessageParser(self)

    def deliver_directly(self, sub: Subscription, fn: Callable[[Msg], None]) -> bool:
        """From now on, call `fn(msg)` for each of `sub`'s messages as the read loop
        parses it, instead of queueing it for `sub`'s task to await its callback
        (a queue put and get, a task switch and a coroutine per message: what a
        worker's pull inbox does not need, its callback never waits). `fn` must
        not block; what it raises is logged. False (nothing changed) when the
        overrides are off."""
        if "_process_msg" not in Client.__dict__:
            return False
        if self._direct is None:
            self._direct = {}
        self._direct[sub._id] = fn
        return True

    def deliver_queued(self, sub: Subscription) -> None:
        """Undo `deliver_directly`: `sub`'s callback gets its messages again."""
        if self._direct is not None:
            self._direct.pop(sub._id, None)

    async def _process_msg(
        self, sid: int, subject: bytes, reply: bytes, data: bytes, headers: bytes
    ) -> None:
        direct = self._direct
        fn = direct.get(sid) if direct is not None else None
        if fn is None:
            await super()._process_msg(sid, subject, reply, data, headers)
            return
        stats = self.stats
        stats["in_msgs"] += 1
        stats["in_bytes"] += len(data)
        hdr: dict[str, str] | None = None
        if headers:  # `_process_headers` inlined: a coroutine less per message
            try:
                hdr = parse_header_block(headers)
            except NotCommon:
                hdr = await super()._process_headers(headers)
        msg = self._build_message(sid, subject, reply, data, hdr)
        try:
            fn(msg)
        except Exception:
            # The read loop must go on: nats-py's subscription task logs and goes on too.
            _log.exception("a directly delivered message's handler raised")

    async def _send_publish(
        self,
        subject: str,
        reply: str,
        payload: bytes,
        payload_size: int,
        headers: dict[str, Any] | None,
    ) -> None:
        if not subject:
            await super()._send_publish(subject, reply, payload, payload_size, headers)
            return
        await self._send_command(publish_bytes(subject, reply, payload, headers))
        self.stats["out_msgs"] += 1
        self.stats["out_bytes"] += payload_size
        if self._flush_queue is not None and self._flush_queue.empty():
            await self._flush_pending()

    def publish_soon(
        self,
        subject: str,
        payload: bytes,
        reply: str,
        headers: dict[str, str] | None,
        *,
        checked: bool = False,
    ) -> Coroutine[Any, Any, Any] | None:
        """`publish`, put on the write buffer here when the connection is up (the
        common case): None, or what the caller must await (waking the flusher,
        once per loop turn, or `publish` itself, which raises what it raises).
        Refuses the subjects `publish` refuses (unless `checked`: the caller
        checked them at least as strictly) and leaves it every other case
        (closed, draining, reconnecting, too large), without its two coroutine
        frames and the header block's second pass for its size."""
        if (
            not self.is_connected
            or self.is_draining_pubs
            or len(payload) > self._max_payload
            or "_send_publish" not in Client.__dict__
        ):
            return self.publish(subject, payload, reply=reply, headers=headers)
        if not (checked or self._skip_subject_validation) and (
            not subject or _BAD_SUBJECT(subject) or (reply and _BAD_SUBJECT(reply))
        ):
            raise BadSubjectError
        cmd = publish_bytes(subject, reply, payload, headers)
        self.stats["out_bytes"] += len(payload)
        return self.queue(cmd)

    def queue(self, cmd: bytes) -> Coroutine[Any, Any, Any] | None:
        """Put `cmd` on the write buffer as `_send_command` and the flush check after
        it do, without their coroutine frames (two per message on the worker's
        reply and ack): what the caller must await, or None. The caller checked
        the connection is up."""
        self._pending.append(cmd)
        self._pending_data_size += len(cmd)
        self.stats["out_msgs"] += 1
        if 0 < self._max_pending_size < self._pending_data_size:
            return self._flush_pending(force_flush=True)
        if self._flush_queue is not None and self._flush_queue.empty():
            return self._flush_pending()  # wakes the flusher: one write per loop turn
        return None

    async def _process_headers(self, headers: Any) -> dict[str, str] | None:
        if not headers:
            return None
        try:
            return parse_header_block(headers)
        except NotCommon:
            result: dict[str, str] | None = await super()._process_headers(headers)
            return result


async def flushed(pending: Coroutine[Any, Any, Any], what: str) -> None:
    """Await what `Client.queue` or `Client.publish_soon` returned; a failure is
    logged, not raised (a reply or an ack that is lost is answered by the asker's
    timeout or the server's redelivery, as when the connection breaks)."""
    try:
        await pending
    except asyncio.CancelledError:
        raise
    except Exception as exc:
        _log.warning("%s not sent: %r", what, exc)


class NatsOverridesDisabled(RuntimeWarning):
    """nats-py's internals differ from what `Client`'s overrides were written
    against: the client runs nats-py's own header code (correct, slower)."""


#: The coroutine methods of nats-py's client the overrides replace or call, and
#: the parameters each takes there (in order).
_METHODS: dict[str, tuple[str, ...]] = {
    "_send_publish": ("self", "subject", "reply", "payload", "payload_size", "headers"),
    "_process_headers": ("self", "headers"),
    "_process_msg": ("self", "sid", "subject", "reply", "data", "headers"),
    "_send_command": ("self", "cmd", "priority"),
    "_flush_pending": ("self", "force_flush"),
}
#: The methods `Client` defines in place of nats-py's.
OVERRIDES = ("_send_publish", "_process_headers", "_process_msg")


def _parameters(fn: Callable[..., Any]) -> tuple[str, ...] | None:
    try:
        return tuple(inspect.signature(fn).parameters)
    except (TypeError, ValueError):
        return None


def _shape_problems(base: type[_NatsClient]) -> list[str]:
    """What in `base` (nats-py's client) is not as the overrides expect."""
    problems = []
    for name, expected in _METHODS.items():
        method = getattr(base, name, None)
        if method is None or not inspect.iscoroutinefunction(method):
            problems.append(f"{name} is not a coroutine method")
        elif _parameters(method) != expected:
            problems.append(f"{name}{_parameters(method)} is not {name}{expected}")
    if _parameters(_command.pub_cmd) != ("subject", "reply", "payload"):
        problems.append("nats.protocol.command.pub_cmd takes other parameters")
    try:
        probe = base()
        stats = probe.stats
        if not ({"out_msgs", "out_bytes"} <= stats.keys() and hasattr(probe, "_flush_queue")):
            problems.append("the client has no out_msgs/out_bytes stats or _flush_queue")
        buffer = (
            "_pending", "_pending_data_size", "_max_pending_size", "_max_payload",
            "_skip_subject_validation",
        )  # fmt: skip
        if not all(hasattr(probe, name) for name in buffer):
            problems.append(f"the client lacks one of {', '.join(buffer)}")
        build = getattr(probe, "_build_message", None)
        if build is None or _parameters(build) != ("sid", "subject", "reply", "data", "headers"):
            problems.append("the client's _build_message takes other parameters")
        if not {"in_msgs", "in_bytes"} <= stats.keys():
            problems.append("the client has no in_msgs/in_bytes stats")
    except Exception as exc:  # any surprise in a client made only to be looked at
        problems.append(f"a client cannot be made to check its attributes ({exc!r})")
    return problems


def check_overrides(cls: type[_NatsClient], base: type[_NatsClient] = _NatsClient) -> bool:
    """Keep `cls`'s overrides if `base` still has the shape they were written
    for; else remove them from `cls` (its instances then run `base`'s code),
    with one `NatsOverridesDisabled` warning. Whether they are kept."""
    problems = _shape_problems(base)
    if not problems:
        return True
    for name in OVERRIDES:
        if name in cls.__dict__:
            delattr(cls, name)
    _disabled(
        "actormesh's one-pass NATS header code is off, nats-py's own runs instead: "
        "nats-py's client is not what it was written for (" + "; ".join(problems) + ")."
    )
    return False


def _disabled(what: str) -> None:
    """One `NatsOverridesDisabled` warning: `what` is off, and why."""
    warnings.warn(
        what + " actormesh was checked against nats-py>=2.16,<2.17.",
        NatsOverridesDisabled,
        stacklevel=3,
    )


#: Whether `Client` runs the one-pass header code (False: nats-py's own).
OVERRIDDEN = check_overrides(Client)


def check_parser() -> bool:
    """Whether nats-py's parser has the shape `MessageParser` expects; if not, one
    `NatsOverridesDisabled` warning says why (`Client` keeps nats-py's parser)."""
    problems = parser_problems()
    if problems:
        _disabled(
            "actormesh's one-pass message reading is off, nats-py's own parser runs "
            "instead: " + "; ".join(problems) + "."
        )
    return not problems


#: Whether a `Client` reads its connection with `MessageParser`.
PARSER_OK = check_parser()
