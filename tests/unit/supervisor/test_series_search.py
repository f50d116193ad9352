"""Chart series (bounded ring buffers, rates from heartbeats), the search's pure
parts (payload preview, trace ids, query checks) and the trace-URL option."""

from __future__ import annotations

import sys
from collections import deque
from pathlib import Path
from typing import Any

import msgspec
import pytest

from actormesh import Heartbeat
from actormesh._worker._handling import percentiles
from actormesh.lowlevel import MeshFile, Subjects
from actormesh_supervisor import Supervisor, SupervisorOptions
from actormesh_supervisor._errors import SupervisorConfigError
from actormesh_supervisor._mailboxes import MailboxView
from actormesh_supervisor._search import (
    PREVIEW_BYTES,
    SearchError,
    SearchQuery,
    _checked,
    _filters,
    preview,
    trace_id_of,
)
from actormesh_supervisor._series import CAPACITY, MAX_WORKERS, TYPE_SERIES, Ring, SeriesStore
from actormesh_supervisor._views import WorkerView

TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"


def _sup(tmp_path: Path, **section: Any) -> Supervisor:
    mf = msgspec.convert({"supervisor": section, "groups": []}, MeshFile)
    return Supervisor(
        SupervisorOptions(meshfile=mf, nats_url="nats://127.0.0.1:1", prefix="mesh",
                          runtime_dir=tmp_path, python=sys.executable)
    )  # fmt: skip


def _hb(worker: str, seq: int, handled: int, sent_at: float, **kw: Any) -> Heartbeat:
    fields: dict[str, Any] = dict(
        worker=worker, actor_type="ledger", pid=7, host="h", started_at=1.0, seq=seq,
        in_flight=0, handled=handled, failed=0, dead_lettered=0, restarts=0, version="t",
        status="running", sent_at=sent_at,
    )  # fmt: skip
    fields.update(kw)
    return Heartbeat(**fields)


# -- ring buffers ----------------------------------------------------------------------


def test_a_ring_keeps_exactly_its_capacity_whatever_is_put() -> None:
    ring = Ring(10)
    for s in range(1000, 1100):
        ring.put(s, float(s))
    assert len(ring._values) == 10  # the storage never grows
    assert ring.window(1099, 10) == [float(s) for s in range(1090, 1100)]
    # More than the capacity is never returned; older seconds read as gaps.
    assert ring.window(1099, 50) == [float(s) for s in range(1090, 1100)]
    assert ring.window(1095, 10) == [None] * 4 + [float(s) for s in range(1090, 1096)]


def test_a_ring_blanks_skipped_seconds_and_drops_what_is_too_old() -> None:
    ring = Ring(5)
    for s in range(5):
        ring.put(s, 1.0)
    ring.put(7, 2.0)  # 5 and 6 had no point: gaps, not the values of 0 and 1
    assert ring.window(7, 5) == [1.0, 1.0, None, None, 2.0]
    ring.put(1, 9.0)  # older than the window: dropped
    assert ring.window(7, 5) == [1.0, 1.0, None, None, 2.0]
    ring.put(100, 3.0)  # a jump of more than a lap leaves only the new point
    assert ring.window(100, 5) == [None, None, None, None, 3.0]
    ring.put(99, float("nan"))
    assert ring.window(100, 2) == [None, 3.0]


def test_handler_percentiles_are_nearest_rank() -> None:
    assert percentiles(deque()) == (0.0, 0.0)
    assert percentiles(deque([0.5])) == (0.5, 0.5)
    assert percentiles(deque(float(i) for i in range(1, 101))) == (50.0, 99.0)


# -- the series store ------------------------------------------------------------------


