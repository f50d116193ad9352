"""docker/observability, for real: Debian's Prometheus and promtool against a real mesh.

- promtool checks prometheus.yml and rules.yml and runs the rules' unit tests
  (rules.test.yml);
- the observability profile of compose.yaml, the Grafana provisioning and the
  dashboard agree with each other and with the mesh's services (paths, ports,
  data source uids, the token secret);
- a real Prometheus, with prometheus.yml's jobs pointed at a running mesh (a
  supervisor process supervising counter and echo worker processes with
  `--metrics-port`) and rules.yml as it is, scrapes every target, the mesh's series
  arrive after some traffic, and every recording rule evaluates;
- every metric name in the Grafana dashboard's queries (and in the rules) is one
  the mesh's /metrics really exposes or a recording rule makes, and every
  dashboard query returns data from that Prometheus.

Prometheus and promtool come from Debian's `prometheus` package: .ci/run installs
it, so in CI (CI set) a missing binary fails; elsewhere these tests skip, saying so.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import shutil
import signal
import subprocess
import time
import tomllib
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from actormesh import Mesh, RemoteError
from actormesh_counter import Counter, Get, Inc
from actormesh_echo import Echo, EchoService, Fail
from tests._net import free_port
from tests.actors_supervisor import TOKEN, SupervisorProcess, meshfile

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
OBS = ROOT / "docker" / "observability"
GRAFANA = OBS / "grafana"
DASHBOARD = GRAFANA / "dashboards" / "actormesh.json"
PROMETHEUS = shutil.which("prometheus")
PROMTOOL = shutil.which("promtool")

MISSING = "Debian's prometheus package is not installed (apt-get install prometheus)"
# Skipped only outside CI: .ci/run installs the package, so there a missing one fails.
needs_prometheus = pytest.mark.skipif(
    (PROMETHEUS is None or PROMTOOL is None) and not os.environ.get("CI"), reason=MISSING
)

#: Dashboard queries over series that exist only once something went wrong (a
#: restart, a failing tool call): the test mesh has none, so they return nothing.
EMPTY_WITHOUT_TROUBLE = {
    "group_child:actormesh_supervisor_restarts:increase10m",
    "tool:actormesh_tool_errors:rate1m",
}


# -- PromQL: the metric names a query reads ---------------------------------------------

_KEYWORDS = {"by", "without", "on", "ignoring", "group_left", "group_right", "bool", "and", "or"}
_KEYWORDS |= {"unless", "offset", "inf", "nan"}


def metric_names(expr: str) -> set[str]:
    """The metric names in a PromQL expression (not functions, labels or keywords)."""
    e = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)  # string literals
    e = re.sub(r"\{[^}]*\}", "", e)  # label matchers
    e = re.sub(r"\[[^\]]*\]", "", e)  # range and subquery windows
    e = re.sub(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", "", e)
    names = set()
    # Not inside a token: `5m` in `offset 5m` is a duration, not a metric `m`.
    for m in re.finditer(r"(?<![\w:.$])[A-Za-z_:][\w:]*", e):
        if e[m.end() :].lstrip().startswith("("):
            continue  # a function or an aggregation
        if m.group().lower() not in _KEYWORDS:
            names.add(m.group())
    return names


def test_metric_names_reads_promql_as_prometheus_does() -> None:
    expr = (
        'histogram_quantile(0.99, sum by (actor_type, le) (rate(a_bucket{x=~"b|c", y="$v"}'
        "[1m]))) / on (actor_type) group_left max without (w) (b:c:rate1m offset 5m) > bool 0"
    )
    assert metric_names(expr) == {"a_bucket", "b:c:rate1m"}
    assert metric_names("sum(rate(x_total[1m] offset 1h)) * 1e3") == {"x_total"}
    assert metric_names('up{job="x"} == 0 and on() vector(1)') == {"up"}


# -- the files ----------------------------------------------------------------------------


def load_yaml(path: Path) -> Any:
    return yaml.safe_load(path.read_text())


def rules() -> list[dict[str, Any]]:
    return [r for g in load_yaml(OBS / "rules.yml")["groups"] for r in g["rules"]]


def recorded() -> set[str]:
    return {r["record"] for r in rules() if "record" in r}


def dashboard() -> dict[str, Any]:
    data: dict[str, Any] = json.loads(DASHBOARD.read_text())
    return data


def dashboard_queries() -> list[str]:
    return [t["expr"] for p in dashboard()["panels"] for t in p.get("targets", [])]


def template_metrics() -> set[str]:
    """Metrics the dashboard's variables read (`label_values(metric, label)`)."""
    out = set()
    for var in dashboard()["templating"]["list"]:
        found = re.fullmatch(r"label_values\((\w+),\s*\w+\)", var["definition"])
        assert found, f"variable {var['name']}: a label_values(metric, label) query"
        out.add(found[1])
    return out


