"""The official `mcp` client over real streamable HTTP, against `actormesh mcp` as
a real process: a call that needs approval waits until an operator decides it
through the supervisor dashboard's approvals API (approved: the result; rejected:
an MCP tool error `tool_rejected`), and one trace across MCP and the mesh: the
caller's span (a `traceparent` in the request's `_meta`) → the MCP server's own
SERVER span `tools/call <tool>` (exported by the server process over OTLP) → the
mesh's caller-side spans → the worker's span for that tool call."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, cast

import aiohttp
import httpx2
import pytest
from mcp import Client
from mcp.client.streamable_http import streamable_http_client
from mcp.types import RequestParamsMeta
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind

from actormesh import Mesh
from actormesh.observability import instrument
from actormesh.testing import eventually, running_worker
from actormesh_supervisor import Service
from tests._net import free_port, listening
from tests.actors_approvals import Safe
from tests.actors_mcp import Probe
from tests.actors_supervisor import TOKEN as DASHBOARD_TOKEN
from tests.actors_supervisor import meshfile, options
from tests.integration.test_observability import CollectedSpan, otlp_collector

pytestmark = pytest.mark.integration

MCP_TOKEN = "test-token-extra-5c2e8d1a9f7b4e60"
TRACE_ID = "0af7651916cd43dd8448eb211c80319c"
CALLER_SPAN = "b7ad6b7169203331"
TRACEPARENT = f"00-{TRACE_ID}-{CALLER_SPAN}-01"


@asynccontextmanager
async def mcp_client(
    env: dict[str, str], tmp_path: Path, *, call_timeout: float, otlp: str = ""
) -> AsyncIterator[Client]:
    """`actormesh mcp --http` (alice's token) and the official client connected to it."""
    tokens = tmp_path / "tokens.toml"
    tokens.write_text(f'[tokens]\n"{MCP_TOKEN}" = "alice"\n')
    port = free_port()
    proc = await asyncio.create_subprocess_exec(
        *(sys.executable, "-m", "actormesh", "mcp", "--http", "--port", str(port)),
        *("--tokens", str(tokens), "--call-timeout", str(call_timeout)),
        env=_traced_env(env, otlp) if otlp else env,
    )
    try:
        await listening(port, proc)
        headers = {"Authorization": f"Bearer {MCP_TOKEN}"}
        async with (
            httpx2.AsyncClient(headers=headers, timeout=call_timeout + 30) as http,
            Client(
                streamable_http_client(f"http://127.0.0.1:{port}/mcp", http_client=http)
            ) as client,
        ):
            yield client
    finally:
        proc.terminate()
        assert await asyncio.wait_for(proc.wait(), 15) == 0, "a clean stop on SIGTERM"


def _traced_env(env: dict[str, str], endpoint: str) -> dict[str, str]:
    """`env` with the MCP server's traces sent to the OTLP `endpoint`, promptly."""
    clean = {k: v for k, v in env.items() if not k.startswith("OTEL_")}
    return {
        **clean,
        "OTEL_TRACES_EXPORTER": "otlp",
        "OTEL_EXPORTER_OTLP_ENDPOINT": endpoint,
        "OTEL_BSP_SCHEDULE_DELAY": "50",
    }


def _text(result: Any) -> str:
    (block,) = result.content
    text: str = block.text
    return text


async def _granted(mesh: Mesh, principal: str, *tools: str) -> None:
    await mesh.tools.grants.grant(principal, *tools)
    await eventually(
        lambda: all(mesh.tools.grants.allowed_now(principal, t) for t in tools),
        what=f"{principal}'s grants seen",
    )


async def _pending(http: aiohttp.ClientSession, url: str, door: str) -> str:
    """The id of the pending approval for opening `door`, once it is listed."""
    auth = {"Authorization": f"Bearer {DASHBOARD_TOKEN}"}
    for _ in range(600):
        async with http.get(url + "api/approvals", headers=auth) as r:
            assert r.status == 200
            for a in await r.json():
                if f'"{door}"' in str(a["arguments"]) and a["state"] == "pending":
                    assert a["principal"] == "alice" and a["tool"] == "safe.open"
                    return str(a["id"])
        await asyncio.sleep(0.05)
    raise AssertionError(f"no pending approval for door {door}")


async def test_a_call_waits_for_approval_through_the_dashboard(
    mesh: Mesh, nats_url: str, mesh_prefix: str, subprocess_env: dict[str, str], tmp_path: Path
) -> None:
    Safe.ran.clear()
    auth = {"Authorization": f"Bearer {DASHBOARD_TOKEN}"}
    mf = meshfile(mesh_prefix, [])
    async with (
        Service(options(nats_url, mesh_prefix, tmp_path, mf, token=DASHBOARD_TOKEN)) as svc,
        running_worker(mesh, Safe),
        aiohttp.ClientSession() as http,
        mcp_client(subprocess_env, tmp_path, call_timeout=60.0) as client,
    ):
        await _granted(mesh, "alice", "safe.*")
        url = svc.url

        # Approved: the MCP call waits, then returns the tool's result.
        call = asyncio.ensure_future(client.call_tool("safe.open", {"door": "front"}))
        approval = await _pending(http, url, "front")
        assert not call.done() and Safe.ran == []
        async with http.post(f"{url}api/approvals/{approval}/approve", headers=auth) as r:
            assert r.status == 200
            assert (await r.json())["state"] == "approved"
        ok = await call
        assert not ok.is_error, _text(ok)
        assert ok.structured_content == {"result": "opened front"}
        assert Safe.ran == ["front"]

        # Rejected: an MCP tool error with the mesh's code, and the tool never ran.
        call = asyncio.ensure_future(client.call_tool("safe.open", {"door": "back"}))
        approval = await _pending(http, url, "back")
        reject = f"{url}api/approvals/{approval}/reject"
        async with http.post(reject, json={"reason": "not tonight"}, headers=auth) as r:
            assert r.status == 200
            assert (await r.json())["state"] == "rejected"
        refused = await call
        assert refused.is_error
        assert _text(refused).startswith("tool_rejected: ")
        assert "not tonight" in _text(refused)
        assert Safe.ran == ["front"]


async def test_one_trace_across_mcp_and_the_mesh(
    nats_url: str, mesh_prefix: str, subprocess_env: dict[str, str], tmp_path: Path
) -> None:
    """The worker traces to an in-memory exporter (on its own connection); the MCP
    server process exports its spans over OTLP to a receiver in the test."""
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    worker_mesh = await Mesh.connect(nats_url, prefix=mesh_prefix)
    try:
        instrument(worker_mesh, provider)
        async with (
            otlp_collector() as collector,
            running_worker(worker_mesh, Probe),
            mcp_client(subprocess_env, tmp_path, call_timeout=30.0, otlp=collector.url) as client,
        ):
            await _granted(worker_mesh, "alice", "probe.trace")
            meta = cast("RequestParamsMeta", {"traceparent": TRACEPARENT})
            traced = await client.call_tool("probe.trace", {}, meta=meta)
            assert not traced.is_error, _text(traced)
            untraced = await client.call_tool("probe.trace", {})
            assert not untraced.is_error, _text(untraced)

            def consumers() -> list[ReadableSpan]:
                return [
                    s
                    for s in exporter.get_finished_spans()
                    if s.name == "execute_tool probe.trace" and s.kind is SpanKind.CONSUMER
                ]

            def servers() -> list[CollectedSpan]:
                return [s for s in collector.spans if s.name == "tools/call probe.trace"]

            await eventually(lambda: len(consumers()) == 2, what="the worker's two tool spans")
            await eventually(lambda: len(servers()) == 2, what="the MCP server's two spans")
            # The server's spans of the calls (its bus's and ask's) are exported too.
            await eventually(lambda: len(collector.spans) >= 6, what="the server's mesh spans")
            spans, collected = consumers(), list(collector.spans)
    finally:
        await worker_mesh.close()
        provider.shutdown()

    in_trace = [s for s in spans if f"{s.context.trace_id:032x}" == TRACE_ID]
    assert len(in_trace) == 1, "only the call with a traceparent continues the caller's trace"
    (span,) = in_trace
    attrs = span.attributes or {}
    assert attrs["gen_ai.tool.name"] == "probe.trace"
    assert attrs["messaging.operation.type"] == "process"
    # The handler saw the caller's trace too (the context it would pass on).
    assert traced.structured_content["result"].split("-")[1] == TRACE_ID

    # The MCP server's own span: SERVER, the caller's span its parent.
    (server,) = [
        s for s in collected if s.name == "tools/call probe.trace" and s.trace_id == TRACE_ID
    ]
    assert server.kind == 2  # SPAN_KIND_SERVER
    assert server.parent_span_id == CALLER_SPAN
    assert server.service == "actormesh-mcp"
    assert server.attributes["mcp.method.name"] == "tools/call"
    assert server.attributes["gen_ai.tool.name"] == "probe.trace"
    # The worker's span descends from it, through the server's mesh spans.
    by_id = {s.span_id: s for s in collected}
    parent = f"{span.parent.span_id:016x}" if span.parent is not None else ""
    chain = []
    while parent in by_id and parent != server.span_id:
        chain.append(by_id[parent].name)
        parent = by_id[parent].parent_span_id
    assert parent == server.span_id, f"the worker's span is not under the server's: {chain}"
    assert "execute_tool probe.trace" in chain  # the bus's caller-side span

    # A request without trace context: the server's span starts a trace of its own,
    # and the worker's span of that call is in it.
    (root,) = [
        s for s in collected if s.name == "tools/call probe.trace" and s.trace_id != TRACE_ID
    ]
    assert root.parent_span_id == ""
    (other,) = [s for s in spans if f"{s.context.trace_id:032x}" != TRACE_ID]
    assert f"{other.context.trace_id:032x}" == root.trace_id
