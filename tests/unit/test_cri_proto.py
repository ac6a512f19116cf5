"""The CRI runtime.v1 schema: generated code matches api.proto, wire facts match upstream, and
the stubs work over a real gRPC unix socket.

Upstream facts below were checked against kubernetes/cri-api pkg/apis/runtime/v1/api.proto
(kubernetes/kubernetes staging, commit 0268656aec06fe837312d7ec3051e6b7f3dc6cde).
"""

from __future__ import annotations

import importlib.metadata
import re
from concurrent import futures
from pathlib import Path

import grpc
import pytest

from observe_rt.cri.proto import generate
from observe_rt.cri.v1 import api_pb2, api_pb2_grpc

FILE = api_pb2.DESCRIPTOR

RUNTIME_SERVICE_METHODS = [
    "Version",
    "RunPodSandbox",
    "StopPodSandbox",
    "RemovePodSandbox",
    "PodSandboxStatus",
    "ListPodSandbox",
    "StreamPodSandboxes",
    "CreateContainer",
    "StartContainer",
    "StopContainer",
    "RemoveContainer",
    "ListContainers",
    "StreamContainers",
    "ContainerStatus",
    "UpdateContainerResources",
    "ReopenContainerLog",
    "ExecSync",
    "Exec",
    "Attach",
    "PortForward",
    "ContainerStats",
    "ListContainerStats",
    "StreamContainerStats",
    "PodSandboxStats",
    "ListPodSandboxStats",
    "StreamPodSandboxStats",
    "UpdateRuntimeConfig",
    "Status",
    "CheckpointContainer",
    "GetContainerEvents",
    "ListMetricDescriptors",
    "ListPodSandboxMetrics",
    "StreamPodSandboxMetrics",
    "RuntimeConfig",
    "UpdatePodSandboxResources",
]
IMAGE_SERVICE_METHODS = [
    "ListImages",
    "StreamImages",
    "ImageStatus",
    "PullImage",
    "RemoveImage",
    "ImageFsInfo",
]
SERVER_STREAMING = {
    "StreamPodSandboxes",
    "StreamContainers",
    "StreamContainerStats",
    "StreamPodSandboxStats",
    "GetContainerEvents",
    "StreamPodSandboxMetrics",
    "StreamImages",
}


def _fields(message: str) -> dict[str, int]:
    return {f.name: f.number for f in FILE.message_types_by_name[message].fields}


def _enum(name: str) -> dict[str, int]:
    return {v.name: v.number for v in FILE.enum_types_by_name[name].values}


# --- (a) the committed code is what api.proto generates -------------------------------------


def _generated_by() -> str:
    text = (generate.PACKAGE_DIR / "api_pb2_grpc.py").read_text()
    match = re.search(r"^GRPC_GENERATED_VERSION = '([^']+)'$", text, re.MULTILINE)
    assert match, "api_pb2_grpc.py has no GRPC_GENERATED_VERSION line"
    return match.group(1)


def test_committed_code_is_byte_identical_to_a_fresh_generation(tmp_path: Path) -> None:
    installed = importlib.metadata.version("grpcio-tools")
    if installed != _generated_by():
        pytest.skip(f"grpcio-tools {installed} installed, files made by {_generated_by()}")
    written = generate.generate(tmp_path)
    assert sorted(p.name for p in written) == sorted(generate.GENERATED)
    stale = [
        p.name for p in written if p.read_bytes() != (generate.PACKAGE_DIR / p.name).read_bytes()
    ]
    assert stale == [], (
        f"{stale} differ from api.proto: run python -m observe_rt.cri.proto.generate"
    )


def _without_json_names(messages) -> None:
    for message in messages:
        for field in message.field:
            field.ClearField("json_name")
        _without_json_names(message.nested_type)


def test_committed_descriptor_equals_the_one_compiled_from_api_proto(tmp_path: Path) -> None:
    """Version-independent: the schema embedded in api_pb2.py is exactly api.proto's."""
    from google.protobuf import descriptor_pb2

    out = tmp_path / "api.pb"
    generate.run_protoc(generate.PROTO, [f"--descriptor_set_out={out}"])
    compiled = descriptor_pb2.FileDescriptorSet.FromString(out.read_bytes()).file
    assert len(compiled) == 1
    _without_json_names(compiled[0].message_type)  # protoc leaves them out of Python code
    committed = descriptor_pb2.FileDescriptorProto.FromString(FILE.serialized_pb)
    assert compiled[0] == committed, (
        "api_pb2.py is stale: run python -m observe_rt.cri.proto.generate"
    )