async def run_tool(*argv: str, cwd: Path = OBS) -> str:
    proc = await asyncio.create_subprocess_exec(
        *argv, cwd=cwd, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT
    )
    async with asyncio.timeout(60):
        out, _ = await proc.communicate()
    text = out.decode()
    assert proc.returncode == 0, f"{' '.join(argv)}:\n{text}"
    return text


@needs_prometheus
async def test_promtool_checks_the_config_and_the_rules_and_runs_their_unit_tests() -> None:
    assert PROMTOOL is not None, MISSING
    # The credentials file is the container's secret: only the syntax here; the
    # live test below checks the whole config as the test's Prometheus runs it.
    await run_tool(PROMTOOL, "check", "config", "--syntax-only", "--lint=all", "prometheus.yml")
    out = await run_tool(PROMTOOL, "check", "rules", "--lint=all", "rules.yml")
    assert f"SUCCESS: {len(rules())} rules found" in out
    out = await run_tool(PROMTOOL, "test", "rules", "rules.test.yml")
    assert "SUCCESS" in out


def observability_services() -> dict[str, Any]:
    services: dict[str, Any] = load_yaml(ROOT / "compose.yaml")["services"]
    return {n: s for n, s in services.items() if "observability" in s.get("profiles", [])}


def mounts(service: dict[str, Any]) -> dict[str, Path]:
    """container path -> host path of a service's bind mounts."""
    out = {}
    for volume in service.get("volumes", []):
        host, container, *_ = volume.split(":")
        if host.startswith("./"):
            out[container] = ROOT / host
    return out


def test_the_observability_profile_fits_together() -> None:
    doc = load_yaml(ROOT / "compose.yaml")
    services = doc["services"]
    obs = observability_services()
    assert set(obs) == {"prometheus", "grafana", "jaeger"}
    for svc in obs.values():
        for host in mounts(svc).values():
            assert host.exists(), host
    # Prometheus reads the files of this directory, and the token as a compose secret.
    prom = obs["prometheus"]
    assert mounts(prom)["/etc/prometheus/prometheus.yml"] == OBS / "prometheus.yml"
    assert mounts(prom)["/etc/prometheus/rules.yml"] == OBS / "rules.yml"
    config = load_yaml(OBS / "prometheus.yml")
    assert config["rule_files"] == ["rules.yml"]
    jobs = {j["job_name"]: j for j in config["scrape_configs"]}
    sup_job = jobs["actormesh-supervisor"]
    secret = sup_job["authorization"]["credentials_file"].removeprefix("/run/secrets/")
    assert secret in prom["secrets"]
    assert doc["secrets"][secret] == {"environment": "DASHBOARD_TOKEN"}
    dash_port = compose_dashboard_port()
    assert sup_job["static_configs"][0]["targets"] == [f"supervisor:{dash_port}"]
    # Every worker service serves /metrics where the workers job looks.
    sd = jobs["actormesh-workers"]["dns_sd_configs"][0]
    workers = {n for n, s in services.items() if "--metrics-port" in s.get("command", [])}
    assert set(sd["names"]) == workers and workers >= {"counter", "echo", "assistant"}
    for name in workers:
        command = services[name]["command"]
        assert command[command.index("--metrics-port") + 1] == str(sd["port"])
        assert services[name]["environment"]["ACTORMESH_METRICS_HOST"] == "0.0.0.0"
    # Grafana: the provider loads the mounted dashboards; every uid the dashboard
    # names is a provisioned data source, which points at the profile's services.
    graf = mounts(obs["grafana"])
    assert graf["/etc/grafana/provisioning"] == GRAFANA / "provisioning"
    provider = load_yaml(GRAFANA / "provisioning" / "dashboards" / "actormesh.yml")
    path = provider["providers"][0]["options"]["path"]
    assert graf[path] == DASHBOARD.parent
    sources = load_yaml(GRAFANA / "provisioning" / "datasources" / "actormesh.yml")["datasources"]
    by_uid = {s["uid"]: s for s in sources}
    assert by_uid["prometheus"]["url"] == "http://prometheus:9090"
    assert by_uid["jaeger"]["url"] == "http://jaeger:16686"
    board = dashboard()
    used = {p["datasource"]["uid"] for p in board["panels"]}
    used |= {t["datasource"]["uid"] for p in board["panels"] for t in p["targets"]}
    used |= {v["datasource"]["uid"] for v in board["templating"]["list"]}
    assert used <= set(by_uid)
    ids = [p["id"] for p in board["panels"]]
    assert len(ids) == len(set(ids))


