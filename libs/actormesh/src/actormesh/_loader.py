"""Load an actor class named on the command line or in mesh.toml (`module:Class`)."""

from __future__ import annotations

import importlib

from ._actor import Actor
from ._errors import ConfigError


def load_actor(target: str) -> type[Actor]:
    """Import `package.module:ClassName`."""
    module_name, sep, attr = target.partition(":")
    if not sep or not module_name or not attr:
        raise ConfigError(f"expected module:Class, got {target!r} (e.g. mypkg.actors:Counter)")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ConfigError(f"cannot import {module_name!r}: {exc}") from exc
    cls = getattr(module, attr, None)
    if not (isinstance(cls, type) and issubclass(cls, Actor)):
        raise ConfigError(f"{target} is not an actormesh.Actor subclass")
    return cls
