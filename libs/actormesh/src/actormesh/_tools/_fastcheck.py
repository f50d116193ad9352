"""A fast path for argument validation: most tools take a flat object of scalars.

`jsonschema` takes tens of microseconds per call to validate even `{"n": 1}`,
more than the rest of a tool call's client side. For an input schema that is
only an object of typed scalar properties (`integer`, `number`, `string`,
`boolean`, `null`; `required`; no additional properties), `checker` compiles a
plain function that answers in about a microsecond. It is conservative: True
means the arguments are valid; False means "ask jsonschema", which then says
exactly what is wrong (or accepts what this does not know, such as 1.0 for an
integer). A schema with anything else gets no checker.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

__all__ = ["checker"]

Check = Callable[[Any], bool]

#: The Python types of each JSON Schema scalar type, as `json` decodes them (by
#: exact type: a bool is an int in Python, not in JSON Schema).
_SCALARS: dict[str, tuple[type, ...]] = {
    "integer": (int,),
    "number": (int, float),
    "string": (str,),
    "boolean": (bool,),
    "null": (type(None),),
}
#: Keywords that do not constrain a value (annotations).
_ANNOTATIONS = frozenset({"description", "title", "default", "examples", "$comment"})
_ROOT = frozenset({"type", "properties", "required", "additionalProperties", "$schema"})


def _scalar(schema: Any) -> tuple[type, ...] | None:
    if not isinstance(schema, dict) or set(schema) - _ANNOTATIONS - {"type"}:
        return None
    kind = schema.get("type")
    return _SCALARS.get(kind) if isinstance(kind, str) else None


def checker(schema: dict[str, Any]) -> Check | None:
    """A fast validity check for `schema`, or None when it is not that simple."""
    if set(schema) - _ROOT - _ANNOTATIONS or schema.get("type") != "object":
        return None
    if schema.get("additionalProperties") is not False:
        return None
    props: dict[str, tuple[type, ...]] = {}
    for name, sub in dict(schema.get("properties", {})).items():
        types = _scalar(sub)
        if types is None:
            return None
        props[name] = types
    required = tuple(schema.get("required", ()))
    if not all(isinstance(r, str) for r in required):
        return None

    def valid(args: Any) -> bool:
        if type(args) is not dict:
            return False
        for name in required:
            if name not in args:
                return False
        # A loop, not all(...): no generator frame on a path every tool call takes.
        for name, value in args.items():  # noqa: SIM110
            if type(value) not in props.get(name, ()):
                return False
        return True

    return valid