def compose_dashboard_port() -> int:
    with open(ROOT / "docker" / "mesh.compose.toml", "rb") as f:
        port: int = tomllib.load(f)["supervisor"]["dashboard_port"]
    return port


def test_the_dashboard_charts_recording_rules_not_raw_rates() -> None:
    """The rules read the mesh's metrics or each other (the live test compares the
    names with what /metrics exposes); the dashboard's rates come from the rules."""
    names = recorded()
    for rule in rules():
        for name in metric_names(rule["expr"]):
            assert name.startswith(("actormesh_", "up")) or name in names, (rule, name)
    for expr in dashboard_queries():
        assert "rate(" not in expr, f"{expr}: chart a recording rule, not a raw rate"


# -- the live mesh --------------------------------------------------------------------


async def eventually(what: str, check: Callable[[], Awaitable[Any]], timeout: float = 45) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        if found := await check():
            return found
        assert time.monotonic() < deadline, f"{what}: not reached in {timeout} s"
        await asyncio.sleep(0.25)


async def until_none(what: str, check: Callable[[], Awaitable[Any]], timeout: float = 45) -> None:
    """Wait until `check()` returns None; it returns what it saw otherwise, for the
    message if time runs out."""
    deadline = time.monotonic() + timeout
    while (seen := await check()) is not None:
        assert time.monotonic() < deadline, f"{what}: not reached in {timeout} s: {seen}"
        await asyncio.sleep(0.25)


class PromAPI:
    def __init__(self, http: aiohttp.ClientSession, base: str) -> None:
        self.http, self.base = http, base

    async def get(self, path: str, **params: str) -> Any:
        async with self.http.get(self.base + path, params=params) as r:
            body = await r.json()
            assert r.status == 200 and body["status"] == "success", body
            return body["data"]

    async def query(self, expr: str) -> list[dict[str, Any]]:
        data = await self.get("/api/v1/query", query=expr)
        result: list[dict[str, Any]] = data["result"]
        return result

    async def value(self, expr: str) -> float | None:
        result = await self.query(expr)
        return float(result[0]["value"][1]) if result else None


def scrape_config_for(supervisor: str, workers: list[str], token_file: Path) -> dict[str, Any]:
    """prometheus.yml with its jobs' targets moved to the test's mesh, 1 s intervals."""
    config = load_yaml(OBS / "prometheus.yml")
    config["global"].update(scrape_interval="1s", evaluation_interval="1s")
    config["rule_files"] = [str(OBS / "rules.yml")]
    for job in config["scrape_configs"]:
        if job["job_name"] == "actormesh-supervisor":
            job["authorization"]["credentials_file"] = str(token_file)
            job["static_configs"] = [{"targets": [supervisor]}]
        else:
            assert job["job_name"] == "actormesh-workers"
            # DNS service discovery and its relabelling are the compose network's.
            del job["dns_sd_configs"], job["relabel_configs"]
            job["static_configs"] = [{"targets": workers}]
    return config  # type: ignore[no-any-return]


