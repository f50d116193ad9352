"""Test support: a real `nats-server` on port 0, and pytest fixtures built on it.

`NATS_URL` in the environment switches the fixtures to an existing server;
each test still gets its own subject prefix, so tests never see each other's
streams. With `ACTORMESH_TEST_DOCKER=1` and testcontainers installed, the
session broker runs in a container instead. `NatsCluster` runs an N-node
JetStream cluster on loopback whose nodes can be killed, restarted and paused.
"""

from .._cluster import NatsCluster
from .._server import NatsServer, ServerConfig
from ._harness import Broker, broker, eventually, running_worker, unique_prefix

__all__ = [
    "Broker",
    "NatsCluster",
    "NatsServer",
    "ServerConfig",
    "broker",
    "eventually",
    "running_worker",
    "unique_prefix",
]
