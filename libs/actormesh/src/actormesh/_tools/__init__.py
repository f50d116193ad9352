"""Tools: handlers any principal with a grant may call by name (see `_bus`)."""

from ._bus import DEFAULT_TIMEOUT, ContextTools, ToolBus
from ._declare import KEY_ARG, ToolOptions, ToolSpec, tool, tool_options, tool_spec
from ._grants import Grant, Grants, matches

__all__ = [
    "DEFAULT_TIMEOUT",
    "KEY_ARG",
    "ContextTools",
    "Grant",
    "Grants",
    "ToolBus",
    "ToolOptions",
    "ToolSpec",
    "matches",
    "tool",
    "tool_options",
    "tool_spec",
]