@contextlib.asynccontextmanager
async def prometheus(tmp_path: Path, config: dict[str, Any]) -> AsyncIterator[str]:
    assert PROMETHEUS is not None and PROMTOOL is not None, MISSING
    path = tmp_path / "prometheus.yml"
    path.write_text(yaml.safe_dump(config))
    await run_tool(PROMTOOL, "check", "config", "--lint=all", str(path))
    port = free_port()  # Prometheus cannot listen on port 0
    log = tmp_path / "prometheus.log"
    with log.open("wb") as out:
        proc = await asyncio.create_subprocess_exec(
            PROMETHEUS, f"--config.file={path}", f"--storage.tsdb.path={tmp_path / 'tsdb'}",
            f"--web.listen-address=127.0.0.1:{port}", "--log.level=warn",
            stdout=out, stderr=subprocess.STDOUT,
        )  # fmt: skip
    base = f"http://127.0.0.1:{port}"
    try:
        async with aiohttp.ClientSession() as http:

            async def is_ready() -> bool:
                assert proc.returncode is None, log.read_text()
                with contextlib.suppress(aiohttp.ClientError):
                    async with http.get(base + "/-/ready") as r:
                        return r.status == 200
                return False

            await eventually("Prometheus ready", is_ready, 30)
        yield base
    finally:
        if proc.returncode is None:
            proc.send_signal(signal.SIGTERM)
            try:
                async with asyncio.timeout(20):
                    await proc.wait()
            except TimeoutError:
                proc.kill()
                await proc.wait()


async def traffic(mesh: Mesh, round_: int) -> None:
    """Handled, failed and bad messages, asks and tool calls, to counter and echo."""
    echo = mesh.ref(EchoService)
    for i in range(50):
        await mesh.ref(Counter, f"k{i % 5}").tell(Inc(by=1))
    assert await mesh.ref(Counter, f"fresh-{round_}").ask(Get(), timeout=20) == 0
    for i in range(10):
        await echo.ask(Echo(text=f"hi {i}"), timeout=20)
    with pytest.raises(RemoteError):
        await echo.ask(Fail(reason="for the failure rate"), timeout=20)
    await echo.tell(b'{"type": "NoSuchMessage"}')
    for _ in range(5):
        await mesh.tools.call("counter.add", {"key": "tool-key"}, principal="tester", timeout=20)


async def scrape(http: aiohttp.ClientSession, url: str) -> set[str]:
    """The series names a /metrics endpoint exposes: its samples', and those its
    declared families make once they have samples (a counter no error moved yet)."""
    async with http.get(url, headers={"Authorization": f"Bearer {TOKEN}"}) as r:
        assert r.status == 200
        text = await r.text()
    names = set()
    for family in text_string_to_metric_families(text):
        names |= {s.name for s in family.samples}
        names |= {family.name + suffix for suffix in _SUFFIXES.get(family.type, ("",))}
    return names


_SUFFIXES = {
    "counter": ("_total",),
    "histogram": ("_bucket", "_count", "_sum"),
    "summary": ("_count", "_sum"),
    "info": ("_info",),
}


@needs_prometheus
@pytest.mark.timeout(120)  # a supervisor, two workers and Prometheus; rates need scrapes
async def test_prometheus_scrapes_the_mesh_and_evaluates_the_rules(
    nats_url: str, mesh_prefix: str, mesh: Mesh, tmp_path: Path
) -> None:
    ports = {"counter": free_port(), "echo": free_port()}
    groups = [
        {
            "name": "examples",
            "children": [
                {"name": "counter", "actor": "actormesh_counter:Counter",
                 "args": ["--metrics-port", str(ports["counter"])]},
                {"name": "echo", "actor": "actormesh_echo:EchoService",
                 "args": ["--metrics-port", str(ports["echo"])]},
            ],
        }
    ]  # fmt: skip
    sup = SupervisorProcess(
        tmp_path, meshfile(mesh_prefix, groups), nats_url, mesh_prefix, name="sup"
    )
    await sup.start(ACTORMESH_METRICS_POLL_INTERVAL="1")
    try:
        await _with_supervisor(sup, ports, mesh, tmp_path)
    finally:
        with contextlib.suppress(ProcessLookupError):
            await sup.terminate()


async def _with_supervisor(
    sup: SupervisorProcess, ports: dict[str, int], mesh: Mesh, tmp_path: Path
) -> None:
    async def running() -> bool:
        workers = (await sup.state())["workers"]
        return len(workers) == 2 and all(w["health"] == "ok" for w in workers)

    await eventually("two workers running", running)
    await mesh.tools.grants.grant("tester", "counter.add")
    token_file = tmp_path / "token"
    token_file.write_text(TOKEN)
    workers = [f"127.0.0.1:{p}" for p in ports.values()]
    supervisor = sup.url.removeprefix("http://").rstrip("/")
    config = scrape_config_for(supervisor, workers, token_file)
    async with prometheus(tmp_path, config) as base, aiohttp.ClientSession() as http:
        api = PromAPI(http, base)
        await check_targets_and_series(api, mesh)
        await check_rules(api)
        exported = await scrape(http, sup.url + "metrics")
        for p in ports.values():
            exported |= await scrape(http, f"http://127.0.0.1:{p}/metrics")
        await check_dashboard(api, exported)