def test_generated_grpc_module_imports_api_pb2_relatively() -> None:
    text = (generate.PACKAGE_DIR / "api_pb2_grpc.py").read_text()
    assert "from . import api_pb2 as " in text
    assert "from observe_rt" not in text
    assert api_pb2.ContainerStats.__module__ == "observe_rt.cri.v1.api_pb2"


# --- (b) wire facts that must match upstream -------------------------------------------------


def test_package_and_services() -> None:
    assert FILE.package == "runtime.v1"
    assert sorted(FILE.services_by_name) == ["ImageService", "RuntimeService"]


@pytest.mark.parametrize(
    ("service", "methods"),
    [("RuntimeService", RUNTIME_SERVICE_METHODS), ("ImageService", IMAGE_SERVICE_METHODS)],
)
def test_service_methods_match_upstream(service: str, methods: list[str]) -> None:
    desc = FILE.services_by_name[service]
    assert [m.name for m in desc.methods] == methods
    for m in desc.methods:
        assert not m.client_streaming, m.name
        assert m.server_streaming == (m.name in SERVER_STREAMING), m.name


def test_method_request_and_response_types() -> None:
    rs = FILE.services_by_name["RuntimeService"].methods_by_name
    events = rs["GetContainerEvents"]
    assert (events.input_type.name, events.output_type.name) == (
        "GetEventsRequest",
        "ContainerEventResponse",
    )
    for name in RUNTIME_SERVICE_METHODS:
        if name != "GetContainerEvents":
            assert rs[name].input_type.name == f"{name}Request"
            assert rs[name].output_type.name == f"{name}Response"
    for m in FILE.services_by_name["ImageService"].methods:
        assert (m.input_type.name, m.output_type.name) == (f"{m.name}Request", f"{m.name}Response")


def test_stats_field_numbers() -> None:
    assert _fields("ContainerStats") == {
        "attributes": 1,
        "cpu": 2,
        "memory": 3,
        "writable_layer": 4,
        "swap": 5,
        "io": 6,
    }
    assert _fields("CpuUsage") == {
        "timestamp": 1,
        "usage_core_nano_seconds": 2,
        "usage_nano_cores": 3,
        "psi": 4,
    }
    assert _fields("MemoryUsage") == {
        "timestamp": 1,
        "working_set_bytes": 2,
        "available_bytes": 3,
        "usage_bytes": 4,
        "rss_bytes": 5,
        "page_faults": 6,
        "major_page_faults": 7,
        "psi": 8,
    }
    assert _fields("LinuxPodSandboxStats") == {
        "cpu": 1,
        "memory": 2,
        "network": 3,
        "process": 4,
        "containers": 5,
        "io": 6,
    }
    assert _fields("NetworkUsage") == {"timestamp": 1, "default_interface": 2, "interfaces": 3}
    assert _fields("NetworkInterfaceUsage") == {
        "name": 1,
        "rx_bytes": 2,
        "rx_errors": 3,
        "tx_bytes": 4,
        "tx_errors": 5,
    }
    assert _fields("PsiStats") == {"Full": 1, "Some": 2}
    assert _fields("PsiData") == {"Total": 1, "Avg10": 2, "Avg60": 3, "Avg300": 4}
    usage = FILE.message_types_by_name["CpuUsage"].fields_by_name
    assert usage["usage_core_nano_seconds"].message_type.name == "UInt64Value"
    assert usage["timestamp"].type == usage["timestamp"].TYPE_INT64


