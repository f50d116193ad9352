"""The Agent Protocol wire as we write it, checked against the official SDK's codec."""

from __future__ import annotations

import pytest
from synadia_ai.agents import AgentSubject, ResponseChunk, StatusChunk
from synadia_ai.agents import messages as official

from actormesh import ConfigError
from actormesh.agents._protocol import (
    PromptError,
    Subjects,
    decode_chunk,
    decode_prompt,
    encode_chunk,
)


def test_subjects_match_the_official_sdk() -> None:
    ours = Subjects.of("my-agent", "alice_1", "main")
    theirs = AgentSubject.new(agent="my-agent", owner="alice_1", session_name="main")
    assert ours.subject("prompt") == theirs.prompt
    assert ours.subject("status") == theirs.status
    assert ours.subject("hb") == theirs.heartbeat
    for bad in (("My", "o", "s"), ("a.b", "o", "s"), ("a", "o.x", "s"), ("a", "o", "")):
        with pytest.raises(ConfigError):
            Subjects.of(*bad)


def test_chunks_decode_with_the_official_codec_and_back() -> None:
    assert official.decode_chunk(encode_chunk("status", "ack")) == StatusChunk(status="ack")
    assert official.decode_chunk(encode_chunk("response", "hé")) == ResponseChunk(text="hé")
    assert official.decode_chunk(encode_chunk("progress", {"x": 1})) is None  # §6.6
    assert decode_chunk(official.encode_chunk(ResponseChunk(text="t"))) == ("response", "t")
    assert decode_chunk(b'{"type":"response","data":{"text":"t","attachments":[]}}') == (
        "response",
        "t",
    )
    assert decode_chunk(b'{"type":"later","data":1}') == ("other", 1)
    for bad in (b"plain text", b"[1]", b'{"data":"x"}', b'{"type":"response","data":3}'):
        with pytest.raises(PromptError):
            decode_chunk(bad)


def test_prompt_bodies() -> None:
    assert decode_prompt(b"hello") == ("hello", 0)
    assert decode_prompt(b'  {"prompt": "hi", "future": 1}') == ("hi", 0)
    assert decode_prompt(b'{"prompt":"x","attachments":[{"filename":"a","content":""}]}') == (
        "x",
        1,
    )
    for bad in (b"", b'{"nope": 1}', b'{"prompt": ""}', b"\xff\xfe"):
        with pytest.raises(PromptError) as err:
            decode_prompt(bad)
        assert err.value.code == "400"
