"""Tracing settings from OTEL_* variables and the daemon config (pure logic)."""

from __future__ import annotations

import pytest

from observe_rt.config import DaemonConfig
from observe_rt.errors import InvalidArgument
from observe_rt.trace import clean
from observe_rt.trace.settings import TraceSettings


def resolve(env: dict, **config) -> TraceSettings:
    return TraceSettings.resolve(DaemonConfig(**config), env)


def test_off_by_default():
    assert resolve({}).enabled is False


def test_generic_endpoint_turns_on_grpc_plain_text():
    settings = resolve({"OTEL_EXPORTER_OTLP_ENDPOINT": "localhost:4317"})
    assert settings.enabled
    assert (settings.protocol, settings.endpoint) == ("grpc", "http://localhost:4317")
    assert (settings.sampler, settings.ratio) == ("parentbased_always_on", 1.0)


def test_generic_endpoint_over_http_gets_the_traces_path():
    env = {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4318/", "OTEL_EXPORTER_OTLP_PROTOCOL":
           "http/protobuf"}  # fmt: skip
    settings = resolve(env)
    assert (settings.protocol, settings.endpoint) == ("http", "http://c:4318/v1/traces")


def test_http_endpoint_without_a_path_gets_the_traces_path():
    settings = resolve({}, tracing_endpoint="collector:4318", tracing_protocol="http")
    assert settings.endpoint == "http://collector:4318/v1/traces"


def test_signal_specific_variables_win_over_generic_ones():
    env = {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://a:1", "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc",
           "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "https://b:2/x",
           "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL": "http/protobuf"}  # fmt: skip
    settings = resolve(env)
    assert (settings.protocol, settings.endpoint) == ("http", "https://b:2/x")


def test_config_keys_win_over_the_environment():
    env = {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://a:1", "OTEL_TRACES_SAMPLER": "always_off"}
    settings = resolve(env, tracing_endpoint="collector:4317", tracing_protocol="grpc",
                       tracing_sampling_ratio=0.25)  # fmt: skip
    assert settings.endpoint == "http://collector:4317"
    assert (settings.sampler, settings.ratio) == ("parentbased_traceidratio", 0.25)


def test_exporter_otlp_alone_uses_the_default_endpoint():
    assert resolve({"OTEL_TRACES_EXPORTER": "otlp"}).endpoint == "http://localhost:4317"


@pytest.mark.parametrize("env", [{"OTEL_SDK_DISABLED": "true"}, {"OTEL_TRACES_EXPORTER": "none"}])
def test_disabled_wins_over_an_endpoint(env):
    assert not resolve({**env, "OTEL_EXPORTER_OTLP_ENDPOINT": "http://a:1"}).enabled


def test_sampler_and_queue_variables():
    env = {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://a:1", "OTEL_TRACES_SAMPLER": "traceidratio",
           "OTEL_TRACES_SAMPLER_ARG": "0.5", "OTEL_BSP_MAX_QUEUE_SIZE": "16",
           "OTEL_BSP_SCHEDULE_DELAY": "250"}  # fmt: skip
    settings = resolve(env)
    assert (settings.sampler, settings.ratio) == ("traceidratio", 0.5)
    assert (settings.queue_size, settings.schedule_delay_ms) == (16, 250)


@pytest.mark.parametrize(
    ("env", "config", "message"),
    [
        ({"OTEL_TRACES_EXPORTER": "zipkin"}, {}, "OTEL_TRACES_EXPORTER=zipkin"),
        ({}, {"tracing_protocol": "http/json", "tracing_endpoint": "a:1"}, "grpc or http"),
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": "a:1", "OTEL_TRACES_SAMPLER": "sometimes"}, {},
         "OTEL_TRACES_SAMPLER=sometimes"),
        ({}, {"tracing_endpoint": "a:1", "tracing_sampling_ratio": 1.5}, "from 0 to 1"),
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": "a:1", "OTEL_BSP_MAX_QUEUE_SIZE": "0"}, {},
         "OTEL_BSP_MAX_QUEUE_SIZE"),
    ],
)  # fmt: skip
def test_bad_settings_are_refused_with_the_name(env, config, message):
    with pytest.raises(InvalidArgument, match=message):
        resolve(env, **config)


def test_clean_drops_none_and_secret_keys():
    dirty = {"container.id": "c", "k8s.pod.name": None, "registry.auth": "x",
             "http.request.header.authorization": "Basic x", "process.env": "A=1",
             "user.password": "p", "api.token": "t"}  # fmt: skip
    assert clean(dirty) == {"container.id": "c"}


@pytest.mark.parametrize(
    ("protocol", "endpoint", "module"),
    [("grpc", "http://c:4317", "grpc"), ("http", "http://c:4318/v1/traces", "http")],
)
def test_the_exporter_follows_the_protocol(protocol, endpoint, module):
    from observe_rt.trace.provider import otlp_exporter

    exporter = otlp_exporter(TraceSettings(enabled=True, endpoint=endpoint, protocol=protocol))
    try:
        assert type(exporter).__module__.startswith(f"opentelemetry.exporter.otlp.proto.{module}")
    finally:
        exporter.shutdown()


def test_resource_defaults_and_the_environment_wins(monkeypatch):
    from observe_rt.trace.provider import resource

    monkeypatch.delenv("OTEL_SERVICE_NAME", raising=False)
    monkeypatch.delenv("OTEL_RESOURCE_ATTRIBUTES", raising=False)
    ours = resource().attributes
    assert ours["service.name"] == "observe-rt" and ours["host.name"] and ours["service.version"]
    monkeypatch.setenv("OTEL_RESOURCE_ATTRIBUTES", "host.name=node-7,team=x")
    monkeypatch.setenv("OTEL_SERVICE_NAME", "runtime-a")
    theirs = resource().attributes
    assert (theirs["host.name"], theirs["team"], theirs["service.name"]) == (
        "node-7", "x", "runtime-a")  # fmt: skip
