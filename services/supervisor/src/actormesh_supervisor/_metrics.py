"""/metrics: Prometheus text from the supervisor's state, on its own registry.

A collector reads the state at scrape time, so heartbeats cost nothing extra
whether or not anyone scrapes.
"""

from __future__ import annotations

import time
from collections.abc import Iterable

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from ._snapshot import health_of
from ._supervisor import Supervisor

__all__ = ["metrics_registry", "render"]

_NS = "actormesh_supervisor"


class _SupervisorCollector(Collector):
    def __init__(self, sup: Supervisor) -> None:
        self.sup = sup

    def collect(self) -> Iterable[Metric]:
        sup = self.sup
        now = time.monotonic()
        up = GaugeMetricFamily(f"{_NS}_up", "1 while supervising, 0 when failed or stopping")
        up.add_metric([], 1.0 if sup.status == "running" and not sup.failed else 0.0)
        yield up
        hb = CounterMetricFamily(f"{_NS}_heartbeats", "Heartbeats received")
        hb.add_metric([], sup.heartbeats)
        yield hb
        states = GaugeMetricFamily(
            f"{_NS}_workers", "Supervised workers by state", labels=["state"]
        )
        by_state: dict[str, int] = {}
        for slot in sup.slots.values():
            by_state[slot.state] = by_state.get(slot.state, 0) + 1
        for state, n in sorted(by_state.items()):
            states.add_metric([state], n)
        yield states
        restarts = CounterMetricFamily(
            f"{_NS}_restarts", "Restarts done by the supervisor", labels=["group", "child"]
        )
        for (group, child), n in sorted(sup.restarts_total.items()):
            restarts.add_metric([group, child], n)
        yield restarts
        failures = CounterMetricFamily(
            f"{_NS}_failures", "Failures detected", labels=["group", "child", "cause"]
        )
        for (group, child, cause), n in sorted(sup.failures_total.items()):
            failures.add_metric([group, child, cause], n)
        yield failures
        escalations = CounterMetricFamily(
            f"{_NS}_escalations", 'Escalations (group "" is the supervisor)', labels=["group"]
        )
        for group, n in sorted(sup.escalations_total.items()):
            escalations.add_metric([group], n)
        yield escalations
        failed = GaugeMetricFamily(
            f"{_NS}_group_failed", "1 when a group escalated", labels=["group"]
        )
        for name, g in sup.groups.items():
            failed.add_metric([name], 1.0 if g.failed else 0.0)
        yield failed
        labels = ["worker", "child", "actor_type"]

        def gauge(name: str, doc: str) -> GaugeMetricFamily:
            return GaugeMetricFamily(f"{_NS}_{name}", doc, labels=labels)

        age = gauge("heartbeat_age_seconds", "Seconds since the last heartbeat")
        lag = gauge("loop_lag_seconds", "Event-loop lag the worker reported")
        rate = gauge("worker_throughput", "Messages handled per second")
        flight = gauge("worker_in_flight", "Messages being handled")
        healthy = gauge("worker_healthy", "1 when the worker's health is ok")
        instances = gauge("worker_instances", "Live actor instances (keys) the worker holds")
        passivated = gauge("worker_passivated", "Instances the worker passivated since it started")
        parked = gauge("worker_parked_keys", "Keys the worker holds parked now")
        for worker_id, view in sup.views.items():
            owner = sup.slots.get(worker_id)
            values = [worker_id, view.hb.supervisor_child, view.hb.actor_type]
            age.add_metric(values, view.age(now))
            lag.add_metric(values, view.hb.loop_lag)
            rate.add_metric(values, view.throughput())
            flight.add_metric(values, view.hb.in_flight)
            healthy.add_metric(values, 1.0 if health_of(sup, owner, view, now) == "ok" else 0.0)
            instances.add_metric(values, view.hb.instances)
            passivated.add_metric(values, view.hb.passivated)
            parked.add_metric(values, view.hb.parked)
        yield from (age, lag, rate, flight, healthy, instances, passivated, parked)
        splits = GaugeMetricFamily(
            f"{_NS}_splits",
            "Keyed actor types served by several workers on one partition (see the events)",
        )
        splits.add_metric([], len(sup.splits.splits))
        yield splits
        detected = CounterMetricFamily(f"{_NS}_splits_detected", "Splits reported")
        detected.add_metric([], sup.splits.detected_total)
        yield detected
        if sup.mailboxes is None:
            return
        mb = {
            "depth": "Messages in the mailbox stream",
            "pending": "Messages not yet delivered to a worker",
            "ack_pending": "Messages delivered and not yet acknowledged",
            "redelivered": "Messages redelivered at least once",
            "dead_letters": "Dead letters of the actor type",
            "stalled": "1 while the consumer is stalled",
            "paused": "1 while the consumer is paused (actormesh pause)",
        }
        families = {
            k: GaugeMetricFamily(f"{_NS}_mailbox_{k}", doc, labels=["actor_type"])
            for k, doc in mb.items()
        }
        for mailbox in sup.mailboxes.views.values():
            for key, family in families.items():
                family.add_metric([mailbox.actor_type], float(getattr(mailbox, key)))
        yield from families.values()


def metrics_registry(sup: Supervisor) -> CollectorRegistry:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_SupervisorCollector(sup))
    return registry


def render(registry: CollectorRegistry) -> bytes:
    return generate_latest(registry)
