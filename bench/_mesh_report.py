"""bench_mesh's report: medians per contender, ratios, the issue 14 targets, tables.

Every ratio is taken against the raw nats-py worker with a continuous pull
(``raw``, the baseline) and against FastStream's best configuration
(``faststream``: max_workers=1). CPU is user + system time of each process over
the timed run, per message: publisher (or asker), worker, nats-server.
"""

from __future__ import annotations

import statistics
from collections.abc import Callable
from typing import Any

BASE, PEER, AM = "raw", "faststream", "actormesh"
ROLES = ("client", "worker", "server")
MiB = 1024 * 1024

# Targets of issue 14 (ratios actormesh / raw continuous pull unless said).
TARGETS = {
    "tell_vs_raw": 0.9,
    "tell_worker_cpu_vs_raw": 1.3,
    "tell_vs_faststream": 3.0,
    "ask_vs_raw": 1.0,
    "ask_p50_vs_raw": 1.1,
    "rss_idle_mb": 80.0,
}

Row = tuple[str, str, dict[str, Any]]


def _median(results: list[dict[str, Any]], key: str) -> float | None:
    values = [r[key] for r in results if key in r]
    return statistics.median(values) if values else None


def _cpu(results: list[dict[str, Any]]) -> dict[str, float] | None:
    """Median CPU microseconds per message, per process, and their sum."""
    out: dict[str, float] = {}
    for role in ROLES:
        value = _median(results, f"cpu_{role}_us")
        if value is None:
            return None
        out[role] = value
    out["total"] = sum(out.values())
    return out


def summarize(units: list[Row], keys: list[str], sections: set[str]) -> dict[str, Any]:
    """Per contender: medians over its repetitions."""
    res: dict[str, Any] = {}
    for key in keys:
        tells = [r for kind, k, r in units if k == key and kind == "tell"]
        asks = [r for kind, k, r in units if k == key and kind == "ask"]
        if not tells and not asks:
            continue
        r: dict[str, Any] = {}
        if "tell" in sections and tells:
            r["tell_rate"] = _median(tells, "rate")
            r["tell_rates"] = [round(t["rate"]) for t in tells if "rate" in t]
            r["tell_cpu_us"] = _cpu(tells)
            r["refusals"] = _median(tells, "refusals")
            r["refusals_runs"] = [t.get("refusals") for t in tells]
        if "ask" in sections and asks:
            r["ask_rate"] = _median(asks, "rate")
            r["ask_rates"] = [round(a["rate"]) for a in asks if "rate" in a]
            r["ask_cpu_us"] = _cpu(asks)
            r["ask_p50_ms"] = _median(asks, "p50_ms")
            r["ask_p99_ms"] = _median(asks, "p99_ms")
        if "rss" in sections and tells:
            idle = _median(tells, "rss_idle")
            peaks = [t["rss_peak"] for t in tells if "rss_peak" in t]
            r["rss_idle_mb"] = idle / MiB if idle is not None else None
            r["rss_peak_mb"] = max(peaks) / MiB if peaks else None
        res[key] = r
    return res


def _ratio(a: float | None, b: float | None) -> float | None:
    if a is None or b is None or b == 0:
        return None
    return a / b


def _get(res: dict[str, Any], key: str, field: str, sub: str | None = None) -> float | None:
    v = res.get(key, {}).get(field)
    if sub is not None:
        v = v.get(sub) if isinstance(v, dict) else None
    return float(v) if isinstance(v, int | float) else None


def _fmt(value: float | None, digits: int = 0) -> str:
    return "n/a" if value is None else f"{value:,.{digits}f}"


def _x(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.2f}x"


def _vs(res: dict[str, Any], key: str, field: str, sub: str | None = None, *, to: str) -> str:
    """A contender's figure as a ratio to another's (`to`), formatted."""
    return _x(_ratio(_get(res, key, field, sub), _get(res, to, field, sub)))


