"""Server spans of CRI calls over a real gRPC server on a unix socket (no root needed).

The servicer is a stand-in for the runtime's (pure logic under test: the rpc.unary wrapper and
trace/rpc.py); the daemon's real spans are checked in tests/integration/test_trace_spans.py.
"""

from __future__ import annotations

import subprocess
import sys
from concurrent import futures

import grpc
import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind
from opentelemetry.trace.status import StatusCode

from observe_rt import errors, trace
from observe_rt.cri.rpc import unary
from observe_rt.cri.v1 import api_pb2, api_pb2_grpc
from observe_rt.trace.rpc import request_attributes, service_name

TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
PARENT_ID = "00f067aa0ba902b7"


class FakeRuntime(api_pb2_grpc.RuntimeServiceServicer):
    @unary
    def RunPodSandbox(self, request, context):  # noqa: N802
        return api_pb2.RunPodSandboxResponse(pod_sandbox_id="pod-1")

    @unary
    def StartContainer(self, request, context):  # noqa: N802
        raise errors.NotFound(f"container {request.container_id!r} not found")

    @unary
    def StopContainer(self, request, context):  # noqa: N802
        raise RuntimeError("a bug")


@pytest.fixture
def spans():
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    trace.install(provider)
    yield exporter
    trace.shutdown()


@pytest.fixture
def stub(tmp_path):
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    api_pb2_grpc.add_RuntimeServiceServicer_to_server(FakeRuntime(), server)
    socket = f"unix://{tmp_path}/cri.sock"
    server.add_insecure_port(socket)
    server.start()
    with grpc.insecure_channel(socket) as channel:
        yield api_pb2_grpc.RuntimeServiceStub(channel)
    server.stop(0)


def pod_request() -> api_pb2.RunPodSandboxRequest:
    meta = api_pb2.PodSandboxMetadata(name="web", namespace="shop", uid="uid-1")
    return api_pb2.RunPodSandboxRequest(config=api_pb2.PodSandboxConfig(metadata=meta))


def test_server_span_joins_the_callers_trace(spans, stub):
    traceparent = f"00-{TRACE_ID}-{PARENT_ID}-01"
    stub.RunPodSandbox(pod_request(), metadata=[("traceparent", traceparent)], timeout=30)
    (span,) = spans.get_finished_spans()
    assert span.name == "runtime.v1.RuntimeService/RunPodSandbox"
    assert span.kind == SpanKind.SERVER
    assert format(span.context.trace_id, "032x") == TRACE_ID
    assert format(span.parent.span_id, "016x") == PARENT_ID and span.parent.is_remote
    assert dict(span.attributes) == {
        "rpc.system": "grpc", "rpc.service": "runtime.v1.RuntimeService",
        "rpc.method": "RunPodSandbox", "rpc.grpc.status_code": 0, "k8s.pod.name": "web",
        "k8s.namespace.name": "shop", "k8s.pod.uid": "uid-1", "k8s.pod.sandbox.id": "pod-1",
    }  # fmt: skip


@pytest.mark.parametrize(
    "traceparent",
    [
        "garbage",
        f"00-{TRACE_ID}-{PARENT_ID}",  # no flags
        f"00-{'0' * 32}-{PARENT_ID}-01",  # all-zero trace id
        f"ff-{TRACE_ID}-{PARENT_ID}-01",  # forbidden version
        f"00-{TRACE_ID.upper()}-{PARENT_ID}-01",  # upper-case hex
    ],
)
def test_malformed_traceparent_is_ignored(spans, stub, traceparent):
    response = stub.RunPodSandbox(pod_request(), metadata=[("traceparent", traceparent)],
                                  timeout=30)  # fmt: skip
    assert response.pod_sandbox_id == "pod-1"
    (span,) = spans.get_finished_spans()
    assert span.parent is None, "a malformed traceparent must not become the parent"
    assert format(span.context.trace_id, "032x") != TRACE_ID


