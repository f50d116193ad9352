"""Run every benchmark module there is, each in its own process, and combine them.

``python -m bench [--quick] [--only tell,ask,rss,patterns,...] [--json PATH]``
(``make bench`` runs this). Modules: ``bench/bench_mesh.py`` (issues 2 and 14)
and, when present, ``bench_patterns.py``, ``bench_supervisor.py``,
``bench_tracing.py``, ``bench_sender.py`` and ``bench_keys.py`` (issue 14), and
``bench_state.py`` (issue 15), ``bench_tools.py`` (issue 16),
``bench_priority.py`` (issue 19) and ``bench_parser.py`` (issue 14, no broker).
Each exposes ``main(argv) -> dict`` (a coroutine is awaited); one failing
does not stop the rest. The combined report goes to
stdout and to ``bench/results/latest.{json,md}``; progress goes to stderr.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import threading
import time
from collections import deque
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
RESULTS = HERE / "results"
#: Module name -> the short name `--only` accepts for it.
MODULES = {
    "bench_mesh": "mesh",
    "bench_patterns": "patterns",
    "bench_supervisor": "supervisor",
    "bench_tracing": "tracing",
    "bench_sender": "sender",
    "bench_keys": "keys",
    "bench_state": "state",
    "bench_tools": "tools",
    "bench_mcp": "mcp",
    "bench_cluster": "cluster",
    "bench_priority": "priority",
    "bench_parser": "parser",
}
MESH_SECTIONS = ("tell", "ask", "rss")

# Runs in the child: import the module, call main(argv), write its dict as JSON.
_CHILD = r"""
import asyncio, dataclasses, importlib, inspect, json, sys
name, out, argv = sys.argv[1], sys.argv[2], sys.argv[3:]
mod = importlib.import_module("bench." + name)
fn = getattr(mod, "main", None) or getattr(mod, "run", None)
if fn is None:
    raise SystemExit(f"bench.{name} has no main(argv)")
try:
    takes_args = bool(inspect.signature(fn).parameters)
except (TypeError, ValueError):
    takes_args = True
res = fn(argv) if takes_args else fn()
if inspect.isawaitable(res):
    res = asyncio.run(res)

