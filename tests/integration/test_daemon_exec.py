"""ExecSync, lifecycle events, resource updates and idempotent stops, over gRPC."""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

import grpc
import pytest

from observe_rt.cri.v1 import api_pb2
from tests.support.bundles import cgroup_dirs
from tests.support.daemon import (
    container_config,
    pod_config,
    run_pod,
    start_container,
    status,
)

pytestmark = pytest.mark.root


@pytest.fixture
def running(daemon):
    config = pod_config(daemon)
    pod_id = run_pod(daemon, config)
    spec = container_config(daemon, "app", "sleep 300")
    spec.linux.security_context.run_as_user.value = 1000
    return pod_id, start_container(daemon, pod_id, config, spec), config


def exec_sync(daemon, cid, cmd, timeout=10):
    return daemon.runtime().ExecSync(
        api_pb2.ExecSyncRequest(container_id=cid, cmd=cmd, timeout=timeout), timeout=60
    )


def test_exec_sync_runs_in_the_containers_namespaces_as_its_user(daemon, running):
    _, cid, _ = running
    result = exec_sync(daemon, cid, ["sh", "-c", "id -u; hostname; echo err >&2; exit 3"])
    assert result.exit_code == 3 and result.stderr == b"err\n"
    uid, hostname = result.stdout.decode().split()
    assert uid == "1000" and hostname.startswith("pod-")
    netns = exec_sync(daemon, cid, ["readlink", "/proc/self/ns/net"]).stdout.decode().strip()
    assert netns.startswith("net:[") and netns != os.readlink("/proc/self/ns/net")


def test_exec_sync_timeout_kills_the_tree_and_output_is_bounded(daemon, running):
    _, cid, _ = running
    started = time.monotonic()
    with pytest.raises(grpc.RpcError) as err:
        exec_sync(daemon, cid, ["sh", "-c", "sleep 100 & sleep 100"], timeout=1)
    assert err.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    assert time.monotonic() - started < 20
    ps = exec_sync(daemon, cid, ["ps", "-o", "args"]).stdout.decode()
    assert "sleep 100" not in ps
    big = exec_sync(daemon, cid, ["sh", "-c", "head -c 20000000 /dev/zero"], timeout=60)
    assert len(big.stdout) == 16 << 20 and b"truncated" in big.stderr


def test_exec_into_stopped_or_unknown_container(daemon, running):
    _, cid, _ = running
    daemon.runtime().StopContainer(api_pb2.StopContainerRequest(container_id=cid, timeout=0))
    with pytest.raises(grpc.RpcError) as stopped:
        exec_sync(daemon, cid, ["true"])
    assert stopped.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    with pytest.raises(grpc.RpcError) as unknown:
        exec_sync(daemon, "nope", ["true"])
    assert unknown.value.code() == grpc.StatusCode.NOT_FOUND
    # Stopping again, or something unknown, is not an error.
    daemon.runtime().StopContainer(api_pb2.StopContainerRequest(container_id=cid))
    daemon.runtime().StopContainer(api_pb2.StopContainerRequest(container_id="nope"))
    daemon.runtime().StopPodSandbox(api_pb2.StopPodSandboxRequest(pod_sandbox_id="nope"))


def test_update_resources_reach_the_cgroup(daemon, running):
    _, cid, _ = running
    resources = api_pb2.LinuxContainerResources(cpu_quota=30000, cpu_period=100000,
                                                memory_limit_in_bytes=96 << 20)  # fmt: skip
    daemon.runtime().UpdateContainerResources(
        api_pb2.UpdateContainerResourcesRequest(container_id=cid, linux=resources)
    )
    dirs = cgroup_dirs(f"{daemon.cgroup_parent}")
    assert "30000" in [_read(d, "cpu.cfs_quota_us") for d in _find(dirs, cid)]
    assert str(96 << 20) in [_read(d, "memory.limit_in_bytes") for d in _find(dirs, cid)]
    too_small = api_pb2.LinuxContainerResources(memory_limit_in_bytes=-5)
    with pytest.raises(grpc.RpcError) as bad:
        daemon.runtime().UpdateContainerResources(
            api_pb2.UpdateContainerResourcesRequest(container_id=cid, linux=too_small))  # fmt: skip
    assert bad.value.code() == grpc.StatusCode.INVALID_ARGUMENT


def test_update_cpuset_and_memory_below_usage(daemon):
    config = pod_config(daemon)
    pod_id = run_pod(daemon, config)
    # 48 MiB of touched anonymous memory (no swap here): a 16 MiB limit cannot be reclaimed.
    hog = "head -c 50331648 /dev/zero | tr '\\0' x > /dev/shm/fill && sleep 300"
    cid = start_container(daemon, pod_id, config, container_config(daemon, "hog", hog))
    dirs = cgroup_dirs(daemon.cgroup_parent)
    memory = next(d for d in _find(dirs, cid) if os.path.exists(f"{d}/memory.usage_in_bytes"))
    _wait_for(lambda: int(_read(memory, "memory.usage_in_bytes")) > 48 << 20)
    update = daemon.runtime().UpdateContainerResources
    update(api_pb2.UpdateContainerResourcesRequest(
        container_id=cid, linux=api_pb2.LinuxContainerResources(cpuset_cpus="0")))  # fmt: skip
    assert "0" in [_read(d, "cpuset.cpus") for d in _find(dirs, cid)]
    with pytest.raises(grpc.RpcError) as below:
        update(api_pb2.UpdateContainerResourcesRequest(
            container_id=cid,
            linux=api_pb2.LinuxContainerResources(memory_limit_in_bytes=16 << 20)))  # fmt: skip
    assert below.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "memory" in below.value.details()
    assert status(daemon, cid).state == api_pb2.CONTAINER_RUNNING  # refused, not OOM-killed
    assert str(16 << 20) not in [_read(d, "memory.limit_in_bytes") for d in _find(dirs, cid)]


