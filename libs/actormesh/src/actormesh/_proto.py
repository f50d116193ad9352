"""Generate `proto/` (AsyncAPI 3 + JSON Schemas) from the wire Structs.

python -m actormesh._proto proto          # write
python -m actormesh._proto proto --check  # exit 1 if proto/ has drifted
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import msgspec

from ._state import StateEnvelope
from ._tools import Grant, ToolSpec
from ._version import VERSION
from ._wire import (
    ControlReply,
    ControlRequest,
    DeadLetterInfo,
    ErrorReply,
    Event,
    Hdr,
    HealthReport,
    Heartbeat,
    WorkerStats,
)

__all__ = ["generate"]

WIRE_TYPES: tuple[type[msgspec.Struct], ...] = (
    ErrorReply,
    Heartbeat,
    Event,
    ControlRequest,
    ControlReply,
    WorkerStats,
    HealthReport,
    DeadLetterInfo,
    StateEnvelope,
    ToolSpec,
    Grant,
)

_ACTOR_MESSAGE = {
    "title": "ActorMessage",
    "description": "An actor message: a JSON object tagged by `type` (the message class "
    "name); the other fields are the actor's. Unknown types and fields are "
    "refused with a bad_message error reply and a dead letter.",
    "type": "object",
    "required": ["type"],
    "properties": {"type": {"type": "string"}},
}


def _headers(*names: str) -> dict[str, Any]:
    docs = {
        Hdr.MSG_ID: "Idempotency key; repeated ids within the duplicate window are dropped.",
        Hdr.REPLY_TO: "Inbox for the reply to an ask (core NATS).",
        Hdr.DEADLINE: "Unix time in ms after which the ask is not run.",
        Hdr.SENDER: "Name of the sending mesh connection.",
        Hdr.TRACEPARENT: "W3C trace context.",
        Hdr.PRINCIPAL: "Who sends (an actor type or an external principal); a tool "
        "handler admits the message only with a grant for it.",
        Hdr.TOOL: "The tool a call is for: <actor_type>.<handler>.",
        Hdr.TOOL_CALL_ID: "A tool call's id (gen_ai.tool.call.id on its spans).",
        Hdr.PROGRESS_TO: "Where a tool call's progress events go (a ToolProgress JSON "
        "object each): the original caller's inbox, carried on to nested calls.",
        Hdr.STATUS: "Reply status: absent or 200 for a value, else an ErrorReply body.",
        Hdr.PRIORITY: "The priority its sender gave it (high, low; absent: normal). The "
        "subject decides: high and low messages go to {prefix}.mbox.{actorType}.{level}.{key}.",
        Hdr.ERROR_CODE: "Dead letter: the error code.",
        Hdr.ERROR_TYPE: "Dead letter: the exception type.",
        Hdr.ERROR_MESSAGE: "Dead letter: the error message.",
        Hdr.DELIVERIES: "Dead letter: deliveries before it was dead-lettered.",
        Hdr.WORKER: "Dead letter: the worker that dead-lettered it.",
        Hdr.ORIGINAL_SUBJECT: "Dead letter: the mailbox subject it came from.",
        Hdr.ORIGINAL_SEQ: "Dead letter: its sequence in the mailbox stream.",
        Hdr.DEAD_AT: "Dead letter: unix time it was dead-lettered.",
    }
    return {
        "type": "object",
        "properties": {n: {"type": "string", "description": docs[n]} for n in names},
    }


def generate() -> dict[str, str]:
    """Every file of proto/, by relative path, as text."""
    _, components = msgspec.json.schema_components(
        WIRE_TYPES, ref_template="#/components/schemas/{name}"
    )
    files: dict[str, str] = {}
    for name, schema in sorted(components.items()):
        standalone = json.loads(json.dumps(schema).replace("#/components/schemas/", "#/$defs/"))
        deps = {
            n: json.loads(json.dumps(s).replace("#/components/schemas/", "#/$defs/"))
            for n, s in components.items()
            if n != name
        }
        schema_doc = {
            "$schema": "https://json-schema.org/draft/2020-12/schema",
            "$id": f"{name}.json",
            **standalone,
        }
        if deps:
            schema_doc["$defs"] = deps
        files[f"schemas/{name}.json"] = json.dumps(schema_doc, indent=2, sort_keys=True) + "\n"

    schemas = dict(sorted(components.items()))
    schemas["ActorMessage"] = _ACTOR_MESSAGE

    def msg(
        name: str, payload: str, summary: str, headers: dict[str, Any] | None = None
    ) -> dict[str, Any]:
        m: dict[str, Any] = {
            "name": name,
            "summary": summary,
            "contentType": "application/json",
            "payload": {"$ref": f"#/components/schemas/{payload}"},
        }
        if headers:
            m["headers"] = headers
        return m

    doc: dict[str, Any] = {
        "asyncapi": "3.0.0",
        "info": {
            "title": "actormesh",
            "version": VERSION,
            "description": "Typed actors on durable NATS JetStream mailboxes. Generated from "
            "actormesh._wire by `make proto`; do not edit by hand.",
        },
        "defaultContentType": "application/json",
        "channels": {
            "mailbox": {
                "address": "{prefix}.mbox.{actorType}.{key}",
                "description": "An actor type's mailbox (JetStream, WorkQueue, bounded, discard "
                "new). `_` is the key of keyless actors.",
                "parameters": {"prefix": {}, "actorType": {}, "key": {}},
                "messages": {
                    "actorMessage": msg(
                        "ActorMessage",
                        "ActorMessage",
                        "tell or ask an actor",
                        _headers(
                            Hdr.MSG_ID,
                            Hdr.REPLY_TO,
                            Hdr.DEADLINE,
                            Hdr.SENDER,
                            Hdr.TRACEPARENT,
                            Hdr.PRINCIPAL,
                            Hdr.TOOL,
                            Hdr.TOOL_CALL_ID,
                            Hdr.PROGRESS_TO,
                            Hdr.PRIORITY,
                        ),
                    )
                },
            },
            "priorityMailbox": {
                "address": "{prefix}.mbox.{actorType}.{level}.{key}",
                "description": "A high or low priority message to an actor type whose mailbox "
                "takes priorities (MailboxConfig(priorities=True)): the same stream, a "
                "consumer per level; the worker serves higher levels first. `level` is high "
                "or low; normal messages use the mailbox channel. Same messages and headers.",
                "parameters": {
                    "prefix": {},
                    "actorType": {},
                    "level": {"enum": ["high", "low"]},
                    "key": {},
                },
                "messages": {"actorMessage": {"$ref": "#/channels/mailbox/messages/actorMessage"}},
            },
            "reply": {
                "address": None,
                "description": "The inbox named in Am-Reply-To (core NATS).",
                "messages": {
                    "errorReply": msg(
                        "ErrorReply",
                        "ErrorReply",
                        "an ask's handler failed",
                        _headers(Hdr.STATUS, Hdr.TRACEPARENT),
                    )
                },
            },
            "heartbeat": {
                "address": "{prefix}.sys.hb.{actorType}.{worker}",
                "parameters": {"prefix": {}, "actorType": {}, "worker": {}},
                "messages": {"heartbeat": msg("Heartbeat", "Heartbeat", "worker liveness")},
            },
            "control": {
                # The id-only `{prefix}.sys.ctl.{worker}` is still answered, for
                # senders that do not know the worker's type.
                "address": "{prefix}.sys.ctl.{actorType}.{worker}",
                "parameters": {"prefix": {}, "actorType": {}, "worker": {}},
                "messages": {
                    "controlRequest": msg(
                        "ControlRequest", "ControlRequest", "drain, stop, stats or health"
                    ),
                    "controlReply": msg("ControlReply", "ControlReply", "the answer"),
                },
            },
            "events": {
                # `by`: the publishing worker's actor type, or `_supervisor`.
                "address": "{prefix}.sys.evt.{kind}.{by}",
                "parameters": {"prefix": {}, "kind": {}, "by": {}},
                "messages": {"event": msg("Event", "Event", "supervision and delivery events")},
            },
            "deadLetters": {
                "address": "{prefix}.dlq.{actorType}",
                "parameters": {"prefix": {}, "actorType": {}},
                "messages": {
                    "deadLetter": msg(
                        "DeadLetter",
                        "ActorMessage",
                        "the original payload, with the reason",
                        _headers(
                            Hdr.ERROR_CODE,
                            Hdr.ERROR_TYPE,
                            Hdr.ERROR_MESSAGE,
                            Hdr.DELIVERIES,
                            Hdr.WORKER,
                            Hdr.ORIGINAL_SUBJECT,
                            Hdr.ORIGINAL_SEQ,
                            Hdr.DEAD_AT,
                        ),
                    )
                },
            },
        },
        "operations": {
            "tell": {"action": "send", "channel": {"$ref": "#/channels/mailbox"}},
            "handle": {
                "action": "receive",
                "channel": {"$ref": "#/channels/mailbox"},
                "reply": {"channel": {"$ref": "#/channels/reply"}},
            },
            "heartbeat": {"action": "send", "channel": {"$ref": "#/channels/heartbeat"}},
            "control": {"action": "receive", "channel": {"$ref": "#/channels/control"}},
            "event": {"action": "send", "channel": {"$ref": "#/channels/events"}},
            "deadLetter": {"action": "send", "channel": {"$ref": "#/channels/deadLetters"}},
        },
        "components": {"schemas": schemas},
    }
    files["asyncapi.json"] = json.dumps(doc, indent=2, sort_keys=True) + "\n"
    return files


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m actormesh._proto")
    p.add_argument("outdir", type=Path)
    p.add_argument("--check", action="store_true")
    args = p.parse_args(argv)
    files = generate()
    out: Path = args.outdir
    if args.check:
        drift = [
            rel
            for rel, text in files.items()
            if not (out / rel).exists() or (out / rel).read_text() != text
        ]
        extra = (
            [
                str(f.relative_to(out))
                for f in out.rglob("*.json")
                if str(f.relative_to(out)) not in files
            ]
            if out.exists()
            else []
        )
        if drift or extra:
            print(
                f"proto/ has drifted from actormesh._wire: {sorted(drift + extra)}; "
                "run `make proto` and commit the result",
                file=sys.stderr,
            )
            return 1
        print(f"proto/ matches the wire types ({len(files)} files)")
        return 0
    for rel, text in files.items():
        (out / rel).parent.mkdir(parents=True, exist_ok=True)
        (out / rel).write_text(text)
    print(f"wrote {len(files)} files to {out}/")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
