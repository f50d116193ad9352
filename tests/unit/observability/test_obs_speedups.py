"""The cores of MeshTracer: the compiled one (`_speedups.c`, optional) used when
it is built, and as its Python definition. Every MeshTracer test in
`test_obs_native` runs on each core there is; these cover what is the core's
own: the recorder, ids across a fork, explicit ends."""

from __future__ import annotations

import os
import warnings
from collections import deque
from collections.abc import Iterator
from typing import Any

import pytest

from actormesh import ConfigError
from actormesh.observability import MeshTracer, TracingConfig, TracingPipeline, _pipeline, _recorder
from actormesh.observability._otlp import describe
from actormesh.observability._recorder import PyRecorder, speedups
from tests.unit.observability._cores import CORES

MAILBOX = "am.mbox.counter.k1"
CONFIG = TracingConfig(exporters=("otlp",))


def test_the_compiled_core_is_used_by_default_where_it_is_built() -> None:
    if os.environ.get("ACTORMESH_REQUIRE_SPEEDUPS"):
        # Where the build is expected to have compiled it, its absence must fail
        # here, not quietly make tracing a few microseconds dearer per span.
        assert _recorder.SPEEDUPS, (
            "actormesh's C speedups are not built: install a C compiler and the Python "
            "headers, then `uv sync --reinstall-package actormesh`"
        )
    pipeline = TracingPipeline(CONFIG, exporters=[lambda batch: None])
    try:
        assert pipeline.speedups is _recorder.SPEEDUPS
        expected: tuple[type, ...] = (PyRecorder,)
        if speedups is not None:
            expected = (speedups.Recorder,)
        assert isinstance(pipeline.recorder, expected)
        with MeshTracer(pipeline).consumer(
            destination=MAILBOX,
            headers={},
            actor_type="counter",
            message_type="Inc",
            key="k1",
            deliveries=1,
        ) as span:
            assert (speedups is not None) is isinstance(span, getattr(speedups, "SpanCore", ()))
    finally:
        pipeline.shutdown()


def test_the_python_core_is_used_when_asked_for() -> None:
    pipeline = TracingPipeline(CONFIG, exporters=[lambda batch: None], speedups=False)
    try:
        assert not pipeline.speedups and type(pipeline.recorder) is PyRecorder
    finally:
        pipeline.shutdown()


def test_asking_for_the_compiled_core_when_it_is_not_built_is_a_config_error(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(_pipeline, "SPEEDUPS", False)
    with pytest.raises(ConfigError, match="speedups are not built"):
        TracingPipeline(CONFIG, exporters=[], speedups=True)


class Calls:
    def __init__(self) -> None:
        self.wakes = self.drops = 0

    def wake(self) -> None:
        self.wakes += 1

    def drop(self) -> None:
        self.drops += 1


def make_recorder(kind: str, queue: deque[bytes], calls: Calls, *, max_queue: int) -> Any:
    cls: type[Any] = PyRecorder
    if kind == "compiled":
        assert speedups is not None
        cls = speedups.Recorder
    return cls(queue, max_queue, 3, calls.wake, calls.drop, CONFIG, 1 << 64, True)


@pytest.mark.parametrize("kind", CORES)
def test_the_recorder_wakes_the_export_thread_once_per_batch(kind: str) -> None:
    queue: deque[bytes] = deque()
    calls = Calls()
    recorder = make_recorder(kind, queue, calls, max_queue=100)
    for n in range(2):
        recorder.record(b"%d" % n)
    assert calls.wakes == 0 and not recorder.woken
    for n in range(2, 6):
        recorder.record(b"%d" % n)
    assert calls.wakes == 1 and recorder.woken  # not again until the thread has woken
    recorder.woken = False  # what the export thread does as it wakes
    recorder.record(b"6")
    assert calls.wakes == 2
    assert list(queue) == [b"%d" % n for n in range(7)]
    assert calls.drops == 0


@pytest.mark.parametrize("kind", CORES)
def test_the_recorder_drops_when_full_or_closed(kind: str) -> None:
    queue: deque[bytes] = deque()
    calls = Calls()
    recorder = make_recorder(kind, queue, calls, max_queue=2)
    for n in range(4):
        recorder.record(b"%d" % n)
    assert list(queue) == [b"0", b"1"] and calls.drops == 2
    queue.clear()
    recorder.closed = True
    recorder.record(b"late")
    assert not queue and calls.drops == 3


@pytest.fixture(params=CORES)
def core(request: pytest.FixtureRequest) -> Iterator[tuple[MeshTracer, list[bytes]]]:
    got: list[bytes] = []
    pipeline = TracingPipeline(CONFIG, exporters=[got.extend], speedups=request.param == "compiled")
    yield MeshTracer(pipeline), got
    pipeline.shutdown()


def test_a_forked_child_does_not_repeat_its_parents_ids(
    core: tuple[MeshTracer, list[bytes]],
) -> None:
    tracer, _ = core

    def traceparent() -> str:
        headers: dict[str, str] = {}
        tracer.sent(destination=MAILBOX, headers=headers, operation="tell")
        return headers["traceparent"]

    traceparent()  # the parent has random bytes buffered now
    read, write = os.pipe()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # fork with threads (3.12+)
        pid = os.fork()
    if pid == 0:  # pragma: no cover  (the child)
        os.write(write, traceparent().encode())
        os._exit(0)
    os.close(write)
    _, status = os.waitpid(pid, 0)
    child = os.read(read, 100).decode()
    os.close(read)
    assert os.waitstatus_to_exitcode(status) == 0
    ours = traceparent()
    assert len(child) == len(ours) == 55
    assert child.split("-")[1:3] != ours.split("-")[1:3]


def test_end_takes_an_end_time_and_records_once(
    core: tuple[MeshTracer, list[bytes]],
) -> None:
    tracer, got = core
    span = tracer.producer(destination=MAILBOX, headers={}, operation="tell")
    span.end(end_time=span._start + 5)
    span.end()
    with pytest.raises(TypeError):
        span.end(1, 2)
    assert tracer.pipeline.force_flush(5.0)
    (decoded,) = describe(got)
    assert decoded["end_time_unix_nano"] - decoded["start_time_unix_nano"] == 5


def test_a_message_id_that_is_not_valid_unicode_is_encoded_with_replacements(
    core: tuple[MeshTracer, list[bytes]],
) -> None:
    tracer, got = core
    tracer.sent(destination=MAILBOX, headers={"Nats-Msg-Id": "m-\udc80"}, operation="tell")
    assert tracer.pipeline.force_flush(5.0)
    (decoded,) = describe(got)
    assert decoded["attributes"]["messaging.message.id"] == "m-?"
