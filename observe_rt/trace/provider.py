"""The SDK TracerProvider for some TraceSettings: resource, sampler, OTLP exporter, queue.

Imported only when tracing is on (the OTLP exporters pull in gRPC stubs or requests).
"""

from __future__ import annotations

import os

from opentelemetry.sdk.resources import OTELResourceDetector, Resource
from opentelemetry.sdk.trace import TracerProvider, sampling

from observe_rt import __version__, trace
from observe_rt.trace.queue import BoundedSpanProcessor
from observe_rt.trace.settings import TraceSettings

SERVICE_NAME = "observe-rt"


def build_provider(settings: TraceSettings, exporter=None) -> TracerProvider:
    """`exporter` defaults to OTLP over the settings' protocol and endpoint."""
    provider = TracerProvider(resource=resource(), sampler=sampler(settings))
    processor = BoundedSpanProcessor(
        exporter or otlp_exporter(settings), trace.stats, capacity=settings.queue_size,
        delay_s=settings.schedule_delay_ms / 1000,
    )  # fmt: skip
    provider.add_span_processor(processor)
    return provider


def resource() -> Resource:
    """service.name=observe-rt, service.version and host.name, each unless OTEL_SERVICE_NAME or
    OTEL_RESOURCE_ATTRIBUTES says otherwise (the environment wins, as the spec wants)."""
    ours = {"service.name": SERVICE_NAME, "service.version": __version__,
            "host.name": os.uname().nodename}  # fmt: skip
    from_env = OTELResourceDetector().detect().attributes
    if os.environ.get("OTEL_SERVICE_NAME"):
        from_env = {**from_env, "service.name": os.environ["OTEL_SERVICE_NAME"]}
    return Resource.create({k: v for k, v in ours.items() if k not in from_env})


def sampler(settings: TraceSettings) -> sampling.Sampler:
    ratio = sampling.TraceIdRatioBased(settings.ratio)
    return {
        "always_on": sampling.ALWAYS_ON,
        "always_off": sampling.ALWAYS_OFF,
        "traceidratio": ratio,
        "parentbased_always_on": sampling.ParentBased(sampling.ALWAYS_ON),
        "parentbased_always_off": sampling.ParentBased(sampling.ALWAYS_OFF),
        "parentbased_traceidratio": sampling.ParentBased(ratio),
    }[settings.sampler]


def otlp_exporter(settings: TraceSettings):
    """Headers (auth) and timeouts come from OTEL_EXPORTER_OTLP_* inside the exporter; they
    go to the collector only, never into spans."""
    if settings.protocol == "http":
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        return OTLPSpanExporter(endpoint=settings.endpoint)
    from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter

    insecure = settings.endpoint.startswith("http://")
    return OTLPSpanExporter(endpoint=settings.endpoint, insecure=insecure)