def test_series_rates_come_from_heartbeats_and_hold_between_them(tmp_path: Path) -> None:
    sup = _sup(tmp_path, heartbeat_interval=2.0)
    store = SeriesStore()
    view = WorkerView(_hb("ledger-1", 1, 0, 1000.0), now=0.0)
    sup.views["ledger-1"] = view
    mailbox = MailboxView(actor_type="ledger", stream="S", exists=True, depth=40, ack_pending=3)
    assert sup.mailboxes is None
    sup.mailboxes = type("M", (), {"views": {"ledger": mailbox}})()  # type: ignore[assignment]
    store.sample(sup, 1000.2, 0.1)
    view.update(_hb("ledger-1", 2, 100, 1002.0, failed=4, handler_p50=0.01,
                    handler_p99=0.2), now=2.0)  # fmt: skip
    store.sample(sup, 1001.1, 2.0)
    store.sample(sup, 1002.1, 3.0)  # no new heartbeat: the rate holds
    data = store.view(seconds=3)
    assert data["times"] == [1000, 1001, 1002]
    ledger = data["types"]["ledger"]
    assert set(ledger) == set(TYPE_SERIES)
    assert ledger["handled"] == [0.0, 50.0, 50.0]
    assert ledger["failures"] == [0.0, 2.0, 2.0]
    assert ledger["depth"] == [40.0, 40.0, 40.0]
    assert ledger["ack_pending"] == [3.0, 3.0, 3.0]
    assert ledger["p50"][1] == pytest.approx(0.01)
    assert ledger["p99"][1] == pytest.approx(0.2)
    assert data["workers"]["ledger-1"] == {"actor_type": "ledger", "handled": [0.0, 50.0, 50.0]}
    # A lost worker draws a gap, not its last rate.
    store.sample(sup, 1003.1, 2.0 + sup.dead_after + 1)
    assert store.view(seconds=1)["workers"]["ledger-1"]["handled"] == [None]


def test_series_memory_is_bounded_by_points_types_and_workers(tmp_path: Path) -> None:
    sup = _sup(tmp_path)
    store = SeriesStore()
    for i in range(MAX_WORKERS + 50):
        sup.views[f"w{i}"] = WorkerView(_hb(f"w{i}", 1, 0, 1.0), now=0.0)
    store.sample(sup, 10.0, 0.0)
    assert len(store.workers) == MAX_WORKERS  # past the cap: not charted
    sup.views.clear()
    sup.views["w0"] = WorkerView(_hb("w0", 1, 0, 1.0), now=0.0)
    for s in range(11, 11 + 2 * CAPACITY):
        sup.views["w0"].last_seen = float(s)
        store.sample(sup, float(s), float(s))
    # Everyone not seen for a whole window is forgotten; w0 keeps one ring of 900.
    assert list(store.workers) == ["w0"]
    assert len(store.workers["w0"].handled._values) == CAPACITY
    assert all(len(r._values) == CAPACITY for r in store.types["ledger"].rings.values())
    data = store.view(seconds=10_000)
    assert len(data["times"]) == CAPACITY
    assert len(data["workers"]["w0"]["handled"]) == CAPACITY


def test_an_empty_store_has_no_series() -> None:
    assert SeriesStore().view() == {
        "step": 1, "capacity": CAPACITY, "times": [], "types": {}, "workers": {},
    }  # fmt: skip


# -- search: preview, trace ids, queries -----------------------------------------------


def test_preview_shows_text_and_cuts_it_at_the_limit() -> None:
    assert preview(b'{"id": 1}') == ("text", '{"id": 1}', False)
    enc, text, cut = preview(("é" * PREVIEW_BYTES).encode())
    assert (enc, cut) == ("text", True)
    assert len(text.encode()) <= PREVIEW_BYTES and set(text) == {"é"}


def test_preview_shows_binary_as_a_hex_dump() -> None:
    enc, text, cut = preview(b"\x82\xa4type\xa4Work\x00<script>" + bytes(range(256)) * 20)
    assert (enc, cut) == ("hex", True)
    first = text.splitlines()[0]
    assert first.startswith("00000000  82 a4 74 79 70 65")
    assert first.endswith("|..type.Work.<scr|")
    assert len(text.splitlines()) == PREVIEW_BYTES // 16
    assert preview(b"ok\x07bell")[0] == "hex"  # control characters are not shown raw


