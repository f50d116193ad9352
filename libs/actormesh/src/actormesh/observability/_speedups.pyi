"""Types of the compiled `_speedups` extension (`_speedups.c`)."""

from collections import deque
from collections.abc import Callable
from contextvars import ContextVar
from typing import Any, TypeVar

from ._config import TracingConfig

_S = TypeVar("_S", bound=SpanCore)

class Recorder:
    config: TracingConfig
    closed: bool
    woken: bool
    def __init__(
        self,
        queue: deque[bytes],
        max_queue: int,
        batch: int,
        wake: Callable[[], object],
        drop: Callable[[], object],
        config: TracingConfig,
        bound: int,
        parent_based: bool,
    ) -> None: ...
    def record(self, span: bytes, /) -> None: ...

class SpanCore:
    _recorder: Recorder | None
    _ids: bytes
    span_id: bytes
    trace_state: str | None
    _head: bytes
    _msg_id: str | None
    _more: Any
    _span_context: Any
    _start: int
    _attach: bool
    _ended: bool
    _failed: bool
    def __init__(
        self,
        recorder: Recorder | None,
        ids: bytes,
        span_id: bytes,
        trace_state: str | None,
        head: bytes,
        msg_id: str | None,
        /,
    ) -> None: ...
    def __enter__(self) -> Any: ...
    def __exit__(self, exc_type: object, exc: BaseException | None, tb: object, /) -> None: ...
    def end(self, end_time: int | None = None) -> None: ...

def init(
    context_var: ContextVar[Any],
    context_type: type[dict[str, object]],
    span_key: str,
    parse_fallback: Callable[[str], tuple[bytes, bool] | None],
    traceparent: str,
    tracestate: str,
    msg_id: str,
    /,
) -> None: ...
def consumer(cls: type[_S], recorder: Recorder, headers: dict[str, str], head: bytes, /) -> _S: ...
def producer(
    cls: type[_S], recorder: Recorder, headers: dict[str, str], head: bytes, /
) -> _S | None: ...
def sent(recorder: Recorder, headers: dict[str, str], head: bytes, /) -> None: ...
