"""Issue 18, items 3 and 4 without a broker: the mesh-wide replication setting and
how it resolves, and the errors a sender sees when a stream has no leader."""

from __future__ import annotations

import msgspec
import pytest
from nats.aio.msg import Msg

from actormesh import BrokerUnavailable, ConfigError, MailboxConfig, NoSuchActorType, Replication
from actormesh._mailbox import mailbox_stream_config
from actormesh._mesh import _ApiError, _refusal
from actormesh._meshfile import MeshFile
from actormesh._outage import missing
from actormesh._settings import Settings
from actormesh._subjects import Subjects


def test_a_type_takes_the_mesh_replication_unless_it_sets_its_own() -> None:
    mesh = Replication(replicas=3, placement_tags=("ssd",))
    plain = mesh.mailbox(MailboxConfig())
    assert (plain.replicas, plain.placement_tags) == (3, ("ssd",))
    own = mesh.mailbox(MailboxConfig(replicas=5, placement_tags=()))
    assert (own.replicas, own.placement_tags) == (5, ())
    # The library default is one copy, anywhere.
    lone = Replication().mailbox(MailboxConfig())
    assert (lone.replicas, lone.placement_tags) == (1, ())


@pytest.mark.parametrize("replicas", [0, 6, -1])
def test_replicas_are_between_one_and_five(replicas: int) -> None:
    with pytest.raises(ConfigError, match="replicas"):
        Replication(replicas=replicas)
    with pytest.raises(ConfigError, match="replicas"):
        MailboxConfig(replicas=replicas)


def test_placement_tags_must_be_words() -> None:
    with pytest.raises(ConfigError, match="placement tags"):
        Replication(placement_tags=("",))
    with pytest.raises(ConfigError, match="placement tags"):
        MailboxConfig(placement_tags=(" az1",))


def test_the_mailbox_stream_carries_replicas_and_placement() -> None:
    subjects = Subjects("mesh")
    cfg = mailbox_stream_config(
        subjects, "counter", MailboxConfig(), Replication(replicas=3, placement_tags=("az1",))
    )
    assert cfg.num_replicas == 3
    assert cfg.placement is not None and cfg.placement.tags == ["az1"]
    # Without a mesh setting: one replica, no placement (as before).
    plain = mailbox_stream_config(subjects, "counter", MailboxConfig())
    assert (plain.num_replicas, plain.placement) == (1, None)


def test_mesh_toml_sets_the_mesh_wide_replication() -> None:
    meshfile = msgspec.toml.decode(
        b'[mesh]\nreplicas = 3\nplacement_tags = ["ssd", "az1"]\n', type=MeshFile
    )
    assert meshfile.mesh.replication() == Replication(replicas=3, placement_tags=("ssd", "az1"))
    assert MeshFile().mesh.replication() == Replication()
    with pytest.raises(msgspec.ValidationError, match="replicas"):
        msgspec.toml.decode(b"[mesh]\nreplicas = 7\n", type=MeshFile)


def test_the_environment_sets_the_mesh_wide_replication() -> None:
    assert Settings.from_env({}).replication is None
    env = {"ACTORMESH_REPLICAS": "3", "ACTORMESH_PLACEMENT_TAGS": "ssd, az1,"}
    assert Settings.from_env(env).replication == Replication(
        replicas=3, placement_tags=("ssd", "az1")
    )
    with pytest.raises(ConfigError, match="ACTORMESH_REPLICAS"):
        Settings.from_env({"ACTORMESH_REPLICAS": "three"})


def test_a_jetstream_503_is_broker_unavailable_and_retryable() -> None:
    err = _refusal(
        "mesh.mbox.counter.k",
        _ApiError(code=503, err_code=10008, description="JetStream system temporarily unavailable"),
        10,
    )
    assert isinstance(err, BrokerUnavailable)
    assert err.retryable and err.reason == "jetstream_unavailable"
    assert err.fields()["reason"] == "jetstream_unavailable"
    # A node that is no longer the stream's leader answers 500: passing, too.
    not_leader = _ApiError(
        code=500, err_code=10009, description="JetStream cluster can not handle request"
    )
    err = _refusal("$KV.mesh_state_t.k", not_leader, 10)
    assert isinstance(err, BrokerUnavailable) and err.reason == "jetstream_unavailable"
    # A refusal in the 4xx range is the message's, and is not retried.
    bad = _ApiError(code=400, err_code=10070, description="wrong last msg ID: x")
    err = _refusal("mesh.mbox.counter.k", bad, 10)
    assert not isinstance(err, BrokerUnavailable) and not err.retryable


def test_no_responders_is_broker_unavailable_until_the_stream_is_known_missing() -> None:
    from actormesh._mesh import Mesh

    mesh = Mesh.__new__(Mesh)
    msg = Msg(_client=None, subject="_INBOX.x", headers={"Status": "503"})  # type: ignore[arg-type]
    with pytest.raises(BrokerUnavailable) as info:
        mesh._parse_puback("mesh.mbox.counter.k", msg, 5.0)
    assert info.value.reason == "no_responders" and info.value.retryable
    # Only once JetStream says no stream stores the subject is it NoSuchActorType,
    # and only for a mailbox: the mesh's own streams are never "an actor type".
    assert isinstance(missing("mesh.mbox.counter.k"), NoSuchActorType)
    dlq = missing("mesh.dlq.counter")
    assert not isinstance(dlq, NoSuchActorType)
    assert dlq.code == "no_stream" and not dlq.retryable


def test_broker_unavailable_names_what_to_resend() -> None:
    exc = BrokerUnavailable("x", reason="no_pub_ack", subject="mesh.mbox.a.k", msg_id="m-1")
    assert exc.fields() == {
        "code": "broker_unavailable",
        "message": "x",
        "retryable": True,
        "reason": "no_pub_ack",
        "subject": "mesh.mbox.a.k",
        "msg_id": "m-1",
    }
