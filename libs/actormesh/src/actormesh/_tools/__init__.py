"""Tools: handlers any principal with a grant may call by name (see `_bus`)."""

from ._approvals import Approval, ApprovalError, Approvals, ApprovalState
from ._bus import DEFAULT_TIMEOUT, ContextTools, ToolBus
from ._declare import KEY_ARG, ToolOptions, ToolSpec, tool, tool_options, tool_spec
from ._grants import Grant, Grants, matches
from ._progress import OnProgress, ToolProgress

__all__ = [
    "Approval",
    "ApprovalError",
    "ApprovalState",
    "Approvals",
    "DEFAULT_TIMEOUT",
    "KEY_ARG",
    "ContextTools",
    "Grant",
    "Grants",
    "OnProgress",
    "ToolBus",
    "ToolOptions",
    "ToolProgress",
    "ToolSpec",
    "matches",
    "tool",
    "tool_options",
    "tool_spec",
]
