"""The supervisor service: the supervisor plus its dashboard, as one unit."""

from __future__ import annotations

import asyncio
import logging
import os

from ._auth import Auth
from ._dashboard import Dashboard
from ._options import SupervisorOptions, is_loopback
from ._supervisor import Supervisor
from ._tree import TreeRole

__all__ = ["Service"]

log = logging.getLogger("actormesh.supervisor")


class Service:
    """`async with Service(options) as svc:` runs the supervisor and, when the
    options carry a dashboard token, the dashboard (its URL in `svc.url`)."""

    def __init__(self, options: SupervisorOptions) -> None:
        self.options = options
        self.supervisor = Supervisor(options)
        self.dashboard: Dashboard | None = None
        sup = options.meshfile.supervisor
        if options.dashboard_token:
            auth = Auth(options.dashboard_token, open_reads=is_loopback(sup.dashboard_host))
            self.dashboard = Dashboard(
                self.supervisor, host=sup.dashboard_host, port=sup.dashboard_port, auth=auth
            )
        self.url = ""
        #: Set when the service itself wants the process to end (a root that
        #: escalated, a host its root stopped), with the exit code to end with.
        self.exit_requested = asyncio.Event()
        self.exit_code = 0
        self.tree: TreeRole | None = None
        if sup.role == "host":
            from ._host import HostAgent

            self.tree = HostAgent(self.supervisor, request_exit=self.request_exit,
                                  dashboard=lambda: self.url)  # fmt: skip
        elif sup.role == "root":
            from ._root import Root

            self.tree = Root(self.supervisor, request_exit=self.request_exit)
        self.supervisor.tree = self.tree

    def request_exit(self, code: int) -> None:
        self.exit_code = code
        self.exit_requested.set()

    @property
    def url_file(self) -> str:
        o = self.options
        return str(o.runtime_dir / f"dashboard-{o.prefix}-{o.meshfile.supervisor.name}.url")

    async def start(self) -> None:
        try:
            if self.dashboard is not None:
                # Up before the workers, so an operator can watch them start.
                self.url = await self.dashboard.start()
                _write(self.url_file, self.url + "\n")
                log.info("dashboard at %s", self.url)
            await self.supervisor.start()
            if self.tree is not None:
                await self.tree.start()
        except BaseException:
            await self.stop()
            raise

    async def stop(self) -> None:
        if self.tree is not None:
            await self.tree.stop()
        await self.supervisor.stop()
        if self.dashboard is not None:
            await self.dashboard.stop()
            try:
                os.unlink(self.url_file)
            except FileNotFoundError:
                pass

    async def __aenter__(self) -> Service:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()


def _write(path: str, text: str) -> None:
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
        f.write(text)
