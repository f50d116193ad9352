"""The span pipeline behind `MeshTracer`: sampling, batching and export.

It plays the part of the SDK's TracerProvider + BatchSpanProcessor + OTLP
exporter, for spans that arrive already encoded (`_otlp`): the event loop
appends bytes to a queue, and one daemon thread sends them in batches, waking
when a batch is full or the schedule delay has passed. The thread only joins
bytes and does I/O, so it barely competes with the loop for the GIL.

Settings are the SDK's (`TracingConfig`, from OTEL_*): the sampler, the
batch size, queue size, schedule delay and export timeout mean what they mean
there, and a full queue drops spans (counted, and logged) rather than block.
Imports neither the OpenTelemetry SDK nor its exporters.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import json
import logging
import sys
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from .._errors import ConfigError
from .._version import VERSION
from ._config import SamplerName, TracingConfig
from ._otlp import describe, encode_request, resource_scope
from ._recorder import SPEEDUPS, PyRecorder, Recorder
from ._sender import ExportFailed, HttpSender

__all__ = ["PipelineStats", "Sampler", "TracingPipeline", "run_off_loop", "tracing_from_env"]

log = logging.getLogger("actormesh.observability")

#: The instrumentation scope name actormesh's spans carry.
SCOPE = "actormesh"

#: Seconds between two warnings about the same export trouble.
_WARN_EVERY = 60.0


class Sampler:
    """The OTEL_TRACES_SAMPLER samplers, deciding the way the SDK's do.

    A ratio sampler keeps a trace when the low 64 bits of its id are below
    `ratio * 2**64`, so every process that sees the trace decides alike.
    """

    __slots__ = ("bound", "parent_based")

    def __init__(self, name: SamplerName = "parentbased_always_on", ratio: float = 1.0) -> None:
        self.parent_based = name.startswith("parentbased_")
        base = name.removeprefix("parentbased_")
        #: A root is sampled when the low 64 bits of its trace id are below this.
        self.bound: int
        if base == "always_on":
            self.bound = 1 << 64
        elif base == "always_off":
            self.bound = 0
        elif base == "traceidratio":
            # The SDK's TraceIdRatioBased.get_bound_for_rate.
            self.bound = round(ratio * (1 << 64))
        else:
            raise ConfigError(f"unknown sampler {name!r}")

    def child(self, parent_sampled: bool, trace_id: bytes) -> bool:
        """Whether a span under a parent (local or remote) is sampled."""
        if self.parent_based:
            return parent_sampled
        return int.from_bytes(trace_id[8:]) < self.bound


@dataclass(frozen=True, slots=True, kw_only=True)
class PipelineStats:
    #: Spans a collector accepted.
    exported: int
    #: Spans dropped because the queue was full (the collector too slow or gone).
    dropped: int
    #: Spans in exports that were given up (after retries, or refused).
    failed: int
    #: Spans waiting in the queue now.
    queued: int


Exporter = Callable[[Sequence[bytes]], None]


class TracingPipeline:
    """Samples, batches and exports the spans of `MeshTracer`s.

    Build it with `tracing_from_env` (or from a `TracingConfig`), hand it to
    `instrument(mesh, pipeline)`, and `shutdown()` (or `await aclose()`) it to
    export what is left. `exporters` replaces the ones the config names
    (callables taking a batch of encoded spans; tests use it).
    """

    def __init__(
        self,
        config: TracingConfig,
        *,
        service_name: str | None = None,
        instance_id: str | None = None,
        exporters: Sequence[Exporter] | None = None,
        speedups: bool | None = None,
    ) -> None:
        self.config = config
        self.resource: dict[str, str] = config.resource(
            service_name=service_name,
            instance_id=instance_id,
            sdk=("actormesh", VERSION),
        )
        self.sampler = Sampler(config.sampler, config.sampler_arg)
        self._head = resource_scope(self.resource, SCOPE, VERSION)
        self._senders: list[HttpSender] = []
        self._exporters = list(exporters) if exporters is not None else self._from_config()
        self._batch = max(1, config.max_export_batch_size)
        self._max_queue = max(self._batch, config.max_queue_size)
        self._delay = max(0.001, config.schedule_delay_ms / 1000.0)
        self._queue: deque[bytes] = deque()
        self._wake = threading.Event()
        self._lock = threading.Lock()
        self._flush_waiters: list[threading.Event] = []
        self._stopping = False
        self._exported = self._dropped = self._failed = 0
        self._warned_at: dict[str, float] = {}
        if speedups and not SPEEDUPS:
            raise ConfigError(
                "the compiled tracing speedups are not built: reinstall actormesh with a "
                "C compiler and the Python headers, or leave speedups unset"
            )
        #: Whether the compiled speedups record this pipeline's spans.
        self.speedups = SPEEDUPS if speedups is None else speedups
        recorder = Recorder if self.speedups else PyRecorder
        #: Where spans are queued: `record(span)` takes one encoded span (a
        #: `ScopeSpans.spans` entry).
        self.recorder = recorder(
            self._queue,
            self._max_queue,
            self._batch,
            self._wake.set,
            self._drop,
            config,
            self.sampler.bound,
            self.sampler.parent_based,
        )
        self.record: Callable[[bytes], None] = self.recorder.record
        self._thread = threading.Thread(target=self._run, name="actormesh-span-export", daemon=True)
        self._thread.start()
        atexit.register(self._at_exit)

    def _drop(self) -> None:
        self._dropped += 1
        if self.recorder.closed:
            self._warn("closed", "spans ended after the tracing pipeline was shut down are dropped")
        else:
            self._warn(
                "dropped",
                "span queue full (%d): dropping spans; the collector is slow or "
                "unreachable, or raise OTEL_BSP_MAX_QUEUE_SIZE",
                self._max_queue,
            )

    # -- control ------------------------------------------------------------------------

    def stats(self) -> PipelineStats:
        return PipelineStats(
            exported=self._exported,
            dropped=self._dropped,
            failed=self._failed,
            queued=len(self._queue),
        )

    def force_flush(self, timeout: float = 30.0) -> bool:
        """Export everything queued now; False if that took longer than `timeout`."""
        if not self._thread.is_alive():
            return not self._queue
        done = threading.Event()
        with self._lock:
            self._flush_waiters.append(done)
        self._wake.set()
        return done.wait(timeout)

    def shutdown(self, timeout: float = 30.0) -> None:
        """Export what is queued (waiting at most `timeout`), then stop. Idempotent."""
        if self.recorder.closed:
            return
        self.recorder.closed = True
        atexit.unregister(self._at_exit)
        self._stopping = True
        self._wake.set()
        self._thread.join(timeout)
        if self._thread.is_alive():
            log.warning(
                "spans not exported within %.0fs of shutdown: the collector is slow or "
                "unreachable; %d queued spans are dropped",
                timeout,
                len(self._queue),
            )
        for sender in self._senders:
            sender.close()

    async def aclose(self, timeout: float = 5.0) -> None:
        """`shutdown` without blocking the event loop."""
        await run_off_loop(lambda: self.shutdown(timeout), timeout + 1.0, what="span export")

    def _at_exit(self) -> None:
        self.shutdown(timeout=min(5.0, self.config.export_timeout_ms / 1000.0))

    # -- the export thread --------------------------------------------------------------

    def _from_config(self) -> list[Exporter]:
        out: list[Exporter] = []
        config = self.config
        for name in config.exporters:
            if name == "otlp":
                sender = HttpSender(
                    config.endpoint,
                    headers=config.headers,
                    timeout=config.timeout,
                    compression=config.compression,
                    certificate=config.certificate,
                    client_certificate=config.client_certificate,
                    client_key=config.client_key,
                )
                self._senders.append(sender)
                out.append(self._otlp_exporter(sender))
            elif name == "console":
                out.append(_print_spans)
        return out

    def request(self, spans: Sequence[bytes]) -> bytes:
        """The OTLP ExportTraceServiceRequest (protobuf) carrying these spans."""
        return encode_request(self._head, spans)

    def _otlp_exporter(self, sender: HttpSender) -> Exporter:
        def export(spans: Sequence[bytes]) -> None:
            sender.send(self.request(spans))

        return export

    def _run(self) -> None:
        queue, batch = self._queue, self._batch
        due = time.monotonic() + self._delay
        while True:
            self._wake.wait(max(0.0, due - time.monotonic()))
            self._wake.clear()
            self.recorder.woken = False
            with self._lock:
                waiters, self._flush_waiters = self._flush_waiters, []
            stopping = self._stopping
            timed_out = time.monotonic() >= due
            everything = timed_out or stopping or bool(waiters)
            while len(queue) >= batch or (everything and queue):
                chunk = [queue.popleft() for _ in range(min(batch, len(queue)))]
                self._export(chunk)
            if timed_out:
                due = time.monotonic() + self._delay
            for waiter in waiters:
                waiter.set()
            if stopping:
                return

    def _export(self, chunk: list[bytes]) -> None:
        for exporter in self._exporters:
            try:
                exporter(chunk)
            except ExportFailed as exc:
                self._failed += len(chunk)
                self._warn("export", "%d spans not exported: %s", len(chunk), exc)
                continue
            except Exception:
                self._failed += len(chunk)
                log.exception("span exporter failed; %d spans lost", len(chunk))
                continue
            self._exported += len(chunk)

    def _warn(self, what: str, message: str, *args: object) -> None:
        now = time.monotonic()
        last = self._warned_at.get(what)
        if last is None or now - last >= _WARN_EVERY:
            self._warned_at[what] = now
            log.warning(message, *args)


def _print_spans(spans: Sequence[bytes]) -> None:
    # stdout belongs to the program (`actormesh ask` prints replies there).
    for span in describe(spans):
        print(json.dumps(span, default=str), file=sys.stderr)


async def run_off_loop(fn: Callable[[], object], timeout: float, *, what: str) -> None:
    """Run blocking `fn` in a daemon thread, waiting at most `timeout` seconds.

    A daemon thread rather than `asyncio.to_thread`: an exporter stuck retrying
    an unreachable collector must not hold the interpreter's exit (the default
    executor is joined at shutdown).
    """
    loop = asyncio.get_running_loop()
    done: asyncio.Future[None] = loop.create_future()

    def finished() -> None:
        if not done.done():
            done.set_result(None)

    def run() -> None:
        try:
            fn()
        except Exception:
            log.exception("%s shutdown failed", what)
        finally:
            with contextlib.suppress(RuntimeError):  # the loop may be closed by now
                loop.call_soon_threadsafe(finished)

    threading.Thread(target=run, name=f"actormesh-{what}-shutdown", daemon=True).start()
    try:
        await asyncio.wait_for(asyncio.shield(done), timeout)
    except TimeoutError:
        log.warning("%s did not finish within %.0fs of stopping", what, timeout)


def tracing_from_env(
    env: Mapping[str, str],
    *,
    service_name: str | None = None,
    instance_id: str | None = None,
) -> TracingPipeline | None:
    """A pipeline exporting as the OTEL_* variables in `env` say, or None when they
    configure no exporter (then leave `mesh.tracer` None: no tracing cost).

    `service_name` is the default when neither OTEL_SERVICE_NAME nor a
    `service.name` in OTEL_RESOURCE_ATTRIBUTES is set. Raises `ConfigError`.
    """
    config = TracingConfig.from_env(env)
    if not config.enabled:
        return None
    return TracingPipeline(config, service_name=service_name, instance_id=instance_id)
