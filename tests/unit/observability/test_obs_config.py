"""TracingConfig / MetricsConfig: the OTEL_* and ACTORMESH_METRICS_* variables."""

from __future__ import annotations

import dataclasses

import pytest

from actormesh import ActorMeshError, ConfigError
from actormesh.observability import MetricsConfig, ObservabilityError, TracingConfig


def test_no_variables_means_no_tracing() -> None:
    assert not TracingConfig.from_env({}).enabled
    assert not TracingConfig.from_env({"OTEL_SERVICE_NAME": "svc"}).enabled


def test_an_endpoint_alone_turns_otlp_on() -> None:
    cfg = TracingConfig.from_env({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318/"})
    assert cfg.exporters == ("otlp",)
    assert cfg.endpoint == "http://collector:4318/v1/traces"


def test_the_traces_endpoint_is_used_as_given() -> None:
    cfg = TracingConfig.from_env(
        {
            "OTEL_EXPORTER_OTLP_ENDPOINT": "http://ignored:4318",
            "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://c:9999/custom/path",
        }
    )
    assert cfg.endpoint == "http://c:9999/custom/path"


def test_exporter_without_endpoint_uses_the_default_port() -> None:
    cfg = TracingConfig.from_env({"OTEL_TRACES_EXPORTER": "otlp,console"})
    assert cfg.exporters == ("otlp", "console")
    assert cfg.endpoint == "http://localhost:4318/v1/traces"


@pytest.mark.parametrize(
    "env",
    [
        {"OTEL_TRACES_EXPORTER": "none", "OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4318"},
        {"OTEL_SDK_DISABLED": "true", "OTEL_TRACES_EXPORTER": "otlp"},
    ],
)
def test_explicitly_off(env: dict[str, str]) -> None:
    assert not TracingConfig.from_env(env).enabled


def test_all_the_settings() -> None:
    cfg = TracingConfig.from_env(
        {
            "OTEL_TRACES_EXPORTER": "otlp",
            "OTEL_EXPORTER_OTLP_HEADERS": "Authorization=Bearer%20abc,x-tenant=t1",
            "OTEL_EXPORTER_OTLP_TIMEOUT": "2500",
            "OTEL_EXPORTER_OTLP_COMPRESSION": "gzip",
            "OTEL_SERVICE_NAME": "orders",
            "OTEL_RESOURCE_ATTRIBUTES": "deployment.environment=prod,team=core",
            "OTEL_TRACES_SAMPLER": "parentbased_traceidratio",
            "OTEL_TRACES_SAMPLER_ARG": "0.25",
            "OTEL_BSP_SCHEDULE_DELAY": "100",
            "OTEL_BSP_MAX_QUEUE_SIZE": "4096",
            "OTEL_BSP_MAX_EXPORT_BATCH_SIZE": "256",
        }
    )
    assert cfg.headers == {"authorization": "Bearer abc", "x-tenant": "t1"}
    assert cfg.timeout == 2.5  # the variable is in milliseconds
    assert cfg.compression == "gzip"
    assert cfg.service_name == "orders"
    assert cfg.resource_attributes == {"deployment.environment": "prod", "team": "core"}
    assert (cfg.sampler, cfg.sampler_arg) == ("parentbased_traceidratio", 0.25)
    assert (cfg.schedule_delay_ms, cfg.max_queue_size, cfg.max_export_batch_size) == (
        100.0,
        4096,
        256,
    )


def test_traces_specific_variables_win() -> None:
    cfg = TracingConfig.from_env(
        {
            "OTEL_TRACES_EXPORTER": "otlp",
            "OTEL_EXPORTER_OTLP_HEADERS": "a=1",
            "OTEL_EXPORTER_OTLP_TRACES_HEADERS": "b=2",
            "OTEL_EXPORTER_OTLP_TIMEOUT": "1000",
            "OTEL_EXPORTER_OTLP_TRACES_TIMEOUT": "3000",
        }
    )
    assert cfg.headers == {"b": "2"}
    assert cfg.timeout == 3.0


@pytest.mark.parametrize(
    ("env", "says"),
    [
        ({"OTEL_TRACES_EXPORTER": "jaeger"}, "unsupported exporter"),
        ({"OTEL_TRACES_EXPORTER": "otlp", "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc"}, "grpc"),
        ({"OTEL_TRACES_EXPORTER": "otlp", "OTEL_TRACES_SAMPLER": "sometimes"}, "SAMPLER"),
        (
            {
                "OTEL_TRACES_EXPORTER": "otlp",
                "OTEL_TRACES_SAMPLER": "traceidratio",
                "OTEL_TRACES_SAMPLER_ARG": "2",
            },
            "between 0 and 1",
        ),
        ({"OTEL_TRACES_EXPORTER": "otlp", "OTEL_BSP_SCHEDULE_DELAY": "soon"}, "not a number"),
        ({"OTEL_TRACES_EXPORTER": "otlp", "OTEL_EXPORTER_OTLP_COMPRESSION": "zstd"}, "zstd"),
        ({"OTEL_TRACES_EXPORTER": "otlp", "OTEL_EXPORTER_OTLP_HEADERS": "novalue"}, "novalue"),
    ],
)
def test_bad_settings_are_config_errors(env: dict[str, str], says: str) -> None:
    with pytest.raises(ConfigError, match=says):
        TracingConfig.from_env(env)


def test_metrics_config() -> None:
    assert MetricsConfig.from_env({}) == MetricsConfig(host="127.0.0.1", poll_interval=5.0)
    cfg = MetricsConfig.from_env(
        {"ACTORMESH_METRICS_HOST": "0.0.0.0", "ACTORMESH_METRICS_POLL_INTERVAL": "0.5"}
    )
    assert (cfg.host, cfg.poll_interval) == ("0.0.0.0", 0.5)
    with pytest.raises(ConfigError):
        MetricsConfig(poll_interval=0)


def test_configs_are_frozen_and_keyword_only() -> None:
    cfg = TracingConfig()
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.timeout = 1.0  # type: ignore[misc]
    with pytest.raises(TypeError):
        MetricsConfig("0.0.0.0")  # type: ignore[misc]


def test_errors_belong_to_the_tree() -> None:
    assert issubclass(ObservabilityError, ActorMeshError)


def test_limits_come_from_the_standard_variables() -> None:
    config = TracingConfig.from_env(
        {
            "OTEL_TRACES_EXPORTER": "console",
            "OTEL_ATTRIBUTE_COUNT_LIMIT": "10",
            "OTEL_SPAN_ATTRIBUTE_COUNT_LIMIT": "5",
            "OTEL_ATTRIBUTE_VALUE_LENGTH_LIMIT": "64",
            "OTEL_SPAN_EVENT_COUNT_LIMIT": "0",
        }
    )
    assert config.attribute_count_limit == 5  # the span variable wins
    assert config.attribute_value_length_limit == 64  # the general one covers it
    assert config.event_count_limit == 0
    assert config.event_attribute_count_limit == 128
    default = TracingConfig.from_env({"OTEL_TRACES_EXPORTER": "console"})
    assert default.attribute_value_length_limit is None
    console = {"OTEL_TRACES_EXPORTER": "console"}
    with pytest.raises(ConfigError, match="OTEL_SPAN_EVENT_COUNT_LIMIT"):
        TracingConfig.from_env({**console, "OTEL_SPAN_EVENT_COUNT_LIMIT": "-1"})
    with pytest.raises(ConfigError, match="whole number"):
        TracingConfig.from_env({**console, "OTEL_ATTRIBUTE_COUNT_LIMIT": "many"})
