"""Fuzz target: CRI request validation for RunPodSandbox and CreateContainer.

The input is split at MARK into a serialized ContainerConfig, a serialized PodSandboxConfig
(protobuf wire bytes, mutated as bytes) and bytes that mutate the image config. It goes through
what the daemon checks before it touches anything: pod and container names, pod sysctls, the
log path, the stop signal and the whole OCI spec (cri/container_spec.py, on a fixture rootfs
and /dev). Documented error: InvalidArgument (an ObserveRtError).

One more property: a spec that CreateContainer accepts must pass the executor's own validation
(runtime/spec.build_plan); otherwise a request would be accepted and fail only at start.
"""

from __future__ import annotations

import os
import stat
import sys
from pathlib import Path

from google.protobuf.message import DecodeError

from tests.fuzz import harness

with harness.instrumented():
    from observe_rt.cri import container_spec, containers, sandboxes
    from observe_rt.cri.v1 import api_pb2 as pb
    from observe_rt.errors import ObserveRtError
    from observe_rt.runtime import spec as runtime_spec

MARK = b"\xf0\x9f\x9a\xa7"  # splits the input into its three parts
IMAGE = {
    "config": {"Entrypoint": ["/entry"], "Cmd": ["arg"], "Env": ["A=1"], "User": "app",
               "WorkingDir": "/srv", "StopSignal": "SIGQUIT", "Volumes": {"/data": {}}},
}  # fmt: skip
WORK = harness.scratch("cri")


def _fixtures() -> tuple[Path, Path]:
    """A rootfs with users and a symlink out of it, and a /dev with two nodes."""
    rootfs, dev = WORK / "rootfs", WORK / "dev"
    (rootfs / "etc").mkdir(parents=True, exist_ok=True)
    (rootfs / "etc" / "passwd").write_text("root:x:0:0::/root:/bin/sh\napp:x:1000:1000::/app:/\n")
    (rootfs / "etc" / "group").write_text("root:x:0:\napp:x:1000:\nwheel:x:10:app\n")
    if not (rootfs / "escape").is_symlink():
        (rootfs / "escape").symlink_to("/proc/sys")
    dev.mkdir(exist_ok=True)
    if os.geteuid() == 0 and not (dev / "null").exists():
        os.mknod(dev / "null", stat.S_IFCHR | 0o666, os.makedev(1, 3))
    return rootfs, dev


ROOTFS, DEV = _fixtures()


def seed(escape: bool = False) -> bytes:
    """A request that passes every check; with `escape`, one whose mount leaves through a
    symlink in the image (refused)."""
    sc = pb.LinuxContainerSecurityContext(
        capabilities=pb.Capability(add_capabilities=["NET_ADMIN"], drop_capabilities=["KILL"]),
        run_as_user=pb.Int64Value(value=1000), supplemental_groups=[10], readonly_rootfs=True,
        seccomp=pb.SecurityProfile(profile_type=pb.SecurityProfile.ProfileType.RuntimeDefault),
        masked_paths=["/proc/kcore"], readonly_paths=["/proc/sys"],
        namespace_options=pb.NamespaceOption(pid=pb.NamespaceMode.CONTAINER),
    )  # fmt: skip
    config = pb.ContainerConfig(
        metadata=pb.ContainerMetadata(name="app", attempt=1),
        image=pb.ImageSpec(image="busybox"), command=["/bin/sh"], args=["-c", "true"],
        working_dir="/work", envs=[pb.KeyValue(key="K", value="V")], log_path="app/0.log",
        mounts=[pb.Mount(container_path="/data", host_path="/tmp", readonly=True),
                pb.Mount(container_path="/escape/x" if escape else "/x", host_path="/tmp")],
        devices=[pb.Device(container_path="/dev/xnull", host_path="/dev/null", permissions="rw")],
        linux=pb.LinuxContainerConfig(
            security_context=sc,
            resources=pb.LinuxContainerResources(cpu_shares=512, memory_limit_in_bytes=1 << 26,
                                                 oom_score_adj=100, cpuset_cpus="0"),
        ),
    )  # fmt: skip
    pod = pb.PodSandboxConfig(
        metadata=pb.PodSandboxMetadata(name="web", namespace="default", uid="u1"),
        hostname="web", log_directory="/var/log/pods/x",
        linux=pb.LinuxPodSandboxConfig(sysctls={"net.ipv4.ip_forward": "1",
                                                "kernel.shm_rmid_forced": "1"}),
    )  # fmt: skip
    return config.SerializeToString() + MARK + pod.SerializeToString() + MARK


def one_input(data: bytes) -> None:
    config_bytes, _, rest = data.partition(MARK)
    pod_bytes, _, image_bytes = rest.partition(MARK)
    config, pod = pb.ContainerConfig(), pb.PodSandboxConfig()
    try:
        config.ParseFromString(config_bytes)
        pod.ParseFromString(pod_bytes)
    except DecodeError:
        return  # not a request gRPC would deliver
    image = harness.mutate_json(IMAGE, harness.provider(image_bytes), 3)
    try:
        create(config, pod, image)
    except ObserveRtError:
        pass


def create(config: pb.ContainerConfig, pod: pb.PodSandboxConfig, image) -> None:
    """RunPodSandbox's and CreateContainer's checks, in the order the daemon makes them."""
    sandboxes._unique_name(pod.metadata)
    sandboxes._pod_sysctls(pod, sandboxes._new_namespaces(
        pod.linux.security_context.namespace_options))  # fmt: skip
    containers._unique_name(config.metadata, "s" * 64)
    containers._log_path(pod.log_directory, config.log_path)
    spec = container_spec.build_container_spec(
        config, pod, image if isinstance(image, dict) else {}, rootfs=str(ROOTFS),
        namespaces={"network": "/proc/self/ns/net", "ipc": "/proc/self/ns/ipc"},
        cgroup_parent="/kubepods/pod1", container_id="c" * 64, sandbox_id="s" * 64,
        hosts_files={"/etc/hosts": "/etc/hosts"}, lsms=set(), dev_root=str(DEV),
    )  # fmt: skip
    container_spec.stop_signal(image if isinstance(image, dict) else {}, config)
    try:
        runtime_spec.build_plan(spec, str(WORK), "c" * 64)
    except ObserveRtError as err:
        raise AssertionError(
            f"CreateContainer accepted a spec the executor refuses: {err}"
        ) from err


if __name__ == "__main__":
    harness.main("cri", one_input, [seed(), seed(escape=True)])
    sys.exit(0)