def _cpu_cell(v: dict[str, float] | None) -> str:
    if not v:
        return "n/a"
    return f"{v['client']:.1f} + {v['worker']:.1f} + {v['server']:.1f} = {v['total']:.1f}"


def _labels(out: dict[str, Any]) -> list[tuple[str, str]]:
    return [(c["key"], c["label"]) for c in out["contenders"] if c["key"] in out["results"]]


def _tell_table(out: dict[str, Any]) -> list[str]:
    res, c = out["results"], out["counts"]
    lines = [
        f"Tells end to end: {c['tells']:,} x {c['payload_bytes']} B, median of "
        f"{c['repeats']}; CPU per tell in us: publisher + worker + nats-server.",
        "",
        "| contender | tells/s | vs raw pull | vs FastStream | CPU per tell, us "
        "| worker CPU vs raw pull | total CPU vs raw pull | refusals (mailbox full) |",
        "|---|--:|--:|--:|--:|--:|--:|--:|",
    ]
    for key, label in _labels(out):
        rate = _get(res, key, "tell_rate")
        if rate is None:
            continue
        lines.append(
            f"| {label} | {_fmt(rate)} | {_vs(res, key, 'tell_rate', to=BASE)} "
            f"| {_vs(res, key, 'tell_rate', to=PEER)} "
            f"| {_cpu_cell(res[key].get('tell_cpu_us'))} "
            f"| {_vs(res, key, 'tell_cpu_us', 'worker', to=BASE)} "
            f"| {_vs(res, key, 'tell_cpu_us', 'total', to=BASE)} "
            f"| {_fmt(_get(res, key, 'refusals'))} |"
        )
    return lines


def _ask_table(out: dict[str, Any]) -> list[str]:
    res, c = out["results"], out["counts"]
    lines = [
        f"Asks: {c['asks']:,} with {c['ask_in_flight']} in flight, then "
        f"{c['latency_asks']:,} sequential; median of {c['repeats']}; CPU per ask in us: "
        "asker + worker + nats-server.",
        "",
        "| contender | asks/s | vs raw pull | vs FastStream | CPU per ask, us "
        "| worker CPU vs raw pull | p50 ms | p50 vs raw pull | p99 ms | p99 vs raw pull |",
        "|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|",
    ]
    for key, label in _labels(out):
        rate = _get(res, key, "ask_rate")
        if rate is None:
            continue
        p50, p99 = _get(res, key, "ask_p50_ms"), _get(res, key, "ask_p99_ms")
        lines.append(
            f"| {label} | {_fmt(rate)} | {_vs(res, key, 'ask_rate', to=BASE)} "
            f"| {_vs(res, key, 'ask_rate', to=PEER)} "
            f"| {_cpu_cell(res[key].get('ask_cpu_us'))} "
            f"| {_vs(res, key, 'ask_cpu_us', 'worker', to=BASE)} "
            f"| {_fmt(p50, 3)} | {_vs(res, key, 'ask_p50_ms', to=BASE)} "
            f"| {_fmt(p99, 3)} | {_vs(res, key, 'ask_p99_ms', to=BASE)} |"
        )
    return lines


def _rss_table(out: dict[str, Any]) -> list[str]:
    res = out["results"]
    lines = [
        "| worker | RSS idle MB | RSS peak under tells MB | idle vs raw pull |",
        "|---|--:|--:|--:|",
    ]
    for key, label in _labels(out):
        idle = _get(res, key, "rss_idle_mb")
        if idle is None:
            continue
        lines.append(
            f"| {label} | {_fmt(idle, 1)} | {_fmt(_get(res, key, 'rss_peak_mb'), 1)} "
            f"| {_vs(res, key, 'rss_idle_mb', to=BASE)} |"
        )
    return lines


