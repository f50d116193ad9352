"""trace_id / span_id on every log line written while a span is current."""

from __future__ import annotations

from opentelemetry import trace

from .. import _logging

__all__ = ["install_log_enricher", "trace_log_fields", "uninstall_log_enricher"]

#: Shared and never mutated: most log lines are written outside any span.
_NO_FIELDS: dict[str, str] = {}


def trace_log_fields() -> dict[str, str]:
    """The current span's ids as log fields (W3C hex), or no fields."""
    ctx = trace.get_current_span().get_span_context()
    if not ctx.is_valid:
        return _NO_FIELDS
    return {"trace_id": format(ctx.trace_id, "032x"), "span_id": format(ctx.span_id, "016x")}


def install_log_enricher() -> None:
    """Add `trace_log_fields` to actormesh's log formatters (idempotent)."""
    if trace_log_fields not in _logging.enrichers:
        _logging.enrichers.append(trace_log_fields)


def uninstall_log_enricher() -> None:
    while trace_log_fields in _logging.enrichers:
        _logging.enrichers.remove(trace_log_fields)
