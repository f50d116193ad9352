"""Pure parts: retry schedule, config validation, naming, handler discovery, sizes."""

from __future__ import annotations

import random
from pathlib import Path
from typing import ClassVar

import pytest
from hypothesis import given
from hypothesis import strategies as st
from nats.protocol.command import hpub_cmd

from actormesh import (
    Actor,
    ConfigError,
    Context,
    MailboxConfig,
    Message,
    RetryPolicy,
    SupervisionPolicy,
    WorkerConfig,
)
from actormesh._actor import spec_of
from actormesh._mesh import header_size
from actormesh._meshfile import load
from actormesh._subjects import Subjects, check_key
from actormesh._subjects import deliveries_of as _deliveries
from actormesh._subjects import stream_seq_of as _stream_seq

ROOT = Path(__file__).resolve().parents[2]


def test_retry_policy_defaults_follow_the_design() -> None:
    p = RetryPolicy()
    assert (p.attempts, p.base, p.multiplier, p.cap, p.jitter) == (3, 0.1, 2.0, 30.0, 0.1)
    assert len(list(p.delays())) == 2


@given(st.integers(min_value=1, max_value=60), st.integers(min_value=0, max_value=2**32))
def test_retry_delay_is_capped_exponential_with_bounded_jitter(n: int, seed: int) -> None:
    p = RetryPolicy(attempts=100, base=0.1, multiplier=2.0, cap=30.0, jitter=0.1)
    raw = min(0.1 * 2.0 ** (n - 1), 30.0)
    d = p.delay(n, rng=random.Random(seed))
    assert raw * 0.9 - 1e-9 <= d <= raw * 1.1 + 1e-9


def test_retry_policy_rejects_nonsense() -> None:
    with pytest.raises(ValueError, match="attempts"):
        RetryPolicy(attempts=0)
    with pytest.raises(ValueError, match="multiplier"):
        RetryPolicy(multiplier=0.5)


def test_mailbox_defaults_follow_the_design() -> None:
    m = MailboxConfig()
    assert (m.max_msgs, m.ack_wait, m.max_deliver, m.backoff, m.max_msg_size) == (
        10_000,
        30.0,
        5,
        (1.0, 5.0, 15.0),
        1024 * 1024,
    )
    assert [m.redelivery_delay(n) for n in (1, 2, 3, 4, 9)] == [1.0, 5.0, 15.0, 15.0, 15.0]


@pytest.mark.parametrize(
    "kwargs",
    [
        {"max_msgs": 0},
        {"max_deliver": 0},
        {"ack_wait": 0},
        {"storage": "tape"},
        {"backoff": (-1.0,)},
    ],
)
def test_mailbox_config_rejects_unbounded_or_invalid(kwargs: dict[str, object]) -> None:
    with pytest.raises(ConfigError):
        MailboxConfig(**kwargs)  # type: ignore[arg-type]


def test_worker_and_supervision_config_validation() -> None:
    with pytest.raises(ConfigError):
        WorkerConfig(concurrency=0)
    with pytest.raises(ConfigError):
        WorkerConfig(pull_expires=1.0, pull_idle_heartbeat=1.0)
    with pytest.raises(ConfigError):
        SupervisionPolicy(on_error="explode")
    assert SupervisionPolicy().max_restarts == 3 and SupervisionPolicy().within == 60


def test_subjects() -> None:
    s = Subjects("mesh")
    assert s.mailbox("counter", "user-42") == "mesh.mbox.counter.user-42"
    assert s.mailbox("echo") == "mesh.mbox.echo._"
    assert s.mailbox_stream("my-type") == "MESH_MBOX_MY_TYPE"
    assert s.heartbeat("counter", "w1") == "mesh.sys.hb.counter.w1"
    assert s.control("w1") == "mesh.sys.ctl.w1"
    assert s.event("escalated") == "mesh.sys.evt.escalated._supervisor"
    assert s.event("failed", "counter") == "mesh.sys.evt.failed.counter"
    assert s.events_of_kind("failed") == "mesh.sys.evt.failed.*"
    assert s.dlq("counter") == "mesh.dlq.counter"
    with pytest.raises(ConfigError):
        Subjects("bad.prefix")
    for bad in ("a.b", "a b", "*", ">", ""):
        with pytest.raises(ConfigError):
            check_key(bad)


