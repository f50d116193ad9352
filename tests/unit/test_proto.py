"""proto/ is generated from the wire Structs; drift fails here (run `make proto`)."""

import json
from pathlib import Path

import jsonschema
import msgspec

from actormesh import ErrorReply, Event, Heartbeat
from actormesh._proto import generate

PROTO = Path(__file__).resolve().parents[2] / "proto"


def test_proto_matches_the_wire_types() -> None:
    files = generate()
    for rel, text in files.items():
        path = PROTO / rel
        assert path.exists(), f"{rel} missing: run `make proto`"
        assert path.read_text() == text, f"{rel} drifted: run `make proto`"
    on_disk = {str(p.relative_to(PROTO)) for p in PROTO.rglob("*.json")}
    assert on_disk == set(files), "stale files in proto/: run `make proto`"


def test_asyncapi_document_shape() -> None:
    doc = json.loads((PROTO / "asyncapi.json").read_text())
    assert doc["asyncapi"] == "3.0.0"
    assert doc["channels"]["mailbox"]["address"] == "{prefix}.mbox.{actorType}.{key}"
    for op in doc["operations"].values():
        ref = op["channel"]["$ref"].split("/")[-1]
        assert ref in doc["channels"]


def test_wire_values_validate_against_their_schemas() -> None:
    samples = [
        ErrorReply(code="c", type="T", message="m", retryable=False),
        Event(kind="started", at=1.0, source="w"),
        Heartbeat(
            worker="w",
            actor_type="a",
            pid=1,
            host="h",
            started_at=0,
            seq=1,
            in_flight=0,
            handled=0,
            failed=0,
            dead_lettered=0,
            restarts=0,
            version="0",
            status="running",
        ),
    ]
    for value in samples:
        schema = json.loads((PROTO / "schemas" / f"{type(value).__name__}.json").read_text())
        jsonschema.validate(json.loads(msgspec.json.encode(value)), schema)
    bad = {"code": "c", "type": "T", "message": "m", "retryable": False, "extra": 1}
    schema = json.loads((PROTO / "schemas" / "ErrorReply.json").read_text())
    try:
        jsonschema.validate(bad, schema)
    except jsonschema.ValidationError:
        pass
    else:
        raise AssertionError("unknown fields must be refused by the schema too")