def plain(v):
    # dataclasses, named tuples and msgspec Structs become dicts, recursively.
    if dataclasses.is_dataclass(v) and not isinstance(v, type):
        return plain(dataclasses.asdict(v))
    if isinstance(v, tuple) and hasattr(v, "_asdict"):
        return plain(v._asdict())
    if type(v).__module__ != "builtins" and hasattr(v, "__struct_fields__"):
        return plain({f: getattr(v, f) for f in v.__struct_fields__})
    if isinstance(v, dict):
        return {str(k): plain(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [plain(x) for x in v]
    return v

res = plain(res)
if isinstance(res, list) and res and all(isinstance(x, dict) for x in res):
    res = {"rows": res}
elif not isinstance(res, dict):
    res = {"result": res}
with open(out, "w") as f:
    json.dump(res, f, indent=2, default=str)
"""


def log(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def _parse(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m bench",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--quick", action="store_true", help="10x smaller counts (a smoke run)")
    p.add_argument(
        "--only",
        default="",
        help="comma list of mesh sections (tell, ask, rss) and/or modules "
        f"({', '.join(MODULES.values())})",
    )
    p.add_argument(
        "--repeats",
        type=int,
        default=None,
        help="runs per throughput figure in bench_mesh (default 3)",
    )
    p.add_argument("--json", metavar="PATH", help="also write the combined JSON here")
    p.add_argument("--timeout", type=float, default=1800.0, help="seconds per module")
    return p.parse_args(argv)


def _select(only: str) -> tuple[list[str], list[str]]:
    """(modules to run, mesh sections) from --only."""
    tokens = [t.strip() for t in only.split(",") if t.strip()]
    short_to_mod = {v: k for k, v in MODULES.items()} | {k: k for k in MODULES}
    unknown = [t for t in tokens if t not in short_to_mod and t not in MESH_SECTIONS]
    if unknown:
        raise SystemExit(
            f"--only: unknown {unknown}; use {list(MESH_SECTIONS)} or {list(MODULES.values())}"
        )
    sections = [t for t in tokens if t in MESH_SECTIONS]
    mods = [short_to_mod[t] for t in tokens if t in short_to_mod]
    if sections and "bench_mesh" not in mods:
        mods.append("bench_mesh")
    if not mods:
        mods = list(MODULES)
    return [m for m in MODULES if m in mods], sections


def _module_args(name: str, args: argparse.Namespace, sections: list[str]) -> list[str]:
    argv = ["--quick"] if args.quick else []
    if name == "bench_mesh":
        if sections:
            argv += ["--only", ",".join(sections)]
        if args.repeats is not None:
            argv += ["--repeats", str(args.repeats)]
    return argv


def _run_child(name: str, argv: list[str], timeout: float) -> tuple[int | None, str, Path]:
    """Run one module; its stdout and stderr stream to our stderr. Returns
    (exit code or None on timeout, the tail of its stderr, the JSON path)."""
    out = Path(tempfile.mkstemp(prefix=f"{name}-", suffix=".json")[1])
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH", "")) if p)
    proc = subprocess.Popen(
        [sys.executable, "-c", _CHILD, name, str(out), *argv],
        cwd=ROOT,
        env=env,
        stdout=sys.stderr.fileno(),
        stderr=subprocess.PIPE,
        start_new_session=True,
    )
    tail: deque[str] = deque(maxlen=40)

    def pump() -> None:
        assert proc.stderr is not None
        for raw in proc.stderr:
            line = raw.decode(errors="replace")
            sys.stderr.write(line)
            sys.stderr.flush()
            tail.append(line.rstrip())

    reader = threading.Thread(target=pump, daemon=True)
    reader.start()
    try:
        code: int | None = proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
        code = None
    reader.join(timeout=5)
    return code, "\n".join(tail), out


def run_module(name: str, argv: list[str], timeout: float) -> dict[str, Any]:
    log(f"\n=== bench.{name} {' '.join(argv)}")
    started = time.monotonic()
    code, tail, out = _run_child(name, argv, timeout)
    if code == 2 and argv and "unrecognized arguments" in tail:
        log(f"=== bench.{name} does not take {argv}: running it without arguments")
        code, tail, out = _run_child(name, [], timeout)
    seconds = round(time.monotonic() - started, 1)
    entry: dict[str, Any] = {"module": f"bench/{name}.py", "argv": argv, "seconds": seconds}
    result: dict[str, Any] | None = None
    try:
        if out.stat().st_size:
            result = json.loads(out.read_text())
    except (OSError, ValueError):
        result = None
    finally:
        out.unlink(missing_ok=True)
    if code == 0 and result is not None:
        entry.update(ok=True, result=result)
    else:
        why = f"timed out after {timeout:.0f}s" if code is None else f"exit code {code}"
        entry.update(ok=False, error=f"{why}\n{tail}".strip(), result=result)
    log(f"=== bench.{name}: {'ok' if entry['ok'] else 'FAILED'} in {seconds}s")
    return entry


# -- the combined report ---------------------------------------------------------------


def _flatten(value: Any, prefix: str = "") -> list[tuple[str, Any]]:
    if isinstance(value, dict):
        rows: list[tuple[str, Any]] = []
        for k, v in value.items():
            rows += _flatten(v, f"{prefix}.{k}" if prefix else str(k))
        return rows
    if isinstance(value, list) and value and all(isinstance(v, dict) for v in value):
        rows = []
        for i, v in enumerate(value):
            rows += _flatten(v, f"{prefix}[{i}]")
        return rows
    return [(prefix, value)]


def _cell(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:,.3f}" if abs(v) < 100 else f"{v:,.0f}"
    if isinstance(v, int) and not isinstance(v, bool):
        return f"{v:,}"
    if isinstance(v, list) and v and all(isinstance(x, int | float) for x in v):
        return ", ".join(f"{x:.3g}" for x in v)
    text = json.dumps(v) if isinstance(v, list | dict) else str(v)
    return text.replace("|", "\\|").replace("\n", " ")[:120]


def render_result(result: dict[str, Any]) -> str:
    """A module's table: its own markdown if it has one, else rows, else key/value."""
    for key in ("markdown", "table"):
        if isinstance(result.get(key), str):
            return str(result[key])
    rows = result.get("rows")
    if isinstance(rows, list) and rows and all(isinstance(r, dict) for r in rows):
        cols = list(dict.fromkeys(k for r in rows for k in r))
        lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
        lines += ["| " + " | ".join(_cell(r.get(c, "")) for c in cols) + " |" for r in rows]
        return "\n".join(lines)
    flat = [
        (k, v)
        for k, v in _flatten(result)
        if k not in ("machine", "markdown") and not k.startswith("machine.")
    ]
    lines = ["| key | value |", "|---|---|"]
    lines += [f"| {k} | {_cell(v)} |" for k, v in flat[:80]]
    if len(flat) > 80:
        lines.append(f"| ... | {len(flat) - 80} more in latest.json |")
    return "\n".join(lines)


def machine() -> dict[str, Any]:
    cpu = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "cpus": os.cpu_count(),
        "cpu": cpu,
        "python": platform.python_version(),
        "platform": platform.platform(),
    }


def render(report: dict[str, Any]) -> str:
    m = report["machine"]
    lines = [
        f"# actormesh benchmarks ({report['started']})",
        "",
        f"Machine: {m['cpus']} CPUs ({m['cpu'] or 'unknown CPU'}), Python {m['python']}, "
        f"{m['platform']}. Arguments: `{' '.join(report['argv']) or '(none)'}`. "
        f"Total {report['seconds']}s.",
    ]
    for name, entry in report["modules"].items():
        status = "ok" if entry["ok"] else "FAILED"
        lines += [
            "",
            f"## {MODULES.get(name, name)} ({entry['module']}): {status}, {entry['seconds']}s",
            "",
        ]
        if entry.get("result"):
            lines.append(render_result(entry["result"]))
        if not entry["ok"]:
            lines += ["", "```", entry.get("error", "")[-3000:], "```"]
    skipped = report.get("absent")
    if skipped:
        lines += ["", "Not present (skipped): " + ", ".join(f"bench/{s}.py" for s in skipped)]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    args = _parse(argv)
    wanted, sections = _select(args.only)
    present = [m for m in wanted if (HERE / f"{m}.py").exists()]
    absent = [m for m in wanted if m not in present]
    started = time.monotonic()
    report: dict[str, Any] = {
        "started": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "argv": list(argv if argv is not None else sys.argv[1:]),
        "machine": machine(),
        "modules": {},
        "absent": absent,
    }
    for name in present:
        report["modules"][name] = run_module(name, _module_args(name, args, sections), args.timeout)
    report["seconds"] = round(time.monotonic() - started, 1)
    text = render(report)
    print("\n" + text)
    RESULTS.mkdir(parents=True, exist_ok=True)
    data = json.dumps(report, indent=2, default=str)
    (RESULTS / "latest.json").write_text(data)
    (RESULTS / "latest.md").write_text(text)
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(data)
    log(f"wrote {RESULTS / 'latest.json'} and {RESULTS / 'latest.md'}")
    return 0 if all(e["ok"] for e in report["modules"].values()) else 1


if __name__ == "__main__":
    sys.exit(main())