class Inc(Message):
    by: int = 1


class Get(Message):
    pass


def test_handler_discovery() -> None:
    class Counter(Actor):
        async def inc(self, msg: Inc) -> None: ...

        async def get(self, msg: Get, ctx: Context) -> int:
            return 0

        def helper(self, x: int) -> int:
            return x

    spec = spec_of(Counter)
    assert spec.actor_type == "counter"
    assert set(spec.handlers) == {Inc, Get}
    assert spec.handlers[Get].reply_type is int and spec.handlers[Get].wants_context
    assert spec.handlers[Inc].reply_type is type(None)
    assert type(spec.decoder.decode(b'{"type":"Inc","by":3}')) is Inc


def test_discovery_errors_are_clear() -> None:
    class Empty(Actor):
        pass

    with pytest.raises(ConfigError, match="no handlers"):
        spec_of(Empty)

    class Twice(Actor):
        async def a(self, msg: Inc) -> None: ...
        async def b(self, msg: Inc) -> None: ...

    with pytest.raises(ConfigError, match="both handle Inc"):
        spec_of(Twice)

    class BadName(Actor):
        actor_type = "Has.Dots"

        async def a(self, msg: Inc) -> None: ...

    with pytest.raises(ConfigError, match="invalid actor type"):
        spec_of(BadName)


def test_single_type_actor_still_requires_the_tag() -> None:
    class One(Actor):
        actor_type = "one"
        mailbox: ClassVar[MailboxConfig] = MailboxConfig()

        async def inc(self, msg: Inc) -> None: ...

    import msgspec

    with pytest.raises(msgspec.ValidationError):
        spec_of(One).decoder.decode(b'{"by":1}')


@given(
    st.dictionaries(
        st.from_regex(r"[A-Za-z][A-Za-z0-9-]{0,20}", fullmatch=True),
        st.text(alphabet="abcxyz0123 -_", max_size=40),
        min_size=1,
        max_size=6,
    )
)
def test_header_size_matches_the_wire_encoding(headers: dict[str, str]) -> None:
    hdr = bytearray(b"NATS/1.0\r\n")
    for k, v in headers.items():
        hdr += f"{k}: {v.strip()}\r\n".encode()
    hdr += b"\r\n"
    headers = {k: v.strip() for k, v in headers.items()}
    cmd = hpub_cmd("s", "", bytes(hdr), b"")
    assert header_size(headers) == len(hdr) == int(cmd.split(b" ")[3])


def test_ack_subject_parsing() -> None:
    class M:
        reply = "$JS.ACK.STREAM.cons.3.1234.99.1700000000.7"

    assert _deliveries(M()) == 3  # type: ignore[arg-type]
    assert _stream_seq(M()) == 1234  # type: ignore[arg-type]

    class M12:
        reply = "$JS.ACK.dom.acchash.STREAM.cons.2.55.9.1700000000.0.tok"

    assert _deliveries(M12()) == 2  # type: ignore[arg-type]
    assert _stream_seq(M12()) == 55  # type: ignore[arg-type]


def test_the_repository_mesh_toml_loads() -> None:
    mf = load(ROOT / "mesh.toml")
    assert mf.broker.sync_always is True
    assert [c.name for _, c in mf.children()] == ["counter", "echo", "assistant", "mcp"]
    assert {g.principal for g in mf.grants} == {"assistant", "cli", "ide"}


def test_mesh_toml_errors_are_clear(tmp_path: Path) -> None:
    bad = tmp_path / "mesh.toml"
    bad.write_text('[[groups]]\nname="g"\nstrategy="all_for_none"\n')
    with pytest.raises(ConfigError, match="strategy"):
        load(bad)
    bad.write_text("[broker]\nprot = 1\n")
    with pytest.raises(ConfigError, match="prot"):
        load(bad)
    with pytest.raises(ConfigError, match="not found"):
        load(tmp_path / "missing.toml")
