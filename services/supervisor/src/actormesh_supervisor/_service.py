"""The supervisor service: the supervisor plus its dashboard, as one unit."""

from __future__ import annotations

import logging
import os

from ._auth import Auth
from ._dashboard import Dashboard
from ._options import SupervisorOptions, is_loopback
from ._supervisor import Supervisor

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
        except BaseException:
            await self.stop()
            raise

    async def stop(self) -> None:
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
