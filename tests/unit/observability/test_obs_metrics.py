"""WorkerMetrics: outcome counters, handler durations, worker state, mailbox gauges."""

from __future__ import annotations

import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from actormesh import Worker
from actormesh.observability import WorkerMetrics
from tests.unit.observability._obs_stubs import Odd, StubNats, Work, fire

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def scrape(registry: CollectorRegistry) -> Samples:
    out: Samples = {}
    for family in text_string_to_metric_families(generate_latest(registry).decode()):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def value(samples: Samples, name: str, **labels: str) -> float | None:
    return samples.get((name, tuple(sorted(labels.items()))))


@pytest.fixture
def registry() -> CollectorRegistry:
    return CollectorRegistry()


async def test_outcomes_are_counted_by_message_type(
    worker: Worker, registry: CollectorRegistry
) -> None:
    metrics = WorkerMetrics(worker, registry)
    for _ in range(3):
        fire(worker, "handled", obj=Work(), seconds=0.002)
    fire(worker, "failed", obj=Odd(), seconds=0.2)
    fire(worker, "dead_lettered", data=b'{"type":"odd-one"}')  # known tag, by class name
    fire(worker, "expired", data=b'{"type":"Work"}')
    fire(worker, "bad_message", data=b'{"type":"Evil"}')  # not a label value: unknown
    fire(worker, "bad_message", data=b"not json")
    fire(worker, "restarted")
    s = scrape(registry)
    count = "actormesh_messages_total"
    assert value(s, count, actor_type="shop", message_type="Work", outcome="handled") == 3
    assert value(s, count, actor_type="shop", message_type="Odd", outcome="failed") == 1
    assert value(s, count, actor_type="shop", message_type="Odd", outcome="dead_lettered") == 1
    assert value(s, count, actor_type="shop", message_type="Work", outcome="expired") == 1
    assert value(s, count, actor_type="shop", message_type="unknown", outcome="bad_message") == 2
    assert not [k for k in s if k[0] == count and ("outcome", "restarted") in k[1]]
    hist = "actormesh_handler_duration_seconds"
    assert value(s, hist + "_count", actor_type="shop", message_type="Work", outcome="handled") == 3
    assert (
        value(
            s,
            hist + "_bucket",
            actor_type="shop",
            message_type="Work",
            outcome="handled",
            le="0.0025",
        )
        == 3
    )
    assert (
        value(
            s, hist + "_bucket", actor_type="shop", message_type="Odd", outcome="failed", le="0.1"
        )
        == 0
    )
    assert value(
        s, hist + "_sum", actor_type="shop", message_type="Odd", outcome="failed"
    ) == pytest.approx(0.2)
    await metrics.close()


async def test_worker_state_is_read_at_scrape_time(
    worker: Worker, registry: CollectorRegistry
) -> None:
    metrics = WorkerMetrics(worker, registry)
    worker.in_flight = 4
    worker.redelivered = 5
    worker.dead_lettered = 6
    worker.restarts = 7
    worker.loop_lag = 0.25
    s = scrape(registry)
    assert value(s, "actormesh_in_flight_messages", actor_type="shop") == 4
    assert value(s, "actormesh_redeliveries_total", actor_type="shop") == 5
    assert value(s, "actormesh_dead_letters_total", actor_type="shop") == 6
    assert value(s, "actormesh_restarts_total", actor_type="shop") == 7
    assert value(s, "actormesh_event_loop_lag_seconds", actor_type="shop") == 0.25
    assert (
        value(s, "actormesh_worker_info", actor_type="shop", worker=worker.id, version="0.1.0") == 1
    )
    # Not started: the consumer component is degraded, the broker (stub) fine.
    assert value(s, "actormesh_health_status", actor_type="shop", component="broker") == 0
    assert value(s, "actormesh_health_status", actor_type="shop", component="consumer") == 1
    assert value(s, "actormesh_health_status", actor_type="shop", component="worker") == 1
    worker.in_flight = 0
    assert value(scrape(registry), "actormesh_in_flight_messages", actor_type="shop") == 0
    await metrics.close()


async def test_mailbox_gauges_come_from_the_last_poll(
    worker: Worker, registry: CollectorRegistry, nc: StubNats
) -> None:
    metrics = WorkerMetrics(worker, registry, poll_interval=60)
    assert value(scrape(registry), "actormesh_mailbox_messages", actor_type="shop") is None
    nc.js.messages = 12
    assert await metrics.poll_mailbox()
    s = scrape(registry)
    assert value(s, "actormesh_mailbox_messages", actor_type="shop") == 12
    assert value(s, "actormesh_mailbox_bytes", actor_type="shop") == 1200
    assert value(s, "actormesh_consumer_pending_messages", actor_type="shop") == 12
    assert value(s, "actormesh_consumer_ack_pending_messages", actor_type="shop") == 2
    assert value(s, "actormesh_consumer_redelivered_messages", actor_type="shop") == 1
    assert value(s, "actormesh_consumer_waiting_pulls", actor_type="shop") == 1
    # A failed poll hides the gauges rather than showing stale numbers.
    nc.js.fail = True
    assert not await metrics.poll_mailbox()
    assert value(scrape(registry), "actormesh_mailbox_messages", actor_type="shop") is None
    await metrics.close()


async def test_start_polls_and_close_detaches(
    worker: Worker, registry: CollectorRegistry, nc: StubNats
) -> None:
    nc.js.messages = 3
    metrics = WorkerMetrics(worker, registry, poll_interval=60)
    assert metrics in worker.interceptors
    await metrics.start()
    for _ in range(100):  # the first poll runs at once; give the task its turns
        if metrics.mailbox is not None:
            break
        await __import__("asyncio").sleep(0)
    assert metrics.mailbox is not None and metrics.mailbox.messages == 3
    await metrics.close()
    assert metrics not in worker.interceptors
    assert value(scrape(registry), "actormesh_in_flight_messages", actor_type="shop") is None


def test_names_follow_prometheus_conventions(worker: Worker, registry: CollectorRegistry) -> None:
    WorkerMetrics(worker, registry)
    fire(worker, "handled", obj=Work(), seconds=0.01)
    families = list(text_string_to_metric_families(generate_latest(registry).decode()))
    for f in families:
        assert f.name.startswith("actormesh_")
        if f.type == "counter":
            assert all(s.name.endswith(("_total", "_created")) for s in f.samples)
    names = {f.name for f in families}
    assert "actormesh_handler_duration_seconds" in names
