"""Issue 18's network-cut chaos test: the failover test with a network cut
instead of a signal. Each of three nats-server nodes runs in a network
namespace of its own, joined by veth pairs to a bridge in a fourth, the hub,
where the sender and the worker process run (`_netcut_driver`). The mailbox
leader's link is cut for 10 s, then healed. Every acked tell's effect is there
exactly once, the poison message sent during the cut is dead-lettered, no
sender sees `NoSuchActorType`, and the time from the cut to the next acked
tell is printed. Only private addresses inside those namespaces are used.

Needs root and iproute2 (network namespaces): skipped otherwise, with the reason.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import AsyncExitStack
from dataclasses import dataclass
from pathlib import Path

import pytest
import pytest_asyncio

from actormesh._server import NatsServer, ServerConfig, find_nats_server
from actormesh.testing import unique_prefix

pytestmark = [pytest.mark.chaos, pytest.mark.timeout(120)]

ROOT = Path(__file__).resolve().parents[2]
NODES = 3
SUBNET = "10.218.0"  # private, and only ever inside the test's namespaces


def ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True)  # noqa: S607


def netns_unavailable() -> str:
    """Why this machine cannot run the test ("" if it can)."""
    if os.geteuid() != 0:
        return "network namespaces need root (the test is not running as root)"
    if shutil.which("ip") is None:
        return "iproute2's `ip` is not installed"
    probe = f"amprobe{uuid.uuid4().hex[:6]}"
    try:
        ip("netns", "add", probe)
    except subprocess.CalledProcessError as exc:
        return f"cannot create a network namespace: {exc.stderr.decode().strip()}"
    ip("netns", "del", probe)
    return ""


@dataclass
class Net:
    hub: str
    nodes: list[str]  # namespace per node
    hub_links: list[str]  # each node's veth end on the hub's bridge
    addrs: list[str]


@pytest.fixture
def net() -> Iterator[Net]:
    reason = netns_unavailable()
    if reason:
        pytest.skip(reason)
    sfx = uuid.uuid4().hex[:6]
    hub = f"am{sfx}hub"
    made = [hub]
    ip("netns", "add", hub)
    try:
        ip("-n", hub, "link", "set", "lo", "up")
        ip("-n", hub, "link", "add", "br0", "type", "bridge")
        ip("-n", hub, "addr", "add", f"{SUBNET}.1/24", "dev", "br0")
        ip("-n", hub, "link", "set", "br0", "up")
        nodes, links, addrs = [], [], []
        for i in range(1, NODES + 1):
            ns, h, p = f"am{sfx}n{i}", f"am{sfx}h{i}", f"am{sfx}p{i}"
            ip("netns", "add", ns)
            made.append(ns)
            ip("link", "add", h, "netns", hub, "type", "veth", "peer", "name", p, "netns", ns)
            ip("-n", hub, "link", "set", h, "master", "br0")
            ip("-n", hub, "link", "set", h, "up")
            ip("-n", ns, "addr", "add", f"{SUBNET}.1{i}/24", "dev", p)
            ip("-n", ns, "link", "set", p, "up")
            ip("-n", ns, "link", "set", "lo", "up")
            nodes.append(ns)
            links.append(h)
            addrs.append(f"{SUBNET}.1{i}")
        yield Net(hub=hub, nodes=nodes, hub_links=links, addrs=addrs)
    finally:
        for ns in reversed(made):  # deleting a namespace deletes its links
            subprocess.run(["ip", "netns", "del", ns], check=False, capture_output=True)  # noqa: S607


@pytest_asyncio.fixture
async def servers(net: Net, tmp_path: Path) -> AsyncIterator[list[NatsServer]]:
    binary = find_nats_server()
    async with AsyncExitStack() as stack:
        nodes = []
        for i, (ns, addr) in enumerate(zip(net.nodes, net.addrs, strict=True), start=1):
            wrapper = tmp_path / f"nats-n{i}.sh"
            wrapper.write_text(f'#!/bin/sh\nexec ip netns exec {ns} {binary} "$@"\n')
            wrapper.chmod(0o755)
            others = tuple(f"nats-route://{a}:6222" for a in net.addrs if a != addr)
            config = ServerConfig(
                host=addr, port=4222, store_dir=tmp_path / f"n{i}", server_name=f"n{i}",
                cluster_name="netcut", cluster_port=6222, routes=others,
            )  # fmt: skip
            nodes.append(NatsServer(config, binary=str(wrapper)))
        await asyncio.gather(*(n.start() for n in nodes))
        for n in nodes:
            stack.push_async_callback(n.stop)
        yield nodes


async def test_a_node_cut_off_for_10s_loses_nothing(net: Net, servers: list[NatsServer]) -> None:
    url = ",".join(s.url for s in servers)
    proc = await asyncio.create_subprocess_exec(
        "ip", "netns", "exec", net.hub, sys.executable, "-m", "tests.chaos._netcut_driver",
        "--url", url, "--prefix", unique_prefix(), "--names", "n1,n2,n3",
        "--veths", ",".join(net.hub_links), "--cut", "10",
        cwd=ROOT, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    try:
        out, err = await asyncio.wait_for(proc.communicate(), 100)
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    assert proc.returncode == 0, err.decode()[-3000:]
    r = json.loads(out.decode().strip().splitlines()[-1])
    print(
        f"\nnetwork cut of the mailbox leader {r['cut_leader']} for 10 s: {r['sent']} tells "
        f"({r['acked']} acked), sender retries {r['retries']}; cut to next acked tell "
        f"{r['recovery_s'] if r['recovery_s'] is None else round(r['recovery_s'], 2)}s"
    )
    assert r["replicas"] == 3
    assert r["wrong"] == []  # never NoSuchActorType while the stream exists
    assert r["acked"] == r["sent"]
    assert r["totals"] == {k: r["expected"].get(k, 0) for k in r["totals"]}
    assert r["dead_letters"] == ["ValueError"]