def test_enums() -> None:
    assert _enum("ContainerEventType") == {
        "CONTAINER_CREATED_EVENT": 0,
        "CONTAINER_STARTED_EVENT": 1,
        "CONTAINER_STOPPED_EVENT": 2,
        "CONTAINER_DELETED_EVENT": 3,
    }
    assert _enum("ContainerState") == {
        "CONTAINER_CREATED": 0,
        "CONTAINER_RUNNING": 1,
        "CONTAINER_EXITED": 2,
        "CONTAINER_UNKNOWN": 3,
    }
    assert _enum("PodSandboxState") == {"SANDBOX_READY": 0, "SANDBOX_NOTREADY": 1}
    assert _enum("NamespaceMode") == {"POD": 0, "CONTAINER": 1, "NODE": 2, "TARGET": 3}
    assert _enum("CgroupDriver") == {"SYSTEMD": 0, "CGROUPFS": 1}
    signals = _enum("Signal")
    assert (len(signals), signals["SIGTERM"], signals["SIGKILL"], signals["SIGRTMAX"]) == (
        66,
        23,
        13,
        65,
    )
    profile = FILE.message_types_by_name["SecurityProfile"].enum_types_by_name["ProfileType"]
    assert [(v.name, v.number) for v in profile.values] == [
        ("RuntimeDefault", 0),
        ("Unconfined", 1),
        ("Localhost", 2),
    ]


def test_irregular_field_numbers_and_names() -> None:
    """Places where a hand-written copy most easily drifts from upstream."""
    assert _fields("ImageSpec") == {
        "image": 1,
        "annotations": 2,
        "user_specified_image": 18,
        "runtime_handler": 19,
        "image_ref": 20,
    }
    mount = _fields("Mount")
    assert (mount["uidMappings"], mount["gidMappings"], mount["image_sub_path"]) == (6, 7, 10)
    config = _fields("ContainerConfig")
    assert (config["CDI_devices"], config["stop_signal"]) == (17, 18)
    sandbox_sc = _fields("LinuxSandboxSecurityContext")
    assert (sandbox_sc["run_as_group"], sandbox_sc["supplemental_groups_policy"]) == (8, 11)
    container_sc = _fields("LinuxContainerSecurityContext")
    assert (container_sc["run_as_group"], container_sc["supplemental_groups_policy"]) == (12, 17)
    assert _fields("Namespace") == {"options": 2}
    assert _fields("ContainerStatus")["stop_signal"] == 19
    assert _fields("ContainerEventResponse") == {
        "container_id": 1,
        "container_event_type": 2,
        "created_at": 3,
        "pod_sandbox_status": 4,
        "containers_statuses": 5,
    }
    status = FILE.message_types_by_name["ContainerStatusResponse"].fields_by_name["info"]
    assert status.message_type.GetOptions().map_entry


# --- (c) a real round trip over a unix socket ------------------------------------------------


class _Runtime(api_pb2_grpc.RuntimeServiceServicer):
    def Version(self, request, context):  # noqa: N802 (gRPC method name)
        return api_pb2.VersionResponse(
            version=request.version,
            runtime_name="observe-rt",
            runtime_version="0.1.0",
            runtime_api_version="v1",
        )

    def GetContainerEvents(self, request, context):  # noqa: N802
        for kind in (api_pb2.CONTAINER_CREATED_EVENT, api_pb2.CONTAINER_STARTED_EVENT):
            yield api_pb2.ContainerEventResponse(
                container_id="c1", container_event_type=kind, created_at=1
            )


@pytest.fixture
def channel(tmp_path: Path):
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    api_pb2_grpc.add_RuntimeServiceServicer_to_server(_Runtime(), server)
    address = f"unix:{tmp_path / 'cri.sock'}"
    assert server.add_insecure_port(address) == 1
    server.start()
    try:
        with grpc.insecure_channel(address) as chan:
            yield chan
    finally:
        server.stop(grace=None)


def test_version_round_trip_over_unix_socket(channel: grpc.Channel) -> None:
    stub = api_pb2_grpc.RuntimeServiceStub(channel)
    reply = stub.Version(api_pb2.VersionRequest(version="v1"), timeout=10)
    assert (reply.version, reply.runtime_name, reply.runtime_api_version) == (
        "v1",
        "observe-rt",
        "v1",
    )


def test_server_stream_and_unimplemented_over_unix_socket(channel: grpc.Channel) -> None:
    stub = api_pb2_grpc.RuntimeServiceStub(channel)
    events = list(stub.GetContainerEvents(api_pb2.GetEventsRequest(), timeout=10))
    assert [e.container_event_type for e in events] == [0, 1]
    with pytest.raises(grpc.RpcError) as err:
        stub.Status(api_pb2.StatusRequest(), timeout=10)
    assert err.value.code() == grpc.StatusCode.UNIMPLEMENTED
