"""WorkerMetrics shows the keys a worker holds: live instances, passivations, parked keys;
and the heartbeat and `stats` carry the same figures."""

from __future__ import annotations

from prometheus_client import CollectorRegistry

from actormesh import Worker
from actormesh.observability import WorkerMetrics
from tests.unit.observability.test_obs_metrics import scrape, value


async def test_instances_passivations_and_parked_keys_are_read_at_scrape_time(
    worker: Worker,
) -> None:
    registry = CollectorRegistry()
    metrics = WorkerMetrics(worker, registry)
    worker.passivated = 9
    worker.parked = 2
    s = scrape(registry)
    assert value(s, "actormesh_actor_instances", actor_type="shop") == 0
    assert value(s, "actormesh_passivations_total", actor_type="shop") == 9
    assert value(s, "actormesh_parked_keys", actor_type="shop") == 2
    worker.parked = 0
    assert value(scrape(registry), "actormesh_parked_keys", actor_type="shop") == 0
    await metrics.close()


def test_heartbeat_and_stats_say_what_the_worker_serves(worker: Worker) -> None:
    worker.passivated = 3
    worker.parked = 1
    hb = worker.heartbeat()
    stats = worker.stats()
    keyed = not worker.spec.keyless
    assert (hb.keyed, hb.instances, hb.passivated, hb.parked) == (keyed, 0, 3, 1)
    assert (stats.keyed, stats.instances, stats.passivated, stats.parked) == (keyed, 0, 3, 1)
    assert hb.partition == -1
