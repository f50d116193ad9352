"""Least privilege of the compose broker (issue 19), on a real nats-server running
the config `actormesh authz` generates from docker/users.toml and
docker/mesh.compose.toml: for every pair of worker users A != B, A's publishes to
B's mailbox (unless a grant lets A call one of B's tools), to B's heartbeat,
dead-letter and event subjects and to B's approval records, A's subscriptions to B's control
subject and mailbox, and A's attempts to consume B's mailbox are all refused,
counted one by one (the broker's permissions violations, and no PubAck); while each
worker, running under its own user, consumes its mailbox, heartbeats, records its
events and answers its control subject, and the one granted tools of other types
reaches them."""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections import Counter
from pathlib import Path

import msgspec
import nats
import nats.errors
import pytest
from nats.aio.client import Client
from nats.aio.msg import Msg

from actormesh import MailboxConfig, Mesh
from actormesh._subjects import Subjects
from actormesh._tools._authz import ServerSection, UsersFile, compile_config, grants_of, mesh_facts
from actormesh.lowlevel import ensure_mailbox
from actormesh.testing import NatsServer, ServerConfig, eventually
from actormesh_counter import Get, Inc
from tests.integration.test_authz import call_when_ready, url, worker_as

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
MESH_FILE = ROOT / "docker" / "mesh.compose.toml"
USERS_FILE = ROOT / "docker" / "users.toml"
#: The compose worker users and the actor type each runs.
WORKERS = {"counter": "counter", "echo": "echo", "assistant": "assistant", "mcp": "mcp-server"}
#: Those run here as real worker processes (the MCP server has its own test).
RUN = {
    "counter": "actormesh_counter:Counter",
    "echo": "actormesh_echo:EchoService",
    "assistant": "actormesh_assistant:Assistant",
}
#: (user, actor type) pairs the mesh file's [[grants]] open: the assistant's own
#: grants, and the MCP server's token principal `ide`.
GRANTED = {("assistant", "counter"), ("assistant", "echo"), ("mcp", "counter"), ("mcp", "echo")}
EACH = 5  # attempts per refused publish


