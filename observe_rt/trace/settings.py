"""Where tracing settings come from: the standard OTEL_* variables, then the daemon config.

Tracing is on when an OTLP endpoint is known (config `tracing_endpoint`, or
OTEL_EXPORTER_OTLP_TRACES_ENDPOINT / OTEL_EXPORTER_OTLP_ENDPOINT), or OTEL_TRACES_EXPORTER=otlp
(then the OTLP default endpoint); off when OTEL_SDK_DISABLED=true or OTEL_TRACES_EXPORTER=none.
A config key that is set wins over the variable:

    config key               variable(s)                                           default
    tracing_endpoint         OTEL_EXPORTER_OTLP_TRACES_ENDPOINT, ..._OTLP_ENDPOINT  off
    tracing_protocol         OTEL_EXPORTER_OTLP_TRACES_PROTOCOL, ..._OTLP_PROTOCOL  grpc
    tracing_sampling_ratio   OTEL_TRACES_SAMPLER, OTEL_TRACES_SAMPLER_ARG           parent-based,
                                                                                    always on
    -                        OTEL_SERVICE_NAME, OTEL_RESOURCE_ATTRIBUTES            observe-rt
    -                        OTEL_EXPORTER_OTLP_HEADERS, ..._TIMEOUT (read by the exporter)
    -                        OTEL_BSP_MAX_QUEUE_SIZE, OTEL_BSP_SCHEDULE_DELAY       2048, 1000 ms

An endpoint without a scheme is plain text (a node-local collector); https:// uses TLS. Over
HTTP an endpoint without a path gets /v1/traces.
A sampling ratio is parent-based: a call whose caller (the kubelet) sampled it is always traced.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from urllib.parse import urlsplit

from observe_rt.errors import InvalidArgument

PROTOCOLS = {"grpc": "grpc", "http": "http", "http/protobuf": "http"}
DEFAULT_ENDPOINTS = {"grpc": "http://localhost:4317", "http": "http://localhost:4318/v1/traces"}
SAMPLERS = ("always_on", "always_off", "traceidratio", "parentbased_always_on",
            "parentbased_always_off", "parentbased_traceidratio")  # fmt: skip


@dataclass(frozen=True)
class TraceSettings:
    enabled: bool = False
    endpoint: str = ""
    protocol: str = "grpc"  # grpc | http
    sampler: str = "parentbased_always_on"
    ratio: float = 1.0
    queue_size: int = 2048
    schedule_delay_ms: int = 1000

    @classmethod
    def resolve(cls, cfg=None, environ: dict | None = None) -> TraceSettings:
        """The settings for `cfg` (a DaemonConfig, or None) under `environ` (os.environ)."""
        env = os.environ if environ is None else environ
        protocol = _protocol(
            getattr(cfg, "tracing_protocol", "")
            or _first(env, "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "OTEL_EXPORTER_OTLP_PROTOCOL")
            or "grpc"
        )
        exporter = env.get("OTEL_TRACES_EXPORTER", "").strip().lower()
        if exporter not in ("", "otlp", "none"):
            raise InvalidArgument(f"OTEL_TRACES_EXPORTER={exporter}: observe-rt exports traces "
                                  "with otlp (or none)")  # fmt: skip
        endpoint = getattr(cfg, "tracing_endpoint", "") or _env_endpoint(env, protocol)
        disabled = env.get("OTEL_SDK_DISABLED", "").strip().lower() == "true"
        if disabled or exporter == "none" or not (endpoint or exporter == "otlp"):
            return cls()
        sampler, ratio = _sampler(cfg, env)
        return cls(
            enabled=True, endpoint=_full_url(endpoint or DEFAULT_ENDPOINTS[protocol], protocol),
            protocol=protocol, sampler=sampler, ratio=ratio,
            queue_size=_positive_int(env, "OTEL_BSP_MAX_QUEUE_SIZE", 2048),
            schedule_delay_ms=_positive_int(env, "OTEL_BSP_SCHEDULE_DELAY", 1000),
        )  # fmt: skip


def _first(env, *names: str) -> str:
    return next((env[n].strip() for n in names if env.get(n, "").strip()), "")


def _protocol(value: str) -> str:
    key = value.strip().lower()
    if key not in PROTOCOLS:
        raise InvalidArgument(f"tracing protocol {value!r}: use grpc or http (http/protobuf)")
    return PROTOCOLS[key]


def _env_endpoint(env, protocol: str) -> str:
    """The signal-specific variable as given; the generic one gets /v1/traces over HTTP."""
    specific = env.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "").strip()
    if specific:
        return specific
    generic = env.get("OTEL_EXPORTER_OTLP_ENDPOINT", "").strip()
    if generic and protocol == "http":
        return generic.rstrip("/") + "/v1/traces"
    return generic


def _full_url(endpoint: str, protocol: str) -> str:
    """A scheme (http:// unless given) and, over HTTP, the /v1/traces path when none is given."""
    url = endpoint if "://" in endpoint else f"http://{endpoint}"
    if protocol == "http" and urlsplit(url).path in ("", "/"):
        url = url.rstrip("/") + "/v1/traces"
    return url


def _sampler(cfg, env) -> tuple[str, float]:
    ratio = getattr(cfg, "tracing_sampling_ratio", None)
    if ratio is not None:
        return "parentbased_traceidratio", _ratio(ratio, "tracing_sampling_ratio")
    name = env.get("OTEL_TRACES_SAMPLER", "").strip().lower() or "parentbased_always_on"
    if name not in SAMPLERS:
        raise InvalidArgument(f"OTEL_TRACES_SAMPLER={name}: use one of {', '.join(SAMPLERS)}")
    arg = env.get("OTEL_TRACES_SAMPLER_ARG", "").strip()
    return name, _ratio(arg, "OTEL_TRACES_SAMPLER_ARG") if arg else 1.0


def _ratio(value, name: str) -> float:
    try:
        ratio = float(value)
    except (TypeError, ValueError):
        raise InvalidArgument(f"{name}={value!r}: a number from 0 to 1") from None
    if not 0.0 <= ratio <= 1.0:
        raise InvalidArgument(f"{name}={value!r}: a number from 0 to 1")
    return ratio


def _positive_int(env, name: str, default: int) -> int:
    text = env.get(name, "").strip()
    if not text:
        return default
    if not text.isdigit() or int(text) < 1:
        raise InvalidArgument(f"{name}={text!r}: a whole number of at least 1")
    return int(text)