def check_targets(res: dict[str, Any], sections: set[str]) -> list[dict[str, Any]]:
    rows: list[tuple[str, float | None, str, Callable[[float], bool]]] = []

    def add(name: str, value: float | None, key: str, upper: bool) -> None:
        goal = TARGETS[key]
        text = f"<= {goal}x" if upper else f">= {goal}x"
        rows.append((name, value, text, (lambda v: v <= goal) if upper else (lambda v: v >= goal)))

    if "tell" in sections:
        add(
            "tells/s, actormesh / raw continuous pull",
            _ratio(_get(res, AM, "tell_rate"), _get(res, BASE, "tell_rate")),
            "tell_vs_raw",
            False,
        )
        add(
            "worker CPU per tell, actormesh / raw continuous pull",
            _ratio(
                _get(res, AM, "tell_cpu_us", "worker"), _get(res, BASE, "tell_cpu_us", "worker")
            ),
            "tell_worker_cpu_vs_raw",
            True,
        )
        add(
            "tells/s, actormesh / FastStream (max_workers=1)",
            _ratio(_get(res, AM, "tell_rate"), _get(res, PEER, "tell_rate")),
            "tell_vs_faststream",
            False,
        )
    if "ask" in sections:
        add(
            "asks/s (256 in flight), actormesh / raw durable request",
            _ratio(_get(res, AM, "ask_rate"), _get(res, BASE, "ask_rate")),
            "ask_vs_raw",
            False,
        )
        add(
            "sequential ask p50, actormesh / raw durable request",
            _ratio(_get(res, AM, "ask_p50_ms"), _get(res, BASE, "ask_p50_ms")),
            "ask_p50_vs_raw",
            True,
        )
    if "rss" in sections:
        limit = TARGETS["rss_idle_mb"]
        rows.append(
            (
                "actormesh worker RSS idle (MB)",
                _get(res, AM, "rss_idle_mb"),
                f"< {limit:.0f} MB",
                lambda v: v < limit,
            )
        )
    return [
        {"target": name, "measured": v, "goal": goal, "met": None if v is None else bool(ok(v))}
        for name, v, goal, ok in rows
    ]


def _target_rows(targets: list[dict[str, Any]]) -> list[str]:
    lines = ["| target (issue 14) | goal | measured | met |", "|---|---|--:|---|"]
    for t in targets:
        m = t["measured"]
        shown = "n/a" if m is None else (f"{m:.1f} MB" if "MB" in t["goal"] else f"{m:.2f}x")
        met = {True: "yes", False: "**no**", None: "n/a"}[t["met"]]
        lines.append(f"| {t['target']} | {t['goal']} | {shown} | {met} |")
    return lines


def _run_lines(out: dict[str, Any]) -> list[str]:
    runs = []
    for key, label in _labels(out):
        r = out["results"][key]
        parts = []
        if r.get("tell_rates"):
            parts.append("tell " + ", ".join(f"{v:,}" for v in r["tell_rates"]))
            shown = ("n/a" if v is None else f"{v:,}" for v in r["refusals_runs"])
            parts.append("refusals " + ", ".join(shown))
        if r.get("ask_rates"):
            parts.append("ask " + ", ".join(f"{v:,}" for v in r["ask_rates"]))
        if parts:
            runs.append(f"- {label}: " + "; ".join(parts))
    return runs


def render(out: dict[str, Any]) -> str:
    sections = set(out["sections"])
    out["targets"] = check_targets(out["results"], sections)
    lines: list[str] = []
    if "tell" in sections:
        lines += [*_tell_table(out), ""]
    if "ask" in sections:
        lines += [*_ask_table(out), ""]
    if "rss" in sections:
        lines += [*_rss_table(out), ""]
    load = out.get("load")
    lines.append(
        "Ratios are contender / other: above 1 is better for throughput, worse for CPU, "
        "latency and RSS. Streams at actormesh's default mailbox bounds (10,000 messages)."
        + (f" Load average at the end: {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}." if load else "")
    )
    lines += ["", *_run_lines(out)]
    if out["targets"]:
        lines += ["", *_target_rows(out["targets"])]
    if out["errors"]:
        lines += ["", "Errors:"] + [f"- {e}" for e in out["errors"]]
    return "\n".join(lines)
