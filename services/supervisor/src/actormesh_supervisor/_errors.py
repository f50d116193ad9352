"""The supervisor's errors: all under actormesh's one root, `ActorMeshError`."""

from __future__ import annotations

from actormesh import ActorMeshError, ConfigError

__all__ = ["BackendError", "DockerError", "SupervisorConfigError", "SupervisorError"]


class SupervisorError(ActorMeshError):
    """The supervisor cannot do what was asked (bad config, unknown worker, ...)."""

    code = "supervisor_error"


class SupervisorConfigError(SupervisorError, ConfigError):
    """The supervisor's configuration (mesh.toml, options) is invalid."""

    code = "config_error"


class BackendError(SupervisorError):
    """A restart backend failed to start, stop or restart a worker."""

    code = "backend_error"
    retryable = True


class DockerError(BackendError):
    """The Docker Engine API refused a request or could not be reached."""

    code = "docker_error"

    def __init__(self, message: str, *, status: int = 0) -> None:
        super().__init__(message)
        self.status = status