async def check_targets_and_series(api: PromAPI, mesh: Mesh) -> None:
    async def all_up() -> bool:
        targets = (await api.get("/api/v1/targets"))["activeTargets"]
        return len(targets) == 3 and all(t["health"] == "up" for t in targets)

    await eventually("every target up", all_up)
    jobs = {t["labels"]["job"] for t in (await api.get("/api/v1/targets"))["activeTargets"]}
    assert jobs == {"actormesh-supervisor", "actormesh-workers"}

    # A counter's first scrape is its baseline: traffic before it is not a rate.
    await traffic(mesh, 1)
    # Per round: 50 tells, an ask and five tool calls handled by counter, one failed
    # ask and one bad message at echo.
    counts = {
        'sum(actormesh_messages_total{actor_type="counter",outcome="handled"})': 56,
        'sum(actormesh_messages_total{actor_type="echo",outcome="failed"})': 1,
        'sum(actormesh_messages_total{actor_type="echo",outcome="bad_message"})': 1,
        'sum(actormesh_tool_calls_total{tool="counter.add"})': 5,
    }

    def arrived(rounds: int) -> Callable[[], Awaitable[dict[str, float | None] | None]]:
        async def check() -> dict[str, float | None] | None:
            got = {expr: await api.value(expr) for expr in counts}
            done = all(got[e] == n * rounds for e, n in counts.items())
            return None if done else got

        return check

    await until_none(f"the first round's counts {counts}", arrived(1))
    await traffic(mesh, 2)
    await until_none(f"the second round's counts {counts}", arrived(2))
    # The supervisor's view of the same mesh.
    assert await api.value('actormesh_supervisor_workers{state="running"}') == 2
    depth = await api.query("actormesh_supervisor_mailbox_depth")
    assert {r["metric"]["actor_type"] for r in depth} >= {"counter", "echo"}


async def check_rules(api: PromAPI) -> None:
    async def evaluated() -> list[dict[str, Any]] | None:
        found = [r for g in (await api.get("/api/v1/rules"))["groups"] for r in g["rules"]]
        return found if all(r["health"] == "ok" for r in found) else None

    found = await eventually("every rule evaluated", evaluated)
    assert {r["name"] for r in found if r["type"] == "recording"} == recorded()
    assert all(not r.get("lastError") for r in found)

    recorded_rates = [
        'actor_type:actormesh_messages_handled:rate1m{actor_type="counter"}',
        'actor_type:actormesh_messages_failed:rate1m{actor_type="echo"}',
        'tool:actormesh_tool_calls:rate1m{tool="counter.add"}',
    ]

    async def rates() -> dict[str, float | None] | None:
        got = {expr: await api.value(expr) for expr in recorded_rates}
        return None if all(v is not None and v > 0 for v in got.values()) else got

    await until_none("the recorded rates above zero", rates)
    p50 = await api.value(
        'actor_type:actormesh_handler_duration_seconds:p50_rate1m{actor_type="counter"}'
    )
    p99 = await api.value(
        'actor_type:actormesh_handler_duration_seconds:p99_rate1m{actor_type="counter"}'
    )
    assert p50 is not None and p99 is not None and 0 < p50 <= p99 < 300
    healthy = await api.value(
        'actor_type:actormesh_supervisor_worker_healthy:sum{actor_type="echo"}'
    )
    assert healthy == 1


async def check_dashboard(api: PromAPI, exported: set[str]) -> None:
    known = exported | recorded() | {"up"}  # `up` is Prometheus's own, per target
    for rule in rules():
        assert metric_names(rule["expr"]) <= known, rule
    assert template_metrics() <= exported
    for expr in dashboard_queries():
        missing = metric_names(expr) - known
        assert not missing, f"{expr}: the mesh exports no {sorted(missing)}"
        result = await api.query(expr.replace("$actor_type", ".*"))
        if metric_names(expr) <= EMPTY_WITHOUT_TROUBLE:
            continue
        assert result, f"{expr}: no data from the running mesh"
