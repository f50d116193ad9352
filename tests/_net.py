"""Ports for test servers: a free one, and waiting until a process listens on it."""

from __future__ import annotations

import asyncio
import socket


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


async def listening(port: int, proc: asyncio.subprocess.Process) -> None:
    """Wait (up to 15 s) until something accepts on `port`; fail if `proc` exits."""
    for _ in range(750):
        assert proc.returncode is None, "the server process exited"
        try:
            _, writer = await asyncio.open_connection("127.0.0.1", port)
        except OSError:
            await asyncio.sleep(0.02)
            continue
        writer.close()
        await writer.wait_closed()
        return
    raise AssertionError(f"nothing listens on port {port}")
