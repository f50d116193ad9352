"""`instrument(mesh, ...)`: turn tracing on for one `Mesh`, with either tracer."""

from __future__ import annotations

from typing import TYPE_CHECKING

from ._interceptor import install_tracing_interceptor, remove_tracing_interceptor
from ._logs import install_log_enricher
from ._native import MeshTracer
from ._pipeline import TracingPipeline

if TYPE_CHECKING:
    from opentelemetry.propagators.textmap import TextMapPropagator
    from opentelemetry.trace import TracerProvider

    from .._mesh import Mesh
    from ._tracing import OtelTracer

__all__ = ["instrument", "uninstrument"]


def instrument(
    mesh: Mesh,
    tracing: TracingPipeline | TracerProvider | None = None,
    *,
    propagator: TextMapPropagator | None = None,
) -> MeshTracer | OtelTracer:
    """Trace this mesh's tells, asks and (in a worker) handled messages and replies.

    - A `TracingPipeline` (`tracing_from_env`): actormesh records and exports its
      spans itself (`MeshTracer`), at a few microseconds per span.
    - An OpenTelemetry `TracerProvider`, or None for the global one: spans go
      through the SDK (`OtelTracer`); `propagator` replaces W3C Trace Context.

    Workers built on the mesh get a consumer span per message from the
    `TracingInterceptor` this adds to `mesh.interceptors`. Also adds
    trace_id/span_id to log lines (`actormesh._logging.enrichers`).
    """
    tracer: MeshTracer | OtelTracer
    if isinstance(tracing, TracingPipeline):
        if propagator is not None:
            raise TypeError("a propagator applies to an OpenTelemetry TracerProvider only")
        tracer = MeshTracer(tracing)
    else:
        from ._tracing import OtelTracer

        tracer = OtelTracer(tracing, propagator=propagator)
    mesh.tracer = tracer
    # The caller's `execute_tool` spans (a plain object standing in for a mesh has no tools).
    tools = getattr(mesh, "tools", None)
    if tools is not None:
        from ._tools import ToolSpans

        tools.tracer = ToolSpans(tracer)
    install_tracing_interceptor(mesh)
    install_log_enricher()
    return tracer


def uninstrument(mesh: Mesh) -> None:
    """Back to no tracing at all (`mesh.tracer = None`, no consumer-span interceptor).

    A worker already running keeps the interceptor, which does nothing without a
    tracer."""
    mesh.tracer = None
    tools = getattr(mesh, "tools", None)
    if tools is not None:
        tools.tracer = None
    remove_tracing_interceptor(mesh)
