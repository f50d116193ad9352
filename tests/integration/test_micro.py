"""Every worker is a NATS micro service: a raw nats-py client discovers the mesh
with `$SRV.PING` / `$SRV.INFO` / `$SRV.STATS`, and a request to an endpoint is
an ask through the durable mailbox."""

from __future__ import annotations

import json
from typing import Any

import pytest

from actormesh import Mesh
from actormesh.testing import eventually, running_worker
from actormesh_counter import Counter, Inc
from tests.actors_tools import Vault

pytestmark = pytest.mark.integration


async def gather_replies(mesh: Mesh, subject: str, wait: float = 1.0) -> list[dict[str, Any]]:
    """Every answer to one request on `subject` (micro services all answer PING)."""
    nc = mesh.nc
    inbox = nc.new_inbox()
    sub = await nc.subscribe(inbox)
    await nc.publish(subject, b"", reply=inbox)
    out = []
    try:
        while True:
            msg = await sub.next_msg(timeout=wait)
            out.append(json.loads(msg.data))
    except Exception:  # noqa: S110 - a timeout ends the collection
        pass
    finally:
        await sub.unsubscribe()
    return out


async def test_ping_info_and_stats_list_every_actor_type(mesh: Mesh) -> None:
    async with running_worker(mesh, Counter) as counter, running_worker(mesh, Vault):
        await mesh.ref(Counter, "k").tell(Inc(by=2))
        pings = await gather_replies(mesh, "$SRV.PING")
        assert {p["name"] for p in pings} >= {"counter", "vault"}
        assert all(p["type"] == "io.nats.micro.v1.ping_response" for p in pings)

        (info,) = await gather_replies(mesh, "$SRV.INFO.vault")
        endpoints = {e["name"]: e for e in info["endpoints"]}
        assert set(endpoints) >= {"deposit", "balance", "audit"}
        deposit = endpoints["deposit"]
        assert deposit["subject"] == mesh.subjects.service_endpoint("vault", "deposit")
        assert deposit["metadata"]["actormesh.tool"] == "vault.deposit"
        schema = json.loads(deposit["metadata"]["actormesh.input_schema"])
        assert schema["type"] == "object" and "amount" in schema["properties"]
        assert info["metadata"]["actormesh.keyed"] == "true"

        await eventually(lambda: counter.handled >= 1)
        (stats,) = await gather_replies(mesh, "$SRV.STATS.counter")
        data = stats["endpoints"][0]["data"]
        assert data["handled"] >= 1 and data["status"] == "running"


async def test_an_endpoint_request_is_an_ask_through_the_mailbox(mesh: Mesh) -> None:
    async with running_worker(mesh, Counter):
        nc = mesh.nc
        inc = mesh.subjects.service_endpoint("counter", "inc")
        get = mesh.subjects.service_endpoint("counter", "get")
        await nc.request(inc, b'{"by": 5}', headers={"Am-Key": "u1"}, timeout=10)
        reply = await nc.request(get, b"{}", headers={"Am-Key": "u1"}, timeout=10)
        assert json.loads(reply.data) == 5
        missing = await nc.request(get, b"{}", timeout=10)
        assert missing.headers is not None and missing.headers.get("Nats-Service-Error-Code")
        bad = await nc.request(get, b"[1]", headers={"Am-Key": "u1"}, timeout=10)
        assert bad.headers is not None
        assert bad.headers.get("Nats-Service-Error-Code") == "bad_message"
