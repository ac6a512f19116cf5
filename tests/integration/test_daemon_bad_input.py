"""Bad CRI requests answer the right status code with a usable message; the daemon keeps
serving, and nothing half-made is left behind."""

from __future__ import annotations

import grpc
import pytest

from observe_rt.cri.v1 import api_pb2
from tests.support.daemon import container_config, pod_config, run_pod

pytestmark = pytest.mark.root


def rpc_error(call, *args) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as err:
        call(*args)
    return err.value


def test_pod_bad_input(daemon):
    stub = daemon.runtime()
    no_name = pod_config(daemon)
    no_name.metadata.name = ""
    err = rpc_error(stub.RunPodSandbox, api_pb2.RunPodSandboxRequest(config=no_name))
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT and "metadata.name" in err.details()
    err = rpc_error(stub.RunPodSandbox, api_pb2.RunPodSandboxRequest(
        config=pod_config(daemon), runtime_handler="kata"))  # fmt: skip
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT and "kata" in err.details()
    for call, request in (
        (stub.PodSandboxStatus, api_pb2.PodSandboxStatusRequest(pod_sandbox_id="nope")),
        (stub.ContainerStatus, api_pb2.ContainerStatusRequest(container_id="nope")),
        (stub.StartContainer, api_pb2.StartContainerRequest(container_id="")),
    ):
        assert rpc_error(call, request).code() == grpc.StatusCode.NOT_FOUND
    stub.RemovePodSandbox(api_pb2.RemovePodSandboxRequest(pod_sandbox_id="nope"))  # idempotent
    stub.RemoveContainer(api_pb2.RemoveContainerRequest(container_id="nope"))


def _bad_mount(path: str, host: str) -> dict:
    return {"mounts": [api_pb2.Mount(container_path=path, host_path=host)]}


@pytest.mark.parametrize(
    "extra,code,words",
    [
        (_bad_mount("data", "/tmp"), "INVALID_ARGUMENT", "container_path"),
        (_bad_mount("/data", "/does/not/exist"), "INVALID_ARGUMENT", "/does/not/exist"),
        (_bad_mount("/proc", "/tmp"), "INVALID_ARGUMENT", "/proc"),
        ({"image": api_pb2.ImageSpec(image="absent/image:1")}, "NOT_FOUND", "absent/image"),
        ({"metadata": api_pb2.ContainerMetadata(name="")}, "INVALID_ARGUMENT", "metadata.name"),
    ],
    ids=["relative-mount", "missing-source", "over-proc", "no-image", "no-name"],
)  # fmt: skip
def test_container_bad_input_leaves_nothing(daemon, extra, code, words):
    stub = daemon.runtime()
    config = pod_config(daemon)
    pod_id = run_pod(daemon, config)
    container = container_config(daemon, "c", "true")
    for key, value in extra.items():
        if key == "mounts":
            container.mounts.extend(value)
        else:
            getattr(container, key).CopyFrom(value)
    err = rpc_error(stub.CreateContainer, api_pb2.CreateContainerRequest(
        pod_sandbox_id=pod_id, config=container, sandbox_config=config))  # fmt: skip
    assert err.code() == getattr(grpc.StatusCode, code), err.details()
    assert words in err.details()
    assert list(stub.ListContainers(api_pb2.ListContainersRequest(
        filter=api_pb2.ContainerFilter(pod_sandbox_id=pod_id))).containers) == []  # fmt: skip
    assert not list((daemon.run_dir / "containers").glob("*"))
    assert not list((daemon.state_dir / "rootfs").glob("*"))
    assert stub.Version(api_pb2.VersionRequest()).runtime_name == "observe-rt"


def test_bad_sysctl_is_refused_and_leaves_nothing(daemon):
    stub = daemon.runtime()
    pods_before = len(stub.ListPodSandbox(api_pb2.ListPodSandboxRequest()).items)
    shims_before = len(daemon.shim_pids())
    config = pod_config(daemon)
    config.linux.sysctls["kernel.core_pattern"] = "|/bin/evil"
    err = rpc_error(stub.RunPodSandbox, api_pb2.RunPodSandboxRequest(config=config))
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "kernel.core_pattern" in err.details() and "not a namespaced sysctl" in err.details()
    assert len(stub.ListPodSandbox(api_pb2.ListPodSandboxRequest()).items) == pods_before
    assert len(daemon.shim_pids()) == shims_before
