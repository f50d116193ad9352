"""Errors to the wire and back: the worker's error replies and dead-letter fields,
and the asker's `RemoteError` from an error reply.

Both directions live here so the fields a worker writes are the fields a sender
reads: an `ActorMeshError` keeps its code and retryability, any other exception
is a retryable `handler_error`.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import msgspec
from nats.aio.msg import Msg

from ._errors import ActorMeshError, RemoteError
from ._wire import ErrorReply, Hdr

__all__ = ["ErrorFields", "decode_reply", "encode_error_reply", "error_fields"]

#: The longest error message an error reply carries.
MAX_REPLY_MESSAGE = 4000

_encoder = msgspec.json.Encoder()
_error_reply = msgspec.json.Decoder(ErrorReply)


class ErrorFields(NamedTuple):
    code: str
    type: str
    message: str
    retryable: bool


def error_fields(exc: BaseException) -> ErrorFields:
    """What the wire says of `exc`: code, type name, message and retryability."""
    if isinstance(exc, ActorMeshError):
        code, retryable = exc.code, exc.retryable
    else:
        code, retryable = "handler_error", True
    return ErrorFields(code, type(exc).__name__, str(exc), retryable)


def encode_error_reply(exc: BaseException, *, status: str = "500") -> tuple[bytes, dict[str, str]]:
    """The body and headers of an error reply to an ask."""
    fields = error_fields(exc)
    body = ErrorReply(
        code=fields.code,
        type=fields.type,
        message=fields.message[:MAX_REPLY_MESSAGE],
        retryable=fields.retryable,
    )
    return _encoder.encode(body), {Hdr.STATUS: status}


def decode_reply(reply: Msg, target: Any) -> Any:
    """A reply's value, or the `RemoteError` it carries."""
    status = reply.headers.get(Hdr.STATUS) if reply.headers else None
    if status is not None and status != "200":
        try:
            err = _error_reply.decode(reply.data)
        except msgspec.DecodeError:
            raise RemoteError(
                code="bad_reply", type="BadReply", message=repr(reply.data[:200]), retryable=False
            ) from None
        raise RemoteError(
            code=err.code, type=err.type, message=err.message, retryable=err.retryable
        )
    if target is None or target is type(None):
        return None
    return msgspec.json.decode(reply.data, type=target)
