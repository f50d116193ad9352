"""Observability settings read from an explicit environment mapping.

Nothing here imports OpenTelemetry, prometheus-client or aiohttp: deciding that
tracing is off must cost a worker no imports. The caller passes the mapping
(the CLI passes `os.environ`), so tests and embedders never touch the process
environment.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Literal
from urllib.parse import unquote

from .._errors import ActorMeshError, ConfigError

__all__ = [
    "Compression",
    "ExporterName",
    "MetricsConfig",
    "ObservabilityError",
    "SamplerName",
    "TracingConfig",
]

ExporterName = Literal["otlp", "console"]
Compression = Literal["none", "gzip", "deflate"]
SamplerName = Literal[
    "always_on",
    "always_off",
    "traceidratio",
    "parentbased_always_on",
    "parentbased_always_off",
    "parentbased_traceidratio",
]


class ObservabilityError(ActorMeshError):
    """Tracing, metrics or the health endpoint could not be set up."""

    code = "observability_error"


# What the variables may say, to the typed value (spelled twice so that the
# value keeps its Literal type).
_SAMPLERS: dict[str, SamplerName] = {
    "always_on": "always_on",
    "always_off": "always_off",
    "traceidratio": "traceidratio",
    "parentbased_always_on": "parentbased_always_on",
    "parentbased_always_off": "parentbased_always_off",
    "parentbased_traceidratio": "parentbased_traceidratio",
}
_EXPORTERS: dict[str, ExporterName] = {"otlp": "otlp", "console": "console"}
_COMPRESSIONS: dict[str, Compression] = {"none": "none", "gzip": "gzip", "deflate": "deflate"}
_TRUE = frozenset({"true", "1", "yes", "on"})


@dataclass(frozen=True, kw_only=True, slots=True)
class TracingConfig:
    """Which span exporters to build and how, per the OTEL_* environment variables.

    Only OTLP over http/protobuf (and `console`, for a quick look) is supported:
    the gRPC exporter is not a dependency of actormesh.
    """

    #: Empty means tracing is off: `mesh.tracer` stays None.
    exporters: tuple[ExporterName, ...] = ()
    #: The full traces URL (`.../v1/traces`).
    endpoint: str = "http://localhost:4318/v1/traces"
    headers: Mapping[str, str] = field(default_factory=dict)
    #: Seconds (the variable is in milliseconds, as the specification says).
    timeout: float = 10.0
    compression: Compression = "none"
    #: TLS for an https endpoint: the CA file the collector's certificate is
    #: checked against (None: the system's), and a client certificate and key
    #: for mutual TLS.
    certificate: str | None = None
    client_certificate: str | None = None
    client_key: str | None = None
    service_name: str | None = None
    resource_attributes: Mapping[str, str] = field(default_factory=dict)
    sampler: SamplerName = "parentbased_always_on"
    sampler_arg: float = 1.0
    #: BatchSpanProcessor settings.
    schedule_delay_ms: float = 5000.0
    max_queue_size: int = 2048
    max_export_batch_size: int = 512
    export_timeout_ms: float = 30000.0
    #: Span limits: what a span may gather while it runs (a handler's attributes
    #: and events, a failure's). Past a count limit the oldest entry is dropped
    #: and counted, as the SDK does; None: string values are not truncated.
    attribute_count_limit: int = 128
    attribute_value_length_limit: int | None = None
    event_count_limit: int = 128
    event_attribute_count_limit: int = 128

    @property
    def enabled(self) -> bool:
        return bool(self.exporters)

    def resource(
        self,
        *,
        service_name: str | None = None,
        instance_id: str | None = None,
        sdk: tuple[str, str],
    ) -> dict[str, str]:
        """The resource attributes spans carry.

        OTEL_SERVICE_NAME wins over a `service.name` in OTEL_RESOURCE_ATTRIBUTES,
        which wins over `service_name` (the caller's default); `sdk` is the
        (name, version) of what records the spans.
        """
        attributes: dict[str, str] = {
            "telemetry.sdk.language": "python",
            "telemetry.sdk.name": sdk[0],
            "telemetry.sdk.version": sdk[1],
        }
        attributes.update(self.resource_attributes)
        if self.service_name:
            attributes["service.name"] = self.service_name
        elif "service.name" not in attributes:
            attributes["service.name"] = service_name or "actormesh"
        if instance_id and "service.instance.id" not in attributes:
            attributes["service.instance.id"] = instance_id
        return attributes

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> TracingConfig:
        """Read the standard OTEL_* variables from `env`.

        Tracing is on when OTEL_TRACES_EXPORTER names an exporter, or when it is
        unset and an OTLP endpoint is given. The specification's default exporter
        is `otlp` even with no endpoint; we deviate so that a worker started
        without any configuration never sends spans to a localhost port nobody
        listens on, and pays nothing for tracing.
        """
        if env.get("OTEL_SDK_DISABLED", "").strip().lower() in _TRUE:
            return cls()
        exporters = _exporters(env)
        if not exporters:
            return cls()
        if "otlp" in exporters:
            protocol = (_otlp_var(env, "PROTOCOL") or "http/protobuf").strip()
            if protocol != "http/protobuf":
                raise ConfigError(
                    f"OTLP protocol {protocol!r} is not supported: actormesh exports "
                    "http/protobuf (set OTEL_EXPORTER_OTLP_PROTOCOL=http/protobuf and point "
                    "the endpoint at the collector's HTTP port, usually 4318)"
                )
        raw_compression = (_otlp_var(env, "COMPRESSION") or "none").strip().lower()
        compression = _COMPRESSIONS.get(raw_compression)
        if compression is None:
            raise ConfigError(f"OTLP compression {raw_compression!r}: use none, gzip or deflate")
        sampler, sampler_arg = _sampler(env)
        timeout_ms = _number(
            env,
            "OTEL_EXPORTER_OTLP_TRACES_TIMEOUT",
            _number(env, "OTEL_EXPORTER_OTLP_TIMEOUT", 10000.0),
        )

        return cls(
            exporters=exporters,
            endpoint=_endpoint(env),
            headers=_pairs(_otlp_var(env, "HEADERS") or "", lower_keys=True),
            timeout=timeout_ms / 1000.0,
            compression=compression,
            certificate=_otlp_file(env, "CERTIFICATE"),
            client_certificate=_otlp_file(env, "CLIENT_CERTIFICATE"),
            client_key=_otlp_file(env, "CLIENT_KEY"),
            service_name=(env.get("OTEL_SERVICE_NAME") or "").strip() or None,
            resource_attributes=_pairs(env.get("OTEL_RESOURCE_ATTRIBUTES", "")),
            sampler=sampler,
            sampler_arg=sampler_arg,
            schedule_delay_ms=_number(env, "OTEL_BSP_SCHEDULE_DELAY", 5000.0),
            max_queue_size=int(_number(env, "OTEL_BSP_MAX_QUEUE_SIZE", 2048)),
            max_export_batch_size=int(_number(env, "OTEL_BSP_MAX_EXPORT_BATCH_SIZE", 512)),
            export_timeout_ms=_number(env, "OTEL_BSP_EXPORT_TIMEOUT", 30000.0),
            attribute_count_limit=_count(
                env, "OTEL_SPAN_ATTRIBUTE_COUNT_LIMIT", "OTEL_ATTRIBUTE_COUNT_LIMIT"
            ),
            attribute_value_length_limit=_limit(
                env, "OTEL_SPAN_ATTRIBUTE_VALUE_LENGTH_LIMIT", "OTEL_ATTRIBUTE_VALUE_LENGTH_LIMIT"
            ),
            event_count_limit=_count(env, "OTEL_SPAN_EVENT_COUNT_LIMIT"),
            event_attribute_count_limit=_count(env, "OTEL_EVENT_ATTRIBUTE_COUNT_LIMIT"),
        )


@dataclass(frozen=True, kw_only=True, slots=True)
class MetricsConfig:
    """Where a worker serves /metrics and /healthz, and how often it polls its mailbox."""

    #: 127.0.0.1 by default: a metrics port open to the network is a decision.
    host: str = "127.0.0.1"
    #: Seconds between stream/consumer info requests (mailbox depth, pending acks).
    poll_interval: float = 5.0

    def __post_init__(self) -> None:
        if self.poll_interval <= 0:
            raise ConfigError("the mailbox poll interval must be > 0")

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> MetricsConfig:
        """ACTORMESH_METRICS_HOST and ACTORMESH_METRICS_POLL_INTERVAL (seconds)."""
        return cls(
            host=(env.get("ACTORMESH_METRICS_HOST") or "").strip() or "127.0.0.1",
            poll_interval=_number(env, "ACTORMESH_METRICS_POLL_INTERVAL", 5.0),
        )


def _exporters(env: Mapping[str, str]) -> tuple[ExporterName, ...]:
    """The exporters OTEL_TRACES_EXPORTER names; unset, `otlp` when an endpoint is
    given, else none (see `TracingConfig.from_env`)."""
    raw = env.get("OTEL_TRACES_EXPORTER")
    if raw is None or not raw.strip():
        endpoint = (
            env.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "").strip()
            or env.get("OTEL_EXPORTER_OTLP_ENDPOINT", "").strip()
        )
        return ("otlp",) if endpoint else ()
    names = [n.strip().lower() for n in raw.split(",") if n.strip()]
    if "none" in names:
        return ()
    unknown = sorted(set(names) - _EXPORTERS.keys())
    if unknown:
        raise ConfigError(
            f"OTEL_TRACES_EXPORTER={raw!r}: unsupported exporter(s) {unknown}; "
            "actormesh supports otlp (http/protobuf), console and none"
        )
    return tuple(dict.fromkeys(_EXPORTERS[n] for n in names))


def _endpoint(env: Mapping[str, str]) -> str:
    """The traces URL: the signal's own variable as it is, else the base one
    with `/v1/traces` appended."""
    traces_endpoint = env.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "").strip()
    if traces_endpoint:
        return traces_endpoint
    base = env.get("OTEL_EXPORTER_OTLP_ENDPOINT", "").strip() or "http://localhost:4318"
    return base.rstrip("/") + "/v1/traces"


def _sampler(env: Mapping[str, str]) -> tuple[SamplerName, float]:
    """OTEL_TRACES_SAMPLER and, for a ratio sampler, OTEL_TRACES_SAMPLER_ARG."""
    raw = env.get("OTEL_TRACES_SAMPLER", "parentbased_always_on").strip().lower()
    sampler = _SAMPLERS.get(raw)
    if sampler is None:
        raise ConfigError(f"OTEL_TRACES_SAMPLER={raw!r}: use one of {', '.join(sorted(_SAMPLERS))}")
    sampler_arg = 1.0
    if sampler.endswith("traceidratio"):
        sampler_arg = _number(env, "OTEL_TRACES_SAMPLER_ARG", 1.0)
        if not 0.0 <= sampler_arg <= 1.0:
            raise ConfigError("OTEL_TRACES_SAMPLER_ARG must be between 0 and 1")
    return sampler, sampler_arg


def _otlp_var(env: Mapping[str, str], what: str) -> str | None:
    """OTEL_EXPORTER_OTLP_TRACES_<what> if set and not empty, else
    OTEL_EXPORTER_OTLP_<what>: the signal's own variable wins."""
    return env.get(f"OTEL_EXPORTER_OTLP_TRACES_{what}") or env.get(f"OTEL_EXPORTER_OTLP_{what}")


def _otlp_file(env: Mapping[str, str], what: str) -> str | None:
    """A file path from `_otlp_var`; None when unset or blank."""
    return (_otlp_var(env, what) or "").strip() or None


def _number(env: Mapping[str, str], name: str, default: float) -> float:
    raw = env.get(name)
    if raw is None or not raw.strip():
        return default
    try:
        return float(raw)
    except ValueError:
        raise ConfigError(f"{name}={raw!r} is not a number") from None


def _limit(env: Mapping[str, str], name: str, general: str = "") -> int | None:
    """A span limit: `name`, else the general variable that covers it, else None."""
    for var in (name, general):
        raw = env.get(var) if var else None
        if raw is None or not raw.strip():
            continue
        try:
            n = int(raw)
        except ValueError:
            raise ConfigError(f"{var}={raw!r} is not a whole number") from None
        if n < 0:
            raise ConfigError(f"{var}={raw!r} must not be negative")
        return n
    return None


def _count(env: Mapping[str, str], name: str, general: str = "") -> int:
    """A count limit; the specification's default is 128."""
    n = _limit(env, name, general)
    return 128 if n is None else n


def _pairs(raw: str, *, lower_keys: bool = False) -> dict[str, str]:
    """`k1=v1,k2=v2` with percent-encoding (W3C baggage style, as OTEL_* use)."""
    out: dict[str, str] = {}
    for item in raw.split(","):
        key, sep, value = item.partition("=")
        key = unquote(key).strip()
        if not sep or not key:
            if item.strip():
                raise ConfigError(f"bad key=value pair {item.strip()!r} in {raw!r}")
            continue
        out[key.lower() if lower_keys else key] = unquote(value).strip()
    return out
