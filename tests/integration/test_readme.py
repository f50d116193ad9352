"""The README's shell snippets, run exactly as written against a mesh started as
`make up` starts it.

The convention (also in a comment at the top of README.md): every fenced block
marked sh, bash or console runs, in README order, against one mesh. A sh/bash
block runs as one bash script that must exit 0. In a console block each `$ `
line is a command and the lines under it are its output: an output starting with
`actormesh: error:` means exit status 1 with that message on stderr (a trailing
` ...` matches any rest); any other output must be what the command prints (`...`
matches anything; JSON is compared as JSON, as the README wraps it). An HTML
comment on the line above a fence can say `readme-test: not run: <reason>` or
`readme-test: operator approves` (the test approves the call through the
dashboard's API while it waits, and compares its output with the next json block).

The mesh: `uv run actormesh up`, as `make up` runs it, from a directory standing
in for the repository root (its own `.actormesh/` and a copy of `docker/`, which
the authz snippet writes to), with the repository's mesh.toml moved to free
ports. The snippets run there with `UV_PROJECT` naming the repository (uv
would find it from the root itself), `UV_FROZEN=1` (as make runs uv: the test
never rewrites uv.lock), `NATS_URL` naming the mesh's broker (its port is not
4222), and a PATH that has uv but not the workspace's `.venv/bin`, as a new
shell has.
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
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from actormesh import Mesh
from tests._net import free_port

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
README = ROOT / "README.md"
SHELL = frozenset({"sh", "bash", "console"})
MARKER = re.compile(r"^<!-- readme-test: (.*?) -->$")
NOT_RUN = "not run:"
APPROVES = "operator approves"
ERROR = "actormesh: error:"
#: What the mesh of mesh.toml publishes once all its workers are up.
TOOLS = {
    "assistant.run",
    "assistant.reset",
    "counter.add",
    "counter.read",
    "counter.clear",
    "echo.say",
}


@dataclass(frozen=True, kw_only=True)
class Block:
    line: int  # of the opening fence, 1-based
    lang: str
    text: str
    marker: str = ""

    @property
    def runs(self) -> bool:
        return not self.marker.startswith(NOT_RUN)


@dataclass(kw_only=True)
class Command:
    line: str
    output: list[str] = field(default_factory=list)


def blocks(markdown: str) -> list[Block]:
    """The fenced blocks, with the marker comment just above each, if any."""
    lines = markdown.splitlines()
    out: list[Block] = []
    i = 0
    while i < len(lines):
        fence = lines[i]
        if not fence.startswith("```"):
            i += 1
            continue
        info = fence[3:].strip().split()
        end = i + 1
        while end < len(lines) and lines[end] != "```":
            end += 1
        found = MARKER.match(lines[i - 1]) if i else None
        out.append(
            Block(
                line=i + 1,
                lang=info[0] if info else "",
                text="\n".join(lines[i + 1 : end]),
                marker=found.group(1) if found else "",
            )
        )
        i = end + 1
    return out


def shell_blocks() -> list[Block]:
    return [b for b in blocks(README.read_text()) if b.lang in SHELL]


def console_commands(block: Block) -> list[Command]:
    commands: list[Command] = []
    for line in block.text.splitlines():
        if line.startswith("$ "):
            commands.append(Command(line=line[2:]))
        elif line.strip():
            assert commands, f"README.md:{block.line}: output before any `$ ` command"
            commands[-1].output.append(line)
    return commands


def next_json_block(block: Block) -> str:
    later = [b for b in blocks(README.read_text()) if b.line > block.line and b.lang == "json"]
    assert later, f"README.md:{block.line}: no json block after it to compare with"
    return later[0].text


# -- comparing what a command printed with what the README shows -----------------------

WILDCARD = "..."


def _as_json(text: str) -> Any:
    # `[...]` elides a list in the README's JSON; a wildcard string stands in for it.
    return json.loads(text.replace("[...]", json.dumps(WILDCARD)))


def json_matches(expected: Any, actual: Any) -> bool:
    if expected == WILDCARD:
        return True
    if isinstance(expected, dict):
        return (
            isinstance(actual, dict)
            and expected.keys() == actual.keys()
            and all(json_matches(v, actual[k]) for k, v in expected.items())
        )
    if isinstance(expected, list):
        return (
            isinstance(actual, list)
            and len(expected) == len(actual)
            and all(json_matches(e, a) for e, a in zip(expected, actual, strict=True))
        )
    return bool(expected == actual and type(expected) is type(actual))


def text_matches(expected: str, actual: str) -> bool:
    pattern = ".*".join(re.escape(part) for part in expected.split(WILDCARD))
    return re.fullmatch(pattern, actual, re.DOTALL) is not None


def output_matches(expected: list[str], stdout: str) -> bool:
    text = "\n".join(expected)
    try:
        want = _as_json(text)
    except ValueError:
        return text_matches(text, stdout.strip())
    try:
        got = json.loads(stdout)
    except ValueError:
        return False
    return json_matches(want, got)


def error_matches(expected: list[str], stderr: str) -> bool:
    want = " ".join(expected)
    got = stderr.strip()
    if want.endswith(" " + WILDCARD):
        return got.startswith(want[: -len(WILDCARD)].rstrip())
    return got == want


# -- checks of the README alone ------------------------------------------------------


def test_every_shell_block_runs_or_says_why_not() -> None:
    found = shell_blocks()
    assert len([b for b in found if b.runs]) >= 5, "the README's runnable snippets went missing"
    for b in found:
        if b.marker.startswith(NOT_RUN):
            assert b.marker[len(NOT_RUN) :].strip(), f"README.md:{b.line}: give the reason"
        else:
            assert b.marker in ("", APPROVES), f"README.md:{b.line}: unknown marker {b.marker!r}"
        if b.marker == APPROVES:
            assert b.lang == "console" and len(console_commands(b)) == 1, f"README.md:{b.line}"


def test_no_snippet_needs_the_venv_on_path() -> None:
    """A new shell does not have `.venv/bin` on its PATH: `uv run actormesh`."""
    for b in shell_blocks():
        for raw in b.text.splitlines():
            line = raw.removeprefix("$ ").strip()
            assert not line.startswith(("actormesh ", "export PATH")), (
                f"README.md:{b.line}: {line!r} fails in a new shell: write `uv run actormesh`"
            )


def test_the_comparisons_follow_the_convention() -> None:
    shown = ['{"task": "count", "steps": [', '  {"tool": "a", "result": 1},', '  {"w": "..."}]}']
    assert output_matches(shown, '{"task":"count","steps":[{"tool":"a","result":1},{"w":"x"}]}')
    assert not output_matches(shown, '{"task":"count","steps":[{"tool":"a","result":2},{"w":1}]}')
    assert not output_matches(["3"], "4\n") and output_matches(["3"], "3\n")
    assert error_matches(["actormesh: error: x: y ..."], "actormesh: error: x: y z\n")
    assert not error_matches(["actormesh: error: x"], "actormesh: error: x y\n")
    assert json_matches(_as_json('{"steps": [...]}'), {"steps": [1, 2]})


# -- the snippets against a running mesh ---------------------------------------------


def find_uv() -> str | None:
    """Where `make` finds uv: on PATH, else where it installs it."""
    found = shutil.which("uv")
    if found:
        return found
    fallback = Path.home() / ".local" / "bin" / "uv"
    return str(fallback) if fallback.is_file() else None


def shell_env(uv: str) -> dict[str, str]:
    """A new shell's environment: uv on PATH, not the workspace's .venv/bin, nor
    what `uv run` (under `make test`) and the test's own settings put there."""
    venv_bin = {str(ROOT / ".venv" / "bin"), str(Path(sys.executable).parent)}
    path = [p for p in os.environ.get("PATH", "").split(os.pathsep) if p and p not in venv_bin]
    path.insert(0, str(Path(uv).parent))
    from_uv_run = {"UV", "UV_RUN_RECURSION_DEPTH", "VIRTUAL_ENV"}
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("ACTORMESH_", "NATS_", "OTEL_")) and k not in from_uv_run
    }
    env["PATH"] = os.pathsep.join(path)
    env["UV_PROJECT"] = str(ROOT)
    # As make does (--frozen): a test never rewrites uv.lock (it still syncs from it).
    env["UV_FROZEN"] = "1"
    env["ACTORMESH_LOG_LEVEL"] = "WARNING"
    return env


