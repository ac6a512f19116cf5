"""The daemon end to end over gRPC: pods on real CNI, containers from a real registry's image,
CRI logs, exit reasons, restart survival, clean teardown and bad input."""

from __future__ import annotations

import json
import os
import subprocess
import time
import uuid
from pathlib import Path

import grpc
import pytest

from observe_rt.cri.v1 import api_pb2
from tests.support.bundles import cgroup_dirs
from tests.support.daemon import (
    OBSERVE_RT,
    container_config,
    log_text,
    pod_config,
    run_pod,
    start_container,
    status,
    wait_exited,
)

pytestmark = pytest.mark.root


def test_version_and_status(daemon):
    stub = daemon.runtime()
    version = stub.Version(api_pb2.VersionRequest())
    assert version.runtime_name == "observe-rt" and version.runtime_api_version == "v1"
    conditions = {c.type: c.status for c in stub.Status(api_pb2.StatusRequest()).status.conditions}
    assert conditions == {"RuntimeReady": True, "NetworkReady": True}
    assert (
        stub.RuntimeConfig(api_pb2.RuntimeConfigRequest()).linux.cgroup_driver == api_pb2.CGROUPFS
    )


def test_two_containers_talk_over_localhost_and_log_in_cri_format(daemon):
    config = pod_config(daemon)
    pod_id = run_pod(daemon, config)
    pod = daemon.runtime().PodSandboxStatus(api_pb2.PodSandboxStatusRequest(pod_sandbox_id=pod_id))
    assert pod.status.state == api_pb2.SANDBOX_READY
    assert pod.status.network.ip.startswith(daemon.subnet.rsplit(".", 2)[0])
    server = start_container(daemon, pod_id, config, container_config(
        daemon, "server", "echo hello-from-server | nc -l -p 8080; echo served >&2"))  # fmt: skip
    time.sleep(0.5)
    client = start_container(
        daemon, pod_id, config, container_config(daemon, "client", "nc -w 1 127.0.0.1 8080")
    )
    assert wait_exited(daemon, client).exit_code == 0
    finished = wait_exited(daemon, server)
    assert finished.reason == "Completed"
    assert "hello-from-server" in log_text(status(daemon, client).log_path)
    assert "served" in log_text(finished.log_path)
    assert " stderr F served" in Path(finished.log_path).read_text()


def test_host_network_pod_sees_the_hosts_network(daemon):
    config = pod_config(daemon, host_network=True)
    pod_id = run_pod(daemon, config)
    cid = start_container(daemon, pod_id, config,
                          container_config(daemon, "c", "readlink /proc/self/ns/net"))  # fmt: skip
    assert wait_exited(daemon, cid).exit_code == 0
    assert log_text(status(daemon, cid).log_path).strip() == os.readlink("/proc/self/ns/net")


def test_pod_sysctls_and_runc_handler(daemon):
    config = pod_config(daemon)
    config.linux.sysctls["kernel.shm_rmid_forced"] = "1"
    config.linux.sysctls["net.ipv4.ip_unprivileged_port_start"] = "0"
    for handler in ("", "runc"):
        config.metadata.name = config.metadata.uid = f"sysctl-{handler or 'builtin'}"
        config.log_directory = str(daemon.root / "logs" / config.metadata.name)
        pod_id = (
            daemon.runtime()
            .RunPodSandbox(api_pb2.RunPodSandboxRequest(config=config, runtime_handler=handler))
            .pod_sandbox_id
        )
        script = (
            "cat /proc/sys/kernel/shm_rmid_forced /proc/sys/net/ipv4/ip_unprivileged_port_start"
        )
        cid = start_container(daemon, pod_id, config, container_config(daemon, "c", script))
        finished = wait_exited(daemon, cid)
        assert finished.exit_code == 0, log_text(finished.log_path)
        assert log_text(finished.log_path).split() == ["1", "0"], handler


@pytest.mark.parametrize(
    "script,code,reason",
    [("true", 0, "Completed"), ("exit 3", 3, "Error"), ("tail /dev/zero", 137, "OOMKilled")],
)
def test_exit_codes_and_reasons(daemon, script, code, reason):
    config = pod_config(daemon)
    pod_id = run_pod(daemon, config)
    resources = api_pb2.LinuxContainerResources(memory_limit_in_bytes=32 << 20)
    container = container_config(
        daemon, "c", script, linux=api_pb2.LinuxContainerConfig(resources=resources)
    )
    cid = start_container(daemon, pod_id, config, container)
    finished = wait_exited(daemon, cid, timeout=60)
    assert (finished.exit_code, finished.reason) == (code, reason)
    assert finished.finished_at >= finished.started_at > finished.created_at > 0


def test_name_conflicts_are_already_exists(daemon):
    config = pod_config(daemon)
    pod_id = run_pod(daemon, config)
    with pytest.raises(grpc.RpcError) as pod_clash:
        run_pod(daemon, config)
    assert pod_clash.value.code() == grpc.StatusCode.ALREADY_EXISTS
    container = container_config(daemon, "same", "sleep 30")
    start_container(daemon, pod_id, config, container)
    with pytest.raises(grpc.RpcError) as clash:
        start_container(daemon, pod_id, config, container)
    assert clash.value.code() == grpc.StatusCode.ALREADY_EXISTS and "same" in clash.value.details()


