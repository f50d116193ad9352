"""Messaging semantic conventions: span names and attributes, one definition for both
tracers (`MeshTracer` in `_native`, `OtelTracer` in `_tracing`)."""

from __future__ import annotations

from typing import Any

__all__ = [
    "ACTOR_TYPE",
    "DELIVERY_COUNT",
    "DESTINATION",
    "DESTINATION_TEMPLATE",
    "DESTINATION_TEMPORARY",
    "ERROR_CODE",
    "ERROR_TYPE",
    "KEY",
    "MESSAGE_ID",
    "MESSAGE_TYPE",
    "OPERATION_NAME",
    "OPERATION_TYPE",
    "PROCESS",
    "SEND",
    "SYSTEM",
    "mailbox_parts",
    "span_attributes",
    "span_name",
]

# Attribute names (messaging semantic conventions, v1.27+). Spelled out rather
# than imported from the incubating semconv module, whose names are unstable.
SYSTEM = "messaging.system"
DESTINATION = "messaging.destination.name"
DESTINATION_TEMPLATE = "messaging.destination.template"
DESTINATION_TEMPORARY = "messaging.destination.temporary"
OPERATION_TYPE = "messaging.operation.type"
OPERATION_NAME = "messaging.operation.name"
MESSAGE_ID = "messaging.message.id"
DELIVERY_COUNT = "messaging.nats.delivery_count"
ACTOR_TYPE = "actormesh.actor_type"
KEY = "actormesh.key"
MESSAGE_TYPE = "actormesh.message_type"
ERROR_TYPE = "error.type"
ERROR_CODE = "actormesh.error.code"

#: `publish` was renamed `send` in the messaging conventions (v1.27).
SEND = "send"
PROCESS = "process"


def mailbox_parts(destination: str) -> tuple[str, str, str] | None:
    """(template, actor type, key) of a mailbox subject `<prefix>.mbox.<type>.<key>`
    (or `<prefix>.mbox.<type>.<level>.<key>`, a message sent with a priority)."""
    base, _, key = destination.rpartition(".")
    parts = base.split(".")
    if len(parts) == 4 and parts[3] in ("high", "low"):
        parts.pop()
    if len(parts) != 3 or parts[1] != "mbox" or not key:
        return None
    return base + ".*", parts[2], key


def span_name(operation: str, destination: str, mailbox: tuple[str, str, str] | None) -> str:
    """`<operation> <destination>`, with a mailbox's template for its subject (keys
    are unbounded, span names must not be); a reply's inbox is not in it at all."""
    if mailbox is not None:
        return f"{operation} {mailbox[0]}"
    if operation == "reply":
        return operation
    return f"{operation} {destination}"


def span_attributes(
    operation: str,
    destination: str,
    mailbox: tuple[str, str, str] | None,
    *,
    actor: tuple[str, str] = ("", ""),
    message_type: str = "",
    deliveries: int = 0,
) -> dict[str, Any]:
    """The messaging attributes of a span, but the message id: the one definition
    both tracers use. `actor`, `message_type` and `deliveries` (0: left out) are
    for the `process` operation."""
    attrs: dict[str, Any] = {SYSTEM: "nats", DESTINATION: destination}
    if operation == PROCESS:
        attrs[DESTINATION_TEMPLATE] = mailbox[0] if mailbox is not None else destination
        attrs[OPERATION_TYPE] = PROCESS
        attrs[OPERATION_NAME] = PROCESS
        attrs[ACTOR_TYPE], attrs[KEY] = actor
        attrs[MESSAGE_TYPE] = message_type
        if deliveries:
            attrs[DELIVERY_COUNT] = deliveries
        return attrs
    attrs[OPERATION_TYPE] = SEND
    attrs[OPERATION_NAME] = operation
    if mailbox is not None:
        attrs[DESTINATION_TEMPLATE], attrs[ACTOR_TYPE], attrs[KEY] = mailbox
    elif operation == "reply":
        attrs[DESTINATION_TEMPORARY] = True
    return attrs
