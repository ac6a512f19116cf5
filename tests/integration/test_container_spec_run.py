"""Specs from build_container_spec run by `observe-rt oci run`: the CRI settings take effect."""

from __future__ import annotations

import json
import uuid

import pytest

from observe_rt.cri.container_spec import build_container_spec
from observe_rt.cri.v1 import api_pb2 as pb
from observe_rt.runtime.capabilities import CAP_NUMBER
from tests.support.bundles import make_busybox_rootfs

pytestmark = pytest.mark.root

IMAGE = {"config": {"Entrypoint": ["/bin/sh"], "Cmd": ["-c", "exit 3"], "WorkingDir": "/tmp",
                    "Env": ["FOO=image", "BAR=image"]}}  # fmt: skip


@pytest.fixture
def rootfs(tmp_path):
    root = make_busybox_rootfs(tmp_path / "rootfs")
    with open(root / "etc" / "group", "a") as f:
        f.write("wheel:x:3000:user\n")
    return root


def sandbox() -> pb.PodSandboxConfig:
    meta = pb.PodSandboxMetadata(name="web", namespace="default", uid="u1")
    linux = pb.LinuxPodSandboxConfig(sysctls={"kernel.shm_rmid_forced": "1"})
    return pb.PodSandboxConfig(metadata=meta, hostname="pod-host", linux=linux)


def run(ort, tmp_path, rootfs, cgroup_parent, config, hosts_files=None):
    container_id = f"cs-{uuid.uuid4().hex[:10]}"
    spec = build_container_spec(
        config, sandbox(), IMAGE, rootfs=str(rootfs), namespaces={},
        cgroup_parent=cgroup_parent, container_id=container_id, sandbox_id="s1",
        hosts_files=hosts_files or {},
    )  # fmt: skip
    bundle = tmp_path / "bundles" / container_id
    bundle.mkdir(parents=True)
    (bundle / "config.json").write_text(json.dumps(spec))
    result = ort("run", container_id, "--bundle", str(bundle))
    assert result.returncode == 0, result.stderr
    return result.stdout.split("\n"), spec


def test_root_container_capabilities_seccomp_sysctl_devices(ort, tmp_path, rootfs, cgroup_parent):
    sc = pb.LinuxContainerSecurityContext(
        capabilities=pb.Capability(add_capabilities=["NET_ADMIN"], drop_capabilities=["KILL"]),
        no_new_privs=True,
    )
    script = (
        "grep -E '^(CapEff|CapBnd|Seccomp|NoNewPrivs):' /proc/self/status | tr -s '\\t' ' '; "
        "cat /proc/sys/kernel/shm_rmid_forced; hostname; "
        "echo x > /dev/mynull && echo dev-ok; test -c /proc/keys && echo keys-masked; "
        "echo 0 2>/dev/null > /proc/sys/kernel/shm_rmid_forced || echo proc-sys-ro"
    )
    config = pb.ContainerConfig(
        metadata=pb.ContainerMetadata(name="caps"), args=["-c", script],
        devices=[pb.Device(container_path="/dev/mynull", host_path="/dev/null", permissions="rw")],
        linux=pb.LinuxContainerConfig(security_context=sc, resources=pb.LinuxContainerResources(
            cpu_period=100000, cpu_quota=50000, memory_limit_in_bytes=64 << 20)),
    )  # fmt: skip
    lines, spec = run(ort, tmp_path, rootfs, cgroup_parent, config)
    bounding = spec["process"]["capabilities"]["bounding"]
    assert "CAP_NET_ADMIN" in bounding and "CAP_KILL" not in bounding
    mask = f"{sum(1 << CAP_NUMBER[c] for c in bounding):016x}"
    assert lines[:4] == [f"CapEff: {mask}", f"CapBnd: {mask}", "NoNewPrivs: 1", "Seccomp: 2"]
    assert lines[4:9] == ["1", "pod-host", "dev-ok", "keys-masked", "proc-sys-ro"]


def test_user_env_cwd_and_readonly_mounts(ort, tmp_path, rootfs, cgroup_parent):
    ro, rw = tmp_path / "ro-vol", tmp_path / "rw-vol"
    for d in (ro, rw):
        d.mkdir()
        d.chmod(0o777)  # so a refused write can only be the read-only mount
    (ro / "hello").write_text("hi\n")
    hosts = tmp_path / "hosts"
    hosts.write_text("10.0.0.7 pod-host\n")
    sc = pb.LinuxContainerSecurityContext(
        run_as_username="user", supplemental_groups=[2000], readonly_rootfs=True
    )
    script = (
        "id -u; id -g; id -G; pwd; echo $HOME $FOO $BAR; cat /data/hello; "
        "touch /data/new 2>/dev/null && echo data-rw || echo data-ro; "
        "touch /rw/new && echo rw-ok; touch /tmp/x 2>/dev/null && echo root-rw || echo root-ro; "
        "cat /etc/hosts; grep CapEff /proc/self/status | tr -s '\\t' ' '"
    )
    config = pb.ContainerConfig(
        metadata=pb.ContainerMetadata(name="user"), args=["-c", script],
        envs=[pb.KeyValue(key="BAR", value="cri")],
        mounts=[pb.Mount(container_path="/data", host_path=str(ro), readonly=True),
                pb.Mount(container_path="/rw", host_path=str(rw))],
        linux=pb.LinuxContainerConfig(security_context=sc),
    )  # fmt: skip
    lines, _ = run(ort, tmp_path, rootfs, cgroup_parent, config, {"/etc/hosts": str(hosts)})
    assert lines[:4] == ["1000", "1000", "1000 2000 3000", "/tmp"]
    assert lines[4:7] == ["/tmp image cri", "hi", "data-ro"]
    assert lines[7:11] == ["rw-ok", "root-ro", "10.0.0.7 pod-host", "CapEff: 0000000000000000"]
    assert (rw / "new").exists() and not (ro / "new").exists()
