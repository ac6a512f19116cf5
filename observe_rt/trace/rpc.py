"""The server span of a CRI call: joined to the kubelet's trace, named by semantic conventions.

    kubelet ── gRPC metadata "traceparent: 00-<trace>-<span>-01" ──> ServerSpan (child of it)
    malformed or missing traceparent ──> a new root span (the call itself is never refused)

Attributes are read from an allow-list of request fields only (pod and container metadata,
ids, image names): PullImage's `auth`, environment variables, mounts and annotations are never
looked at. Ids learnt from a response (a new pod or container) are remembered in lifecycle.py,
so later calls naming only the id still carry the pod and container names.
"""

from __future__ import annotations

import functools

import grpc
from opentelemetry import context as otel_context
from opentelemetry import trace as otel_trace
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator
from opentelemetry.trace.status import Status, StatusCode

from observe_rt.trace import lifecycle

PROPAGATOR = TraceContextTextMapPropagator()
# Server spans are errors only for these codes (OpenTelemetry gRPC conventions); the others
# (NOT_FOUND, INVALID_ARGUMENT, ...) are the caller's, and rpc.grpc.status_code shows them.
SERVER_ERRORS = {grpc.StatusCode.UNKNOWN, grpc.StatusCode.DEADLINE_EXCEEDED,
                 grpc.StatusCode.UNIMPLEMENTED, grpc.StatusCode.INTERNAL,
                 grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DATA_LOSS}  # fmt: skip


class ServerSpan:
    def __init__(self, tracer, servicer, method: str, request, context) -> None:
        self.method = method
        self.request_attributes = request_attributes(request)
        service = service_name(type(servicer))
        attributes = {"rpc.system": "grpc", "rpc.service": service, "rpc.method": method,
                      **lifecycle.known(self.request_attributes)}  # fmt: skip
        parent = PROPAGATOR.extract(metadata_carrier(context))
        self.span = tracer.start_span(f"{service}/{method}", context=parent,
                                      kind=otel_trace.SpanKind.SERVER,
                                      attributes=attributes)  # fmt: skip
        self._token = None

    def __enter__(self) -> ServerSpan:
        self._token = otel_context.attach(otel_trace.set_span_in_context(self.span))
        return self

    def finish(self, code: grpc.StatusCode, error: BaseException | None = None,
               response=None) -> None:  # fmt: skip
        self.span.set_attribute("rpc.grpc.status_code", code.value[0])
        if code in SERVER_ERRORS:
            self.span.set_status(Status(StatusCode.ERROR, f"{code.name}: {error}"))
        if response is not None:
            learnt = response_attributes(response)
            self.span.set_attributes(learnt)
            lifecycle.remember(self.method, {**self.request_attributes, **learnt},
                               self.span.get_span_context())  # fmt: skip

    def __exit__(self, *exc) -> bool:
        if self._token is not None:
            otel_context.detach(self._token)
        self.span.end()
        return False  # context.abort's exception goes on to gRPC


def metadata_carrier(context) -> dict[str, str]:
    """The call's text metadata as a carrier for the W3C propagator (binary keys skipped)."""
    try:
        metadata = context.invocation_metadata() or ()
    except Exception:  # noqa: BLE001 - a context without metadata: no parent
        return {}
    return {key.lower(): value for key, value in metadata if isinstance(value, str)}


@functools.cache
def service_name(servicer_class: type) -> str:
    """runtime.v1.RuntimeService or runtime.v1.ImageService, from the generated base class."""
    for base in servicer_class.__mro__:
        if base.__module__.endswith("api_pb2_grpc") and base.__name__.endswith("Servicer"):
            return "runtime.v1." + base.__name__.removesuffix("Servicer")
    return "runtime.v1." + servicer_class.__name__


def request_attributes(message) -> dict:
    """Semantic-convention attributes from the allow-listed fields of a CRI request."""
    attributes: dict = {}
    for field, value in message.ListFields():
        if field.name == "container_id":
            attributes["container.id"] = value
        elif field.name == "pod_sandbox_id":
            attributes["k8s.pod.sandbox.id"] = value
        elif field.message_type is not None and field.name in ("config", "sandbox_config", "image"):
            attributes.update(_config_attributes(field.message_type.name, value))
    return {key: value for key, value in attributes.items() if value is not None}


def _config_attributes(kind: str, value) -> dict:
    if kind == "PodSandboxConfig":
        meta = value.metadata
        return {"k8s.pod.name": meta.name or None, "k8s.namespace.name": meta.namespace or None,
                "k8s.pod.uid": meta.uid or None}  # fmt: skip
    if kind == "ContainerConfig":
        return {"k8s.container.name": value.metadata.name or None,
                "container.image.name": value.image.image or None}  # fmt: skip
    if kind == "ImageSpec":
        return {"container.image.name": value.image or None}
    return {}


def response_attributes(message) -> dict:
    """The id a response creates: a pod sandbox, a container or a pulled image."""
    attributes = {}
    for field, value in message.ListFields():
        if field.name == "pod_sandbox_id":
            attributes["k8s.pod.sandbox.id"] = value
        elif field.name == "container_id":
            attributes["container.id"] = value
        elif field.name == "image_ref":
            attributes["container.image.id"] = value
    return attributes