def test_client_errors_keep_the_status_code_without_marking_the_span_failed(spans, stub):
    with pytest.raises(grpc.RpcError) as caught:
        stub.StartContainer(api_pb2.StartContainerRequest(container_id="c1"), timeout=30)
    assert caught.value.code() == grpc.StatusCode.NOT_FOUND
    (span,) = spans.get_finished_spans()
    assert span.attributes["rpc.grpc.status_code"] == grpc.StatusCode.NOT_FOUND.value[0]
    assert span.attributes["container.id"] == "c1"
    assert span.status.status_code == StatusCode.UNSET


def test_server_errors_mark_the_span_failed(spans, stub):
    with pytest.raises(grpc.RpcError):
        stub.StopContainer(api_pb2.StopContainerRequest(container_id="c1"), timeout=30)
    (span,) = spans.get_finished_spans()
    assert span.status.status_code == StatusCode.ERROR
    assert "INTERNAL: a bug" in span.status.description


def test_pull_image_attributes_never_read_the_auth_config():
    request = api_pb2.PullImageRequest(
        image=api_pb2.ImageSpec(image="registry.local/app:1"),
        auth=api_pb2.AuthConfig(username="alice", password="s3cret", auth="YWxpY2U6czNjcmV0",
                                identity_token="idt", registry_token="rgt"),
        sandbox_config=pod_request().config,
    )  # fmt: skip
    assert request_attributes(request) == {
        "container.image.name": "registry.local/app:1", "k8s.pod.name": "web",
        "k8s.namespace.name": "shop", "k8s.pod.uid": "uid-1",
    }  # fmt: skip


def test_create_container_attributes():
    config = api_pb2.ContainerConfig(
        metadata=api_pb2.ContainerMetadata(name="app"), image=api_pb2.ImageSpec(image="busybox"),
        envs=[api_pb2.KeyValue(key="DB_PASSWORD", value="hunter2")],
    )  # fmt: skip
    request = api_pb2.CreateContainerRequest(pod_sandbox_id="p1", config=config,
                                             sandbox_config=pod_request().config)  # fmt: skip
    attributes = request_attributes(request)
    assert attributes == {
        "k8s.pod.sandbox.id": "p1", "k8s.container.name": "app",
        "container.image.name": "busybox", "k8s.pod.name": "web",
        "k8s.namespace.name": "shop", "k8s.pod.uid": "uid-1",
    }  # fmt: skip
    assert "hunter2" not in repr(attributes)


def test_service_names_come_from_the_generated_base_classes():
    assert service_name(FakeRuntime) == "runtime.v1.RuntimeService"

    class Images(api_pb2_grpc.ImageServiceServicer):
        pass

    assert service_name(Images) == "runtime.v1.ImageService"


OFF_PATH = """
import sys
from observe_rt import trace
from observe_rt.cri.rpc import unary
from observe_rt.cri.v1 import api_pb2
import observe_rt.server, observe_rt.cri.runtime_service, observe_rt.cri.containers

class Context:
    def invocation_metadata(self):
        return (("traceparent", "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"),)

@unary
def Version(self, request, context):
    with trace.span("child", {"a": 1}) as span:
        span.set_attribute("b", 2)
    trace.annotate({"c": 3})
    trace.container_event("c1", "container.exit", {"observe_rt.exit.code": 1})
    return api_pb2.VersionResponse(version="0.1.0")

assert Version(None, api_pb2.VersionRequest(), Context()).version == "0.1.0"
assert trace.carry(print) is print and not trace.enabled()
loaded = sorted(m for m in sys.modules if m.startswith("opentelemetry"))
assert not loaded, loaded
"""


def test_tracing_off_imports_nothing_of_opentelemetry():
    """The hot path with tracing off: a CRI call with a traceparent, child spans, events."""
    result = subprocess.run([sys.executable, "-c", OFF_PATH], capture_output=True, text=True,
                            timeout=120)  # fmt: skip
    assert result.returncode == 0, result.stderr
