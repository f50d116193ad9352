"""The public surface is deliberate: this pins it."""

import actormesh
import actormesh.testing


def test_exported_names_are_pinned() -> None:
    assert sorted(actormesh.__all__) == sorted(
        [
            "Actor",
            "ActorMeshError",
            "ActorRef",
            "AskTimeout",
            "BadMessage",
            "BadServerUrl",
            "BrokerUnavailable",
            "CallHandler",
            "ConfigError",
            "Context",
            "DeadLetterInfo",
            "ErrorReply",
            "Event",
            "FullPolicy",
            "Grant",
            "HandleMessage",
            "HandlerError",
            "HandlerInterceptor",
            "Heartbeat",
            "MailboxConfig",
            "MailboxConflict",
            "MailboxFull",
            "Mesh",
            "Message",
            "MessageInput",
            "NoSuchActorType",
            "Outcome",
            "Passivation",
            "PayloadTooLarge",
            "PrioritiesOff",
            "Receipt",
            "RemoteError",
            "Replication",
            "RetryPolicy",
            "StateConflict",
            "SupervisionPolicy",
            "ToolArgumentsInvalid",
            "ToolBus",
            "ToolDenied",
            "ToolError",
            "ToolFailed",
            "ToolNotFound",
            "ToolProgress",
            "ToolRejected",
            "ToolSpec",
            "ToolTimeout",
            "Worker",
            "WorkerConfig",
            "WorkerInterceptor",
            "WorkerStatus",
            "tool",
            "__version__",
        ]
    )
    for name in actormesh.__all__:
        assert hasattr(actormesh, name), name


def test_testing_names_are_pinned() -> None:
    assert sorted(actormesh.testing.__all__) == [
        "Broker",
        "NatsCluster",
        "NatsServer",
        "ServerConfig",
        "broker",
        "eventually",
        "running_worker",
        "unique_prefix",
    ]


def test_every_error_has_one_root() -> None:
    errors = [
        getattr(actormesh, n)
        for n in actormesh.__all__
        if isinstance(getattr(actormesh, n), type)
        and issubclass(getattr(actormesh, n), BaseException)
    ]
    assert len(errors) >= 10
    for err in errors:
        assert issubclass(err, actormesh.ActorMeshError), err
