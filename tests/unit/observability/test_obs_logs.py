"""Log lines carry trace_id/span_id while a span is current."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator

import pytest
from opentelemetry.sdk.trace import TracerProvider

from actormesh import _logging
from actormesh._logging import configure_logging
from actormesh.observability import (
    OtelTracer,
    install_log_enricher,
    trace_log_fields,
    uninstall_log_enricher,
)


@pytest.fixture
def tracer() -> Iterator[OtelTracer]:
    provider = TracerProvider()
    yield OtelTracer(provider)
    provider.shutdown()


@pytest.fixture
def restore_logging() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    enrichers = _logging.enrichers[:]
    yield
    root.handlers[:] = handlers
    root.setLevel(level)
    _logging.enrichers[:] = enrichers


def test_fields_only_inside_a_span(tracer: OtelTracer) -> None:
    assert trace_log_fields() == {}
    with tracer.consumer(
        destination="mesh.mbox.c.k",
        headers={},
        actor_type="c",
        message_type="M",
        key="k",
        deliveries=1,
    ):
        fields = trace_log_fields()
    assert set(fields) == {"trace_id", "span_id"}
    assert len(fields["trace_id"]) == 32 and len(fields["span_id"]) == 16
    assert trace_log_fields() == {}


@pytest.mark.usefixtures("restore_logging")
@pytest.mark.parametrize("fmt", ["json", "console"])
def test_log_lines_carry_the_ids(
    tracer: OtelTracer, fmt: str, capsys: pytest.CaptureFixture[str]
) -> None:
    install_log_enricher()
    install_log_enricher()  # idempotent
    assert _logging.enrichers.count(trace_log_fields) == 1
    configure_logging("INFO", fmt)
    log = logging.getLogger("test.obs")
    log.info("outside")
    with tracer.consumer(
        destination="mesh.mbox.c.k",
        headers={},
        actor_type="c",
        message_type="M",
        key="k",
        deliveries=1,
    ):
        ids = trace_log_fields()
        log.info("inside")
    outside, inside = capsys.readouterr().err.splitlines()
    if fmt == "json":
        assert "trace_id" not in json.loads(outside)
        line = json.loads(inside)
        assert (line["event"], line["trace_id"], line["span_id"]) == (
            "inside",
            ids["trace_id"],
            ids["span_id"],
        )
    else:
        assert "trace_id" not in outside
        assert inside.endswith(f"inside trace_id={ids['trace_id']} span_id={ids['span_id']}")
    uninstall_log_enricher()
    assert trace_log_fields not in _logging.enrichers