def test_pod_sandbox_resources_reach_the_pod_cgroup(daemon, running):
    pod_id, _, _ = running
    pod = api_pb2.LinuxContainerResources(cpu_quota=150000, cpu_period=100000,
                                          memory_limit_in_bytes=512 << 20)  # fmt: skip
    daemon.runtime().UpdatePodSandboxResources(
        api_pb2.UpdatePodSandboxResourcesRequest(pod_sandbox_id=pod_id, resources=pod)
    )
    pod_dirs = [d for d in _find(cgroup_dirs(daemon.cgroup_parent), f"pod-{pod_id[:12]}")]
    assert "150000" in [_read(d, "cpu.cfs_quota_us") for d in pod_dirs]
    assert str(512 << 20) in [_read(d, "memory.limit_in_bytes") for d in pod_dirs]
    for request, code in (
        (api_pb2.UpdatePodSandboxResourcesRequest(pod_sandbox_id="nope"), "NOT_FOUND"),
        (api_pb2.UpdatePodSandboxResourcesRequest(
            pod_sandbox_id=pod_id, resources=api_pb2.LinuxContainerResources(cpu_shares=-1)),
         "INVALID_ARGUMENT"),
    ):  # fmt: skip
        with pytest.raises(grpc.RpcError) as bad:
            daemon.runtime().UpdatePodSandboxResources(request)
        assert bad.value.code().name == code


def test_stream_lists_and_unimplemented_checkpoint(daemon, running):
    pod_id, cid, _ = running
    runtime = daemon.runtime()
    pods = [p.id for part in runtime.StreamPodSandboxes(api_pb2.StreamPodSandboxesRequest())
            for p in part.pod_sandboxes]  # fmt: skip
    listed = [p.id for p in runtime.ListPodSandbox(api_pb2.ListPodSandboxRequest()).items]
    assert pod_id in pods and sorted(pods) == sorted(listed)
    only = api_pb2.StreamContainersRequest(filter=api_pb2.ContainerFilter(id=cid))
    assert [c.id for part in runtime.StreamContainers(only) for c in part.containers] == [cid]
    images = [i.id for part in daemon.images().StreamImages(api_pb2.StreamImagesRequest())
              for i in part.images]  # fmt: skip
    assert images == [i.id for i in daemon.images().ListImages(api_pb2.ListImagesRequest()).images]
    with pytest.raises(grpc.RpcError) as checkpoint:
        runtime.CheckpointContainer(api_pb2.CheckpointContainerRequest(container_id=cid))
    assert checkpoint.value.code() == grpc.StatusCode.UNIMPLEMENTED
    assert "does not checkpoint" in checkpoint.value.details()


def _wait_for(condition, timeout=30.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.1)


def _read(directory: str, name: str) -> str:
    path = os.path.join(directory, name)
    return Path(path).read_text().strip() if os.path.exists(path) else ""


def _find(tops: list[str], cid: str) -> list[str]:
    found = []
    for top in tops:
        for dirpath, dirnames, _ in os.walk(top):
            found += [os.path.join(dirpath, d) for d in dirnames if d == cid]
    return found


def test_events_stream_a_pods_lifecycle_in_order(daemon):
    events, ready = [], threading.Event()

    def listen():
        stream = daemon.runtime().GetContainerEvents(api_pb2.GetEventsRequest(), timeout=60)
        ready.set()
        for event in stream:
            events.append((event.container_id, event.container_event_type))
            if event.container_event_type == api_pb2.CONTAINER_DELETED_EVENT:
                stream.cancel()
                return

    slow = daemon.runtime().GetContainerEvents(api_pb2.GetEventsRequest(), timeout=60)  # unread
    listener = threading.Thread(target=listen)
    listener.start()
    ready.wait(10)
    time.sleep(0.5)
    config = pod_config(daemon)
    pod_id = run_pod(daemon, config)
    cid = start_container(daemon, pod_id, config, container_config(daemon, "short", "true"))
    deadline = time.monotonic() + 20
    while (cid, api_pb2.CONTAINER_STOPPED_EVENT) not in events and time.monotonic() < deadline:
        time.sleep(0.1)
    daemon.runtime().RemoveContainer(api_pb2.RemoveContainerRequest(container_id=cid))
    listener.join(30)
    slow.cancel()
    mine = [kind for container, kind in events if container == cid]
    assert mine == [api_pb2.CONTAINER_CREATED_EVENT, api_pb2.CONTAINER_STARTED_EVENT,
                    api_pb2.CONTAINER_STOPPED_EVENT, api_pb2.CONTAINER_DELETED_EVENT]  # fmt: skip