@pytest.fixture
def env(monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    for user in ("supervisor", *WORKERS, "client"):
        monkeypatch.setenv(f"{user.upper()}_PASSWORD", f"{user}-pw")
    out = dict(os.environ, PYTHONPATH=str(ROOT), ACTORMESH_PREFIX="mesh")
    out.pop("NATS_URL", None)
    return out


def compose_config(tmp: Path) -> Path:
    """docker/nats.conf as `actormesh authz` makes it, but for a test's port and store."""
    users = UsersFile.load(USERS_FILE)
    users = msgspec.structs.replace(
        users, server=ServerSection(http_port=0, store_dir=str(tmp / "js"), sync_always=False)
    )
    compiled = compile_config(users, mesh_facts(MESH_FILE), grants_of(MESH_FILE))
    path = tmp / "nats.conf"
    path.write_text(compiled.text)
    return path


class Attempts:
    """One worker user's connection trying what it must not: each attempt names the
    subject the broker must refuse, and each refusal is counted from its error."""

    def __init__(self, nc: Client, violations: list[str]) -> None:
        self.nc, self.js, self.violations = nc, nc.jetstream(), violations
        self.expected: Counter[str] = Counter()
        self.acked: list[str] = []

    @classmethod
    async def connect(cls, server: NatsServer, user: str) -> Attempts:
        violations: list[str] = []

        async def on_error(exc: Exception) -> None:
            if "permissions violation" in str(exc).lower():
                violations.append(str(exc).lower())

        return cls(await nats.connect(url(server, user), error_cb=on_error), violations)

    async def js_publish(self, subject: str) -> None:
        self.expected[subject] += 1
        try:
            await self.js.publish(subject, b"{}", timeout=2)
        except (nats.errors.TimeoutError, nats.errors.NoRespondersError):
            return
        self.acked.append(subject)

    async def publish(self, subject: str) -> None:
        self.expected[subject] += 1
        await self.nc.publish(subject, b"{}")

    async def request(self, subject: str) -> None:
        self.expected[subject] += 1
        with contextlib.suppress(nats.errors.TimeoutError, nats.errors.NoRespondersError):
            await self.nc.request(subject, b"{}", timeout=1)
            self.acked.append(subject)

    async def subscribe(self, subject: str) -> None:
        self.expected[subject] += 1
        await self.nc.subscribe(subject)

    def refused(self) -> Counter[str]:
        out: Counter[str] = Counter()
        for subject in self.expected:
            needle = f'to "{subject.lower()}"'
            out[subject] = sum(1 for v in self.violations if v.endswith(needle))
        return out


async def try_foreign(a: Attempts, user: str, other: str, other_id: str) -> None:
    """Everything worker user `user` must not do to the worker user `other`."""
    t, s = WORKERS[other], Subjects("mesh")
    ops = []
    if (user, t) not in GRANTED:
        ops += [a.js_publish(s.mailbox(t, "k1")) for _ in range(EACH)]
        ops += [a.request(s.service_endpoint(t, "get")) for _ in range(EACH)]
    ops += [a.publish(s.heartbeat(t, other_id)) for _ in range(EACH)]
    ops += [a.js_publish(s.dlq(t)) for _ in range(EACH)]
    # Record an event as that type (the events stream stores it, so no PubAck either).
    ops += [a.js_publish(s.event("failed", t)) for _ in range(EACH)]
    # Decide the approval its tool calls wait for (records are named by type).
    ops += [a.js_publish(f"$KV.mesh_approvals.{t}.1") for _ in range(EACH)]
    # Answer its control requests, under its type or its id alone.
    ops += [a.subscribe(s.control_of(t, other_id)), a.subscribe(s.control_of(t, "*")),
            a.subscribe(s.control(other_id))]  # fmt: skip
    # Consume its mailbox: read the subjects, make a consumer, pull from its own.
    stream, durable = s.mailbox_stream(t), s.consumer(t)
    ops += [
        a.subscribe(s.mailbox(t, ">")),
        a.request(f"$JS.API.CONSUMER.CREATE.{stream}.spy"),
        a.request(f"$JS.API.CONSUMER.DURABLE.CREATE.{stream}.spy"),
        a.request(f"$JS.API.CONSUMER.MSG.NEXT.{stream}.{durable}"),
    ]
    await asyncio.gather(*ops)


@pytest.mark.timeout(150)
async def test_worker_users_are_refused_each_others_subjects(
    tmp_path: Path, env: dict[str, str]
) -> None:
    conf = compose_config(tmp_path)
    async with contextlib.AsyncExitStack() as stack:
        server = await stack.enter_async_context(NatsServer(ServerConfig(config_file=conf)))
        sup = await Mesh.connect(url(server, "supervisor"), prefix="mesh")
        stack.push_async_callback(sup.close)
        # What the supervisor does at start: the mesh file's grants.
        for grant in grants_of(MESH_FILE).values():
            await sup.tools.grants.grant(grant.principal, *grant.tools)
        beats: dict[str, str] = {}
        started: set[str] = set()

        async def on_hb(msg: Msg) -> None:
            _, _, _, actor_type, worker = msg.subject.split(".")
            beats.setdefault(actor_type, worker)

        async def on_event(msg: Msg) -> None:
            if msg.subject.startswith("mesh.sys.evt.started."):
                started.add(msgspec.json.decode(msg.data)["worker"])

        await sup.nc.subscribe(sup.subjects.heartbeat_all, cb=on_hb)
        await sup.nc.subscribe("mesh.sys.evt.>", cb=on_event)
        for user, target in RUN.items():
            await stack.enter_async_context(worker_as(server, user, target, env, tmp_path))
        # The MCP server's mailbox exists too, so a publish let through would be acked.
        await ensure_mailbox(sup.js, sup.subjects, "mcp-server", MailboxConfig())

        # Each worker's own operations, under its own user: heartbeats, its started
        # event, its control subject; consuming (a plain ask, and the assistant's tool
        # calls to the counter and echo types it is granted).
        await eventually(lambda: set(RUN) <= set(beats) and set(beats.values()) <= started)
        for actor_type in RUN:
            ctl = sup.subjects.control_of(actor_type, beats[actor_type])
            reply = msgspec.json.decode((await sup.nc.request(ctl, b'{"op":"stats"}', 5)).data)
            assert reply["ok"] and reply["op"] == "stats", reply
        client = await Mesh.connect(url(server, "client"), prefix="mesh")
        stack.push_async_callback(client.close)
        await client.ref("counter", "k0").tell(Inc(by=3))
        assert await client.ref("counter", "k0").ask(Get(), timeout=10) == 3
        run = {"task": "count", "key": "k1", "times": 2}
        report = await call_when_ready(client, "assistant.run", run, "client")
        assert isinstance(report, dict) and report["value"] == 2, report
        # A granted type's mailbox is open to the MCP server's user (it calls as `ide`).
        mcp = await Mesh.connect(url(server, "mcp"), prefix="mesh")
        stack.push_async_callback(mcp.close)
        await mcp.ref("counter", "k2").tell(Inc())

        # Every pair of worker users, both ways.
        ids = {**{u: beats[t] for u, t in WORKERS.items() if t in beats}, "mcp": "mcp-1"}
        tries = {u: await Attempts.connect(server, u) for u in WORKERS}
        for a in tries.values():
            stack.push_async_callback(a.nc.close)
        await asyncio.gather(*(
            try_foreign(tries[user], user, other, ids[other])
            for user in WORKERS for other in WORKERS if other != user
        ))  # fmt: skip
        total = sum(sum(a.expected.values()) for a in tries.values())
        # Refusals arrive as errors after the attempts; a missing one is named below.
        with contextlib.suppress(AssertionError):
            await eventually(lambda: sum(len(a.violations) for a in tries.values()) >= total)
        for user, a in tries.items():
            assert a.acked == [], (user, a.acked)
            assert a.refused() == a.expected, (user, a.expected - a.refused())
        refused = sum(sum(a.refused().values()) for a in tries.values())
        # 100% of them: 12 ordered pairs, 27 attempts each (heartbeats, dead letters,
        # events, approvals, control and consuming), and 10 more (mailbox, endpoint)
        # for the 8 pairs without a grant.
        pairs = len(WORKERS) * (len(WORKERS) - 1)
        expected = pairs * (4 * EACH + 7) + (pairs - len(GRANTED)) * 2 * EACH
        assert refused == total == expected == 404
        assert await client.ref("counter", "k2").ask(Get(), timeout=10) == 1
