"""compose.yaml and the broker's permissions.

No Docker engine runs on our machines, so the containers themselves are not
started here. What is tested: compose.yaml against the Compose Specification
schema, its references to files and users, and docker/nats.conf run by a real
nats-server, with a real worker and client under their own users.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import jsonschema
import nats
import nats.errors
import pytest
import yaml

from actormesh import Mesh
from actormesh._meshfile import load
from actormesh.testing import NatsServer, ServerConfig

ROOT = Path(__file__).resolve().parents[2]
PASSWORDS = {
    "SUPERVISOR_PASSWORD": "sup-pw",
    "COUNTER_PASSWORD": "counter-pw",
    "ECHO_PASSWORD": "echo-pw",
    "CLIENT_PASSWORD": "client-pw",
    "ASSISTANT_PASSWORD": "assistant-pw",
    "MCP_PASSWORD": "mcp-pw",
}


def compose() -> dict[str, object]:
    return yaml.safe_load((ROOT / "compose.yaml").read_text())  # type: ignore[no-any-return]


def test_compose_file_is_valid_against_the_compose_spec() -> None:
    schema = json.loads((ROOT / "tests" / "data" / "compose-spec.json").read_text())
    # The spec is draft-07 (its $schema URL lacks the '#' jsonschema looks up).
    jsonschema.Draft7Validator(schema).validate(compose())


def test_compose_services_reference_real_files_users_and_actors() -> None:
    doc = compose()
    services = doc["services"]  # type: ignore[index]
    assert set(services) >= {"nats", "supervisor", "counter", "echo"}
    conf = (ROOT / "docker" / "nats.conf").read_text()
    users = set(re.findall(r"user: (\w+)", conf))
    for name, svc in services.items():
        url = svc.get("environment", {}).get("NATS_URL")
        if url:
            user = url.split("//", 1)[1].split(":", 1)[0]
            assert user in users, f"{name} connects as {user}, which nats.conf lacks"
    for svc in ("counter", "echo"):
        target = services[svc]["command"][2]
        module, cls = target.split(":")
        assert getattr(__import__(module), cls)
    assert (ROOT / "docker" / "Dockerfile").exists()
    mf = load(ROOT / "docker" / "mesh.compose.toml")
    assert mf.supervisor.backend == "docker"


def test_compose_runs_the_mcp_server_on_loopback() -> None:
    """The `mcp` service: `actormesh mcp --http` as the broker user `mcp`, its tokens
    from the mesh file's [mcp] section, published on the host's loopback only, and
    the supervisor's child of the same name (the container it restarts)."""
    mcp = compose()["services"]["mcp"]  # type: ignore[index]
    argv = mcp["command"]
    assert argv[:3] == ["actormesh", "mcp", "--http"]
    assert argv[argv.index("--config") + 1] == "/app/mesh.compose.toml"
    assert mcp["ports"] == ["127.0.0.1:8790:8790"]
    assert mcp["labels"]["io.actormesh.child"] == "mcp"
    assert mcp["environment"]["NATS_URL"].startswith("nats://mcp:")
    mf = load(ROOT / "docker" / "mesh.compose.toml")
    assert "mcp" in [c.name for _, c in mf.children()]
    assert mf.mcp.tokens_file == "/data/mcp-tokens.toml"
    assert any(v.startswith("mcp-data:/data") for v in mcp["volumes"])
    # Its principal's grants are in the mesh file, and its broker user may call them.
    assert any(g.principal == "ide" for g in mf.grants)
    conf = (ROOT / "docker" / "nats.conf").read_text()
    assert "user: mcp," in conf


def spawn(argv: list[str], env: dict[str, str], log: object) -> subprocess.Popen[bytes]:
    return subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL, stderr=log)  # type: ignore[arg-type]


@pytest.fixture
async def permissioned_broker(tmp_path: Path) -> object:
    conf = (ROOT / "docker" / "nats.conf").read_text()
    conf = conf.replace('store_dir: "/data"', f'store_dir: "{tmp_path / "js"}"')
    conf = re.sub(r"http_port: \d+", "", conf)
    path = tmp_path / "nats.conf"
    path.write_text(conf)
    old = {k: os.environ.get(k) for k in PASSWORDS}
    os.environ.update(PASSWORDS)  # the config reads passwords from the environment
    try:
        async with NatsServer(ServerConfig(config_file=path)) as server:
            yield server
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


@pytest.mark.integration
async def test_workers_and_clients_run_with_least_privilege(
    permissioned_broker: NatsServer, tmp_path: Path
) -> None:
    port = permissioned_broker.port
    env = dict(
        os.environ,
        NATS_URL=f"nats://counter:counter-pw@127.0.0.1:{port}",
        ACTORMESH_PREFIX="mesh",
        PYTHONPATH=str(ROOT),
    )
    log = (tmp_path / "worker.log").open("wb")
    worker = spawn(
        [sys.executable, "-m", "actormesh", "worker", "actormesh_counter:Counter"], env, log
    )
    client = await Mesh.connect(f"nats://client:client-pw@127.0.0.1:{port}", prefix="mesh")
    try:
        ref = client.ref("counter", "user-42")
        for _ in range(100):
            try:
                await ref.tell(b'{"type":"Inc","by":2}')
                break
            except Exception:
                await asyncio.sleep(0.1)
        assert await ref.ask(b'{"type":"Get"}', timeout=5) == 2

        # The client may not manage streams.
        with pytest.raises((nats.errors.TimeoutError, nats.errors.NoRespondersError)):
            await client.nc.request("$JS.API.STREAM.DELETE.MESH_MBOX_COUNTER", b"", timeout=1)
        sup = await nats.connect(f"nats://supervisor:sup-pw@127.0.0.1:{port}")
        info = await sup.jetstream().stream_info("MESH_MBOX_COUNTER")
        assert info.config.name == "MESH_MBOX_COUNTER"
        await sup.close()

        # The counter worker's user may not act for another actor type.
        nc = await nats.connect(f"nats://counter:counter-pw@127.0.0.1:{port}")
        with pytest.raises((nats.errors.TimeoutError, nats.errors.NoRespondersError)):
            await nc.request("$JS.API.STREAM.INFO.MESH_MBOX_ECHO", b"", timeout=1)
        await nc.close()
        assert worker.poll() is None
    finally:
        await client.close()
        worker.terminate()
        await asyncio.to_thread(worker.wait, 30)
        log.close()
