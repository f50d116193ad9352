"""actormesh supervisor: heartbeats, OTP restart strategies, escalation, dashboard.

Run it with `actormesh-supervisor --config mesh.toml` (or `actormesh up`, which
starts it). In Python: ``async with Service(options) as svc: ...``.
"""

from ._backends import Backend, NoneBackend, ProcessBackend
from ._docker import DockerBackend, DockerClient
from ._errors import BackendError, DockerError, SupervisorConfigError, SupervisorError
from ._options import SupervisorOptions
from ._service import Service
from ._supervisor import Supervisor

__all__ = [
    "Backend",
    "BackendError",
    "DockerBackend",
    "DockerClient",
    "DockerError",
    "NoneBackend",
    "ProcessBackend",
    "Service",
    "Supervisor",
    "SupervisorConfigError",
    "SupervisorError",
    "SupervisorOptions",
]