def _snapshot(daemon) -> dict:
    stub = daemon.runtime()
    pods = {p.id: (p.metadata.name, p.created_at, p.state)
            for p in stub.ListPodSandbox(api_pb2.ListPodSandboxRequest()).items}  # fmt: skip
    ips = {pid: stub.PodSandboxStatus(api_pb2.PodSandboxStatusRequest(pod_sandbox_id=pid))
           .status.network.ip for pid in pods}  # fmt: skip
    containers = {}
    for c in stub.ListContainers(api_pb2.ListContainersRequest()).containers:
        s = status(daemon, c.id)
        containers[c.id] = (s.metadata.name, s.created_at, s.started_at, s.state, s.exit_code)
    return {"pods": pods, "ips": ips, "containers": containers}


def test_kill_9_and_restart_keeps_everything(daemon):
    config = pod_config(daemon)
    pod_id = run_pod(daemon, config)
    long = start_container(daemon, pod_id, config, container_config(daemon, "long", "sleep 300"))
    short = start_container(daemon, pod_id, config,
                            container_config(daemon, "short", "sleep 2; exit 7"))  # fmt: skip
    before = _snapshot(daemon)
    daemon.kill9()
    time.sleep(3)  # `short` exits while no daemon runs
    daemon.start()
    after = _snapshot(daemon)
    assert after["pods"] == before["pods"] and after["ips"] == before["ips"]
    assert after["containers"][long] == before["containers"][long]
    name, created, started, state, code = after["containers"][short]
    assert (name, created, started) == before["containers"][short][:3]
    assert (state, code) == (api_pb2.CONTAINER_EXITED, 7)
    assert status(daemon, long).state == api_pb2.CONTAINER_RUNNING


def test_dead_shim_turns_containers_exited_with_a_reason(daemon):
    config = pod_config(daemon)
    pod_id = run_pod(daemon, config)
    cid = start_container(daemon, pod_id, config, container_config(daemon, "c", "sleep 300"))
    info = (
        daemon.runtime()
        .PodSandboxStatus(api_pb2.PodSandboxStatusRequest(pod_sandbox_id=pod_id, verbose=True))
        .info["info"]
    )
    os.kill(json.loads(info)["shim"]["pid"], 9)
    finished = wait_exited(daemon, cid)
    assert finished.reason == "ShimDied" and "shim" in finished.message


def test_twenty_pods_leave_nothing_behind(daemon):
    stub = daemon.runtime()
    for i in range(20):
        config = pod_config(daemon, name=f"many-{i}-{uuid.uuid4().hex[:4]}")
        pod_id = run_pod(daemon, config)
        start_container(daemon, pod_id, config, container_config(daemon, "c", "sleep 300"))
        stub.StopPodSandbox(api_pb2.StopPodSandboxRequest(pod_sandbox_id=pod_id))
        stub.RemovePodSandbox(api_pb2.RemovePodSandboxRequest(pod_sandbox_id=pod_id))
    for pod in stub.ListPodSandbox(api_pb2.ListPodSandboxRequest()).items:
        stub.RemovePodSandbox(api_pb2.RemovePodSandboxRequest(pod_sandbox_id=pod.id))
    on_bridge = subprocess.run(["ip", "-o", "link", "show", "master", daemon.bridge],
                               capture_output=True, text=True).stdout  # fmt: skip
    assert on_bridge == ""  # every pod's veth is gone
    assert daemon.shim_pids() == []
    # Only the netns directory itself stays a (shared) mount, as `ip netns` keeps /run/netns.
    assert daemon.mounts() == [str(daemon.run_dir / "netns")]
    assert [d for d in cgroup_dirs(daemon.cgroup_parent) if os.listdir(d) and any(
        os.path.isdir(os.path.join(d, e)) for e in os.listdir(d))] == []  # fmt: skip
    assert os.listdir(daemon.state_dir / "pods") == []
    assert os.listdir(daemon.state_dir / "containers") == []
    assert os.listdir(daemon.run_dir / "netns") == []


def test_command_line_front(daemon):
    config = pod_config(daemon)
    pod_id = run_pod(daemon, config)
    talker = container_config(daemon, "talker", "echo line-one; echo line-two >&2")
    cid = start_container(daemon, pod_id, config, talker)
    wait_exited(daemon, cid)

    def cli(*args):
        result = subprocess.run([OBSERVE_RT, *args, "--socket", daemon.socket],
                                capture_output=True, text=True, timeout=60)  # fmt: skip
        assert result.returncode == 0, result.stderr
        return result.stdout

    assert "observe-rt" in cli("version")
    assert pod_id[:13] in cli("pods")
    assert "talker" in cli("ps", "-a") and cid[:13] in cli("ps", "-a")
    logs = subprocess.run([OBSERVE_RT, "logs", cid, "--socket", daemon.socket],
                          capture_output=True, text=True, timeout=60)  # fmt: skip
    assert (logs.stdout, logs.stderr) == ("line-one\n", "line-two\n")  # each to its stream
    assert json.loads(cli("inspect", cid))["status"]["metadata"]["name"] == "talker"


def test_oom_kill_message_names_the_victim(daemon):
    """The eBPF OOM probe attributes the kill to the container and names the victim."""
    config = pod_config(daemon)
    pod_id = run_pod(daemon, config)
    resources = api_pb2.LinuxContainerResources(memory_limit_in_bytes=32 << 20)
    hog = container_config(daemon, "hog", "exec tail /dev/zero",
                           linux=api_pb2.LinuxContainerConfig(resources=resources))  # fmt: skip
    cid = start_container(daemon, pod_id, config, hog)
    finished = wait_exited(daemon, cid, timeout=60)
    assert finished.reason == "OOMKilled"
    deadline = time.monotonic() + 10
    while "OOM killer stopped pid" not in status(daemon, cid).message:
        assert time.monotonic() < deadline, status(daemon, cid).message
        time.sleep(0.2)
    assert "(tail)" in status(daemon, cid).message
