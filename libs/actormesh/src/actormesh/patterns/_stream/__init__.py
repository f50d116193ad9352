"""Streams: a pipeline of stages from any AsyncIterable to any async callable.

    metrics = await (
        Stream(source)
        .map(parse)
        .filter(lambda e: e.kind == "order")
        .batch(100, max_wait=0.5)
        .run(sink)
    )

Our own rather than aiostream's: the mesh needs acknowledgement tracking
through every stage (a JetStream message is acked only once what became of it
left the sink, and nacked if it failed or was dropped), explicit backpressure
strategies with exact drop accounting, per-stage error strategies and metrics.

How it runs. Consecutive stages are fused: each is an async generator pulling
from the one before, all in the caller's task, so an item costs a few
generator hops and the natural backpressure is BLOCK (nothing is pulled until
the sink is ready). A decoupling point—`buffer()`, `merge()`, and the time-based
`batch(max_wait=...)` / `window(duration=...)`—runs its upstream in a task of
its own feeding a bounded channel, which is where the backpressure strategies
apply. Internally every item travels with the `Ackable` source items it came
from; batches carry the union.

The modules, in the order an item meets them:

- `_pipeline`: `Stream` (the builder) and `Pipeline` (runs the chain into the sink);
- `_stages`: the source, merge, map, filter, buffer and rate-limit stages;
- `_batching`: batch and window stages;
- `_channel`: the bounded channel and pumps behind every decoupling point;
- `_strategy`: per-stage error strategies (`ErrorStrategy`, `OnError`);
- `_acks`: `Ackable`, the envelope an item travels in, and settling its acks;
- `_metrics`: per-stage counters (`StageMetrics`).
"""

from .._backpressure import Backpressure
from ._acks import Ackable
from ._metrics import StageMetrics
from ._pipeline import Pipeline, Stream
from ._strategy import ErrorStrategy, OnError

__all__ = [
    "Ackable",
    "Backpressure",
    "ErrorStrategy",
    "OnError",
    "Pipeline",
    "StageMetrics",
    "Stream",
]