def test_trace_id_of_a_traceparent() -> None:
    assert trace_id_of({"traceparent": f"00-{TRACE}-00f067aa0ba902b7-01"}) == TRACE
    assert trace_id_of({"traceparent": f"00-{'0' * 32}-00f067aa0ba902b7-01"}) == ""
    assert trace_id_of({"traceparent": "garbage"}) == ""
    assert trace_id_of({}) == ""


@pytest.mark.parametrize(
    ("query", "message"),
    [
        (SearchQuery(where="mailbox", by="key", value="k"), "needs the actor type"),
        (SearchQuery(where="queue", by="key", value="k", actor_type="a"), "mailbox or dlq"),  # type: ignore[arg-type]
        (SearchQuery(where="dlq", by="body", value="k"), "key, id or seq"),  # type: ignore[arg-type]
        (SearchQuery(where="dlq", by="seq", value="-3"), "whole number"),
        (SearchQuery(where="dlq", by="seq", value="0"), "whole number"),
        (SearchQuery(where="dlq", by="id", value="  "), "something to search"),
        (SearchQuery(where="mailbox", by="key", value="a.>", actor_type="t"), "key"),
        (SearchQuery(where="mailbox", by="id", value="x", actor_type="a.*"), "actor"),
    ],
)
def test_bad_queries_are_refused(query: SearchQuery, message: str) -> None:
    with pytest.raises(SearchError, match=message) as info:
        _checked(query)
    assert info.value.status == 400


def test_search_filters_and_limits() -> None:
    s = Subjects("mesh")
    q = _checked(SearchQuery(where="mailbox", by="key", value="user-42", actor_type="counter",
                             limit=10_000))  # fmt: skip
    assert q.limit == 100
    assert _filters(q, s) == ["mesh.mbox.counter.user-42", "mesh.mbox.counter.*.user-42"]
    q = _checked(SearchQuery(where="mailbox", by="id", value="abc", actor_type="counter"))
    assert _filters(q, s) == ["mesh.mbox.counter.>"]
    assert _filters(_checked(SearchQuery(where="dlq", by="id", value="abc")), s) == ["mesh.dlq.>"]
    q = _checked(SearchQuery(where="dlq", by="key", value="k", actor_type="counter"))
    assert _filters(q, s) == ["mesh.dlq.counter"]


# -- trace links -----------------------------------------------------------------------


def test_the_trace_url_is_checked_and_reaches_the_snapshot(tmp_path: Path) -> None:
    from actormesh_supervisor._snapshot import snapshot

    url = "http://127.0.0.1:16686/trace/{trace_id}"
    assert snapshot(_sup(tmp_path, trace_url=url))["supervisor"]["trace_url"] == url
    assert snapshot(_sup(tmp_path))["supervisor"]["trace_url"] == ""
    for bad in ("javascript:alert(1)//{trace_id}", "http://x/trace", "http://x/{trace_id}/{span}"):
        with pytest.raises(SupervisorConfigError, match="trace_url"):
            _sup(tmp_path, trace_url=bad)


def test_every_asset_the_page_loads_is_packaged_and_served() -> None:
    import re
    from importlib import resources

    from actormesh_supervisor._dashboard import _STATIC, _asset

    html = _asset("index.html").decode()
    loaded = re.findall(r'/static/([^"]+)"', html)
    assert {"vendor/uPlot.iife.min.js", "vendor/uPlot.min.css", "charts.js", "search.js"} <= set(
        loaded
    )
    for name in loaded:
        assert name in _STATIC and _asset(name), name
    vendor = resources.files("actormesh_supervisor").joinpath("_static", "vendor")
    assert "MIT License" in vendor.joinpath("uPlot.LICENSE").read_text()
    assert "(v1.6.32)" in _asset("vendor/uPlot.iife.min.js").decode()[:100]
