"""The queue between the tracer (event loop) and the span export thread.

`Recorder` is the C one from `_speedups` when that extension is built (it is
an optional part of the package, compiled at install), else `PyRecorder`, its
definition in Python. `SPEEDUPS` says which.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ._config import TracingConfig

__all__ = ["SPEEDUPS", "PyRecorder", "Recorder", "speedups"]


class PyRecorder:
    """Queues encoded spans for the export thread, waking it once a batch is
    full, and hands a span it cannot take (the queue full, or closed) to `drop`.

    `woken` is set when it wakes the thread and cleared by the thread as it
    wakes, so a busy loop wakes it once per batch rather than on every span.
    It carries the sampler's `bound` and `parent_based` for the compiled core.
    """

    __slots__ = (
        "_append",
        "_queue",
        "batch",
        "bound",
        "closed",
        "config",
        "drop",
        "max_queue",
        "parent_based",
        "wake",
        "woken",
    )

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
    ) -> None:
        self._queue = queue
        self._append = queue.append
        self.max_queue = max_queue
        self.batch = max(1, batch)
        self.wake = wake
        self.drop = drop
        self.config = config
        self.bound = bound
        self.parent_based = parent_based
        self.closed = False
        self.woken = False

    def record(self, span: bytes) -> None:
        n = len(self._queue)
        if n >= self.max_queue or self.closed:
            self.drop()
            return
        self._append(span)
        if n + 1 >= self.batch and not self.woken:
            self.woken = True
            self.wake()


try:
    from . import _speedups
except ImportError:  # not built: the Python definitions run
    _speedups = None  # type: ignore[assignment]

#: The compiled extension, or None when it was not built (then the Python
#: definitions run, with the same results, a few microseconds slower per span).
speedups = _speedups
SPEEDUPS = speedups is not None

Recorder: type[PyRecorder] | type[_speedups.Recorder] = (
    _speedups.Recorder if SPEEDUPS else PyRecorder
)
