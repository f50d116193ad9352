"""An actormesh worker process for bench_sender and bench_keys: start it, wait until
it pulls, read its CPU time and RSS, stop it."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import psutil

ROOT = Path(__file__).resolve().parent.parent


def load_footer(start: tuple[float, ...], end: tuple[float, ...]) -> list[str]:
    """A report's last lines: the 1-minute load average around the run (a busy
    machine skews every figure in it)."""
    return [
        "",
        f"Load average (1 min) {start[0]:.2f} at the start, {end[0]:.2f} at the "
        f"end, on {os.cpu_count()} CPUs.",
    ]


class WorkerProcess:
    """A worker OS process: its command, its log, its CPU time and memory."""

    def __init__(self, name: str, cmd: list[str], env: dict[str, str], log_path: Path) -> None:
        self.name = name
        self.cmd = cmd
        self.env = {**os.environ, **env}
        self.env["PYTHONPATH"] = os.pathsep.join(
            p for p in (str(ROOT), os.environ.get("PYTHONPATH", "")) if p
        )
        self.log_path = log_path
        self.proc: subprocess.Popen[bytes] | None = None
        self.ps: psutil.Process | None = None

    def start(self) -> None:
        with self.log_path.open("wb") as logf:
            self.proc = subprocess.Popen(
                self.cmd,
                cwd=ROOT,
                env=self.env,
                stdout=logf,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self.ps = psutil.Process(self.proc.pid)

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def _ps(self) -> psutil.Process:
        if self.ps is None:
            raise RuntimeError("worker not started")
        return self.ps

    def rss(self) -> int:
        return int(self._ps().memory_info().rss)

    def cpu(self) -> float:
        t = self._ps().cpu_times()
        return float(t.user + t.system)

    def log_tail(self, lines: int = 20) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    async def stop(self) -> None:
        await stop_process(self.proc, grace=10.0)

    async def wait_pulling(self, js: Any, stream: str, durable: str, timeout: float = 60) -> None:
        """Ready: the durable consumer exists and the worker has a pull waiting on it."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not self.alive():
                raise RuntimeError(f"{self.name} worker exited at startup:\n{self.log_tail()}")
            with contextlib.suppress(Exception):
                info = await js.consumer_info(stream, durable)
                if info.num_waiting and info.num_waiting > 0:
                    return
            await asyncio.sleep(0.1)
        raise TimeoutError(f"{self.name} worker not pulling after {timeout}s:\n{self.log_tail()}")


class MeshWorker(WorkerProcess):
    """``python -m actormesh --prefix <prefix> worker <target>`` as a child process."""

    def __init__(self, target: str, url: str, logdir: Path, *, prefix: str = "bench") -> None:
        self.target = target
        cmd = [sys.executable, "-m", "actormesh", "--nats-url", url, "--prefix", prefix]
        super().__init__(
            target,
            [*cmd, "worker", target],
            {"ACTORMESH_LOG_LEVEL": "WARNING"},
            logdir / f"worker-{target.replace(':', '-')}-{time.monotonic_ns()}.log",
        )

    async def drained(self, js: Any, stream: str, durable: str, timeout: float) -> None:
        """Wait until the worker has acked everything in its mailbox."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            info = await js.consumer_info(stream, durable)
            if not info.num_pending and not info.num_ack_pending:
                return
            if not self.alive():
                raise RuntimeError(f"worker exited:\n{self.log_tail()}")
            await asyncio.sleep(0.05)
        raise TimeoutError("the worker did not drain the mailbox")


async def stop_process(proc: subprocess.Popen[bytes] | None, *, grace: float) -> None:
    """SIGTERM, then SIGKILL if it is still there after `grace` seconds."""
    if proc is None or proc.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        proc.send_signal(signal.SIGTERM)
    for _ in range(int(grace / 0.05)):
        if proc.poll() is not None:
            return
        await asyncio.sleep(0.05)
    with contextlib.suppress(ProcessLookupError):
        proc.kill()
    await asyncio.to_thread(proc.wait)


def self_cpu() -> float:
    """This process's CPU seconds (user + system; all threads), at ns resolution
    (psutil's cpu_times counts 10 ms ticks)."""
    return time.process_time()


def run_loop(coro: Any) -> Any:
    try:
        import uvloop
    except ImportError:
        return asyncio.run(coro)
    return uvloop.run(coro)