@dataclass(kw_only=True)
class Up:
    """`uv run actormesh up` in `cwd`, on the ports of `config`."""

    cwd: Path
    nats_url: str
    dashboard: str
    log: Path
    proc: asyncio.subprocess.Process
    #: docker/nats.conf as copied, before the authz snippet rewrote it.
    nats_conf: str

    @property
    def token(self) -> str:
        return (self.cwd / ".actormesh" / "dashboard-token").read_text().strip()


def moved_mesh_toml() -> tuple[str, int, int]:
    """The repository's mesh.toml, on free ports: (text, broker port, dashboard port)."""
    text = (ROOT / "mesh.toml").read_text()
    nats_port, dashboard_port, mcp_port = free_port(), free_port(), free_port()
    for old, new in (
        ("\nport = 4222\n", f"\nport = {nats_port}\n"),
        ("\ndashboard_port = 8765\n", f"\ndashboard_port = {dashboard_port}\n"),
        ('"--port", "8790"', f'"--port", "{mcp_port}"'),
    ):
        assert text.count(old) == 1, f"mesh.toml changed: update the test's port overrides ({old})"
        text = text.replace(old, new)
    return text, nats_port, dashboard_port


async def wait_for(what: str, check: Any, up: Up, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not await check():
        assert up.proc.returncode is None, f"the mesh exited: {up.log.read_text()[-3000:]}"
        assert time.monotonic() < deadline, f"{what} not reached: {up.log.read_text()[-3000:]}"
        await asyncio.sleep(0.2)


async def ready(up: Up) -> None:
    """Every worker's tools published, the MCP server's tokens written."""

    async def broker() -> bool:
        return "actormesh: broker ready" in up.log.read_text()

    await wait_for("the broker", broker, up)
    async with await Mesh.connect(up.nats_url, prefix="mesh", connect_wait=5.0) as mesh:

        async def published() -> bool:
            try:
                names = {t.name for t in await mesh.tools.list_tools()}
            except Exception:
                return False  # the registry is made by the first worker that serves tools
            return names >= TOOLS

        await wait_for("the workers' tools", published, up)

    async def tokens() -> bool:
        return (up.cwd / ".actormesh" / "mcp-tokens.toml").exists()

    await wait_for("the MCP server's tokens file", tokens, up)


@pytest.fixture
async def up(tmp_path: Path) -> Any:
    uv = find_uv()
    if uv is None:
        pytest.skip("uv is not installed: `make up` / `make test` install it (make install)")
    cwd = tmp_path / "repo"
    cwd.mkdir()
    shutil.copytree(ROOT / "docker", cwd / "docker")
    text, nats_port, dashboard_port = moved_mesh_toml()
    (cwd / "mesh.toml").write_text(text)
    log = tmp_path / "up.log"
    with log.open("wb") as out:
        proc = await asyncio.create_subprocess_exec(
            uv, "run", "actormesh", "up",
            cwd=cwd, env=shell_env(uv), stdout=out, stderr=subprocess.STDOUT,
            start_new_session=True,
        )  # fmt: skip
    mesh = Up(
        cwd=cwd,
        nats_url=f"nats://127.0.0.1:{nats_port}",
        dashboard=f"http://127.0.0.1:{dashboard_port}/",
        log=log,
        proc=proc,
        nats_conf=(cwd / "docker" / "nats.conf").read_text(),
    )
    try:
        await ready(mesh)
        yield mesh
    finally:
        await stop(proc)


async def stop(proc: asyncio.subprocess.Process) -> None:
    if proc.returncode is not None:
        return
    # uv passes SIGINT on to `actormesh up`, which drains the workers, then stops.
    proc.send_signal(signal.SIGINT)
    try:
        async with asyncio.timeout(60):
            await proc.wait()
    except TimeoutError:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        await proc.wait()


async def run(script: str, up: Up, env: dict[str, str]) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(
        "bash", "-e", "-o", "pipefail", "-c", script,
        cwd=up.cwd, env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    try:
        async with asyncio.timeout(60):
            out, err = await proc.communicate()
    except TimeoutError:
        proc.kill()
        await proc.wait()
        raise AssertionError(f"{script!r} did not end within 60 s") from None
    return proc.returncode or 0, out.decode(), err.decode()


async def approve_when_pending(up: Up, tool: str) -> None:
    """Approve the one pending call of `tool`, through the dashboard's API."""
    headers = {"Authorization": f"Bearer {up.token}"}
    async with aiohttp.ClientSession(headers=headers) as http:
        for _ in range(600):
            async with http.get(up.dashboard + "api/approvals") as r:
                assert r.status == 200, await r.text()
                pending = [a for a in await r.json() if a["tool"] == tool]
            if pending:
                break
            await asyncio.sleep(0.1)
        else:
            raise AssertionError(f"no pending approval of {tool} appeared")
        assert len(pending) == 1, pending
        async with http.post(up.dashboard + f"api/approvals/{pending[0]['id']}/approve") as r:
            assert r.status == 200, await r.text()


async def check_console(block: Block, up: Up, env: dict[str, str]) -> None:
    for cmd in console_commands(block):
        where = f"README.md:{block.line}: $ {cmd.line}"
        if block.marker == APPROVES:
            tool = re.search(r"tool call (\S+)", cmd.line)
            assert tool, where
            code, out, err = (
                await asyncio.gather(run(cmd.line, up, env), approve_when_pending(up, tool[1]))
            )[0]
            assert code == 0, f"{where}\nexit {code}\n{out}\n{err}"
            assert output_matches(next_json_block(block).splitlines(), out), f"{where}\n{out}"
            continue
        code, out, err = await run(cmd.line, up, env)
        if cmd.output and cmd.output[0].startswith(ERROR):
            assert code == 1, f"{where}\nexit {code}, expected 1\n{out}\n{err}"
            assert error_matches(cmd.output, err), f"{where}\nstderr: {err}"
        else:
            assert code == 0, f"{where}\nexit {code}\n{out}\n{err}"
            if cmd.output:
                assert output_matches(cmd.output, out), f"{where}\nprinted: {out}"


@pytest.mark.timeout(150)  # a mesh of six processes, then ~15 `uv run` commands
async def test_the_readme_shell_snippets_run_as_written(up: Up) -> None:
    # What `make up` prints is what the README says to run.
    printed = up.log.read_text()
    assert "actormesh: try  uv run actormesh tell counter user-7" in printed
    assert "actormesh: and  uv run actormesh tool call assistant.run" in printed
    env = dict(shell_env(find_uv() or "uv"), NATS_URL=up.nats_url)
    assert shutil.which("actormesh", path=env["PATH"]) is None, (
        "the test's PATH is not a new shell's"
    )
    ran = 0
    for block in shell_blocks():
        if not block.runs:
            continue
        ran += 1
        if block.lang == "console":
            await check_console(block, up, env)
            continue
        code, out, err = await run(block.text, up, env)
        assert code == 0, f"README.md:{block.line}: exit {code}\n{block.text}\n{out}\n{err}"
    assert ran >= 5
    # The authz snippet regenerated the copy's nats.conf as it is committed (and
    # left the repository's alone).
    assert (up.cwd / "docker" / "nats.conf").read_text() == up.nats_conf
