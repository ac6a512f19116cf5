"""The CRI security context, case by case, through a real daemon and real containers.

Each case runs a container with one setting and reads what the kernel says from inside it
(/proc/self/status, /proc/self/ns, id, mountinfo), so a setting that is accepted but not applied
fails here. The kubelet's matrix: users and groups, read-only rootfs, capabilities, privileged,
no_new_privs, masked and read-only paths, seccomp profiles, host and pod namespaces, mount
propagation, and RemovePodSandbox taking its containers with it.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import tempfile
from pathlib import Path

import grpc
import pytest

from observe_rt.cri.v1 import api_pb2
from tests.support import images
from tests.support.daemon import (
    container_config,
    log_text,
    pod_config,
    run_pod,
    start_container,
    wait_exited,
)

pytestmark = pytest.mark.root

Ctx = api_pb2.LinuxContainerSecurityContext
Profile = api_pb2.SecurityProfile


@pytest.fixture(scope="module")
def users_image(daemon, daemon_registry):
    """busybox plus /etc/passwd and /etc/group, for run_as_username."""
    users = images.tar_bytes([
        images.directory("etc"),
        images.regular("etc/passwd", b"root:x:0:0::/root:/bin/sh\n"
                                     b"app:x:1500:1600::/home/app:/bin/sh\n"),
        images.regular("etc/group", b"root:x:0:\napp:x:1600:\nextra:x:1700:app\n"),
    ])  # fmt: skip
    image = images.build_image([images.busybox_layer(), users], ["gzip", "gzip"],
                               images.host_platform(), "oci")  # fmt: skip
    images.push(image, daemon_registry.url, "test/users", "1")
    name = f"{daemon_registry.host}/test/users:1"
    daemon.images().PullImage(api_pb2.PullImageRequest(image=api_pb2.ImageSpec(image=name)))
    return name


def run_to_exit(daemon, script: str, ctx: Ctx | None = None, pod_ctx=None, image: str = "",
                mounts=()) -> tuple[int, str]:  # fmt: skip
    """Run `script` in a fresh pod; its exit code and its log."""
    pod = pod_config(daemon)
    if pod_ctx is not None:
        pod.linux.security_context.MergeFrom(pod_ctx)
    pod_id = run_pod(daemon, pod)
    config = container_config(daemon, "probe", script, mounts=list(mounts))
    if ctx is not None:
        config.linux.security_context.CopyFrom(ctx)
    if image:
        config.image.image = image
    cid = start_container(daemon, pod_id, pod, config)
    status = wait_exited(daemon, cid)
    return status.exit_code, log_text(status.log_path)


def status_field(log: str, name: str) -> str:
    return next(line.split(":", 1)[1].strip() for line in log.splitlines()
                if line.startswith(f"{name}:"))  # fmt: skip


def capabilities(mask_hex: str) -> set[int]:
    mask = int(mask_hex, 16)
    return {bit for bit in range(64) if mask >> bit & 1}


CAP_CHOWN, CAP_NET_ADMIN, CAP_SYS_ADMIN = 0, 12, 21


def _our(name: str) -> str:
    """A field of this process's status: the daemon, our child, holds the same capabilities."""
    return status_field(Path("/proc/self/status").read_text(), name)


def test_run_as_user_group_and_supplemental_groups(daemon):
    ctx = Ctx(supplemental_groups=[3456, 4567])
    ctx.run_as_user.value, ctx.run_as_group.value = 1234, 2345
    code, log = run_to_exit(daemon, "id -u; id -g; id -G", ctx)
    uid, gid, groups = log.splitlines()
    assert code == 0 and (uid, gid) == ("1234", "2345")
    assert {"2345", "3456", "4567"} <= set(groups.split())


def test_run_as_username_from_the_images_passwd(daemon, users_image):
    code, log = run_to_exit(daemon, 'id -u; id -g; id -G; echo "$HOME"',
                            Ctx(run_as_username="app"), image=users_image)  # fmt: skip
    uid, gid, groups, home = log.splitlines()
    assert code == 0 and (uid, gid, home) == ("1500", "1600", "/home/app")
    assert "1700" in groups.split()  # from /etc/group, as containerd does
    with pytest.raises(grpc.RpcError) as unknown:
        run_to_exit(daemon, "true", Ctx(run_as_username="nobody-here"), image=users_image)
    assert unknown.value.code() in (grpc.StatusCode.INVALID_ARGUMENT,
                                    grpc.StatusCode.FAILED_PRECONDITION)  # fmt: skip
    assert "nobody-here" in unknown.value.details()


def test_readonly_rootfs(daemon):
    code, log = run_to_exit(daemon, "touch /new-file 2>&1; echo rc=$?", Ctx(readonly_rootfs=True))
    assert "Read-only file system" in log and "rc=1" in log


def test_capabilities_add_drop_and_no_new_privs(daemon):
    ctx = Ctx(capabilities=api_pb2.Capability(add_capabilities=["NET_ADMIN"],
                                              drop_capabilities=["CHOWN"]),
              no_new_privs=True)  # fmt: skip
    _, log = run_to_exit(daemon, "cat /proc/self/status", ctx)
    effective = capabilities(status_field(log, "CapEff"))
    assert CAP_NET_ADMIN in effective and CAP_CHOWN not in effective
    assert CAP_SYS_ADMIN not in effective
    assert capabilities(status_field(log, "CapBnd")) == effective
    assert status_field(log, "NoNewPrivs") == "1"
    _, default = run_to_exit(daemon, "cat /proc/self/status")
    assert CAP_CHOWN in capabilities(status_field(default, "CapEff"))
    assert CAP_NET_ADMIN not in capabilities(status_field(default, "CapEff"))


def test_privileged_gets_every_capability_no_seccomp_and_no_masks(daemon):
    pod_ctx = api_pb2.LinuxSandboxSecurityContext(privileged=True)
    _, log = run_to_exit(daemon, "cat /proc/self/status; wc -c < /proc/timer_list",
                         Ctx(privileged=True), pod_ctx)  # fmt: skip
    assert capabilities(status_field(log, "CapEff")) == capabilities(_our("CapEff"))
    assert status_field(log, "Seccomp") == "0"
    assert log.splitlines()[-1].strip() != "0"  # /proc/timer_list is not masked
    with pytest.raises(grpc.RpcError) as refused:  # a privileged container needs a privileged pod
        run_to_exit(daemon, "true", Ctx(privileged=True))
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT


def test_default_masks_and_custom_masked_and_readonly_paths(daemon):
    script = ("wc -c < /proc/timer_list; echo sys=$(grep -c ' /proc/sys ro,' /proc/self/mountinfo);"
              " cat /etc/motd; (touch /data/x) 2>/dev/null; echo data=$?")  # fmt: skip
    _, default = run_to_exit(daemon, script)
    timer_list, sys_write, motd, data_write = default.splitlines()
    assert timer_list.strip() == "0" and sys_write == "sys=1"  # masked; /proc/sys read-only
    assert motd == "hello from layer 2" and data_write == "data=0"
    custom = Ctx(masked_paths=["/etc/motd"], readonly_paths=["/data"])
    _, log = run_to_exit(daemon, script, custom)
    timer_list, sys_write, data_write = log.splitlines()  # /etc/motd reads empty
    assert data_write == "data=1"
    assert timer_list.strip() != "0" and sys_write == "sys=0"  # the CRI lists replace defaults


def test_seccomp_profiles(daemon, tmp_path):
    _, default = run_to_exit(daemon, "cat /proc/self/status",
                             Ctx(seccomp=Profile(profile_type=Profile.RuntimeDefault)))  # fmt: skip
    assert status_field(default, "Seccomp") == "2"
    _, unconfined = run_to_exit(daemon, "cat /proc/self/status",
                                Ctx(seccomp=Profile(profile_type=Profile.Unconfined)))  # fmt: skip
    assert status_field(unconfined, "Seccomp") == "0"
    profile = tmp_path / "no-mkdir.json"
    profile.write_text(json.dumps({
        "defaultAction": "SCMP_ACT_ALLOW",
        "syscalls": [{"names": ["mkdir", "mkdirat"], "action": "SCMP_ACT_ERRNO"}],
    }))  # fmt: skip
    local = Ctx(seccomp=Profile(profile_type=Profile.Localhost, localhost_ref=str(profile)))
    _, log = run_to_exit(daemon, "mkdir /new-dir 2>&1; echo rc=$?; touch /new-file && echo touched",
                         local)  # fmt: skip
    assert "Operation not permitted" in log and "rc=1" in log and "touched" in log
    missing = Ctx(seccomp=Profile(profile_type=Profile.Localhost, localhost_ref="/nope.json"))
    with pytest.raises(grpc.RpcError) as bad:
        run_to_exit(daemon, "true", missing)
    assert (
        bad.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "/nope.json" in bad.value.details()
    )


def _namespace(kind: str) -> str:
    return os.readlink(f"/proc/self/ns/{kind}")


def test_host_pid_and_host_ipc(daemon):
    options = api_pb2.NamespaceOption(pid=api_pb2.NODE, ipc=api_pb2.NODE, network=api_pb2.POD)
    pod_ctx = api_pb2.LinuxSandboxSecurityContext(namespace_options=options)
    ctx = Ctx(namespace_options=options)
    _, log = run_to_exit(daemon, "for n in pid ipc net; do readlink /proc/self/ns/$n; done",
                         ctx, pod_ctx)  # fmt: skip
    pid, ipc, net = log.splitlines()
    assert (pid, ipc) == (_namespace("pid"), _namespace("ipc")) and net != _namespace("net")
    _, isolated = run_to_exit(daemon, "for n in pid ipc; do readlink /proc/self/ns/$n; done")
    assert set(isolated.splitlines()).isdisjoint({_namespace("pid"), _namespace("ipc")})


@pytest.mark.parametrize("mode", [api_pb2.POD, api_pb2.CONTAINER])
def test_pod_or_container_pid_namespace(daemon, mode):
    options = api_pb2.NamespaceOption(pid=mode)
    pod = pod_config(daemon)
    pod.linux.security_context.namespace_options.pid = mode
    pod_id = run_pod(daemon, pod)
    sleeper = container_config(daemon, "sleeper", "exec sleep 300")
    sleeper.linux.security_context.namespace_options.CopyFrom(options)
    start_container(daemon, pod_id, pod, sleeper)
    looker = container_config(daemon, "looker", "ps -o args; readlink /proc/1/exe")
    looker.linux.security_context.namespace_options.CopyFrom(options)
    status = wait_exited(daemon, start_container(daemon, pod_id, pod, looker))
    log = log_text(status.log_path)
    assert ("sleep 300" in log) == (mode == api_pb2.POD)


@contextlib.contextmanager
def shared_directory():
    """A host directory that is its own shared mount point (as kubelet makes for Bidirectional)."""
    path = Path(tempfile.mkdtemp(prefix="ort-prop-", dir="/tmp"))
    subprocess.run(["mount", "--bind", str(path), str(path)], check=True)
    try:
        subprocess.run(["mount", "--make-shared", str(path)], check=True)
        (path / "host-side").mkdir()
        (path / "container-side").mkdir()
        yield path
    finally:
        subprocess.run(["umount", "-R", "-l", str(path)], check=False)
        subprocess.run(["rm", "-rf", str(path)], check=False)


def _mounted_in_container(daemon, cid: str, path: str) -> bool:
    result = daemon.runtime().ExecSync(
        api_pb2.ExecSyncRequest(container_id=cid, cmd=["cat", "/proc/self/mountinfo"], timeout=10)
    )
    return any(line.split()[4] == path for line in result.stdout.decode().splitlines())


@pytest.mark.parametrize("propagation", [api_pb2.PROPAGATION_PRIVATE,
                                         api_pb2.PROPAGATION_HOST_TO_CONTAINER,
                                         api_pb2.PROPAGATION_BIDIRECTIONAL])  # fmt: skip
def test_mount_propagation(daemon, propagation):
    with shared_directory() as host_dir:
        pod = pod_config(daemon)
        pod.linux.security_context.privileged = True
        pod_id = run_pod(daemon, pod)
        mount = api_pb2.Mount(container_path="/vol", host_path=str(host_dir),
                              propagation=propagation)  # fmt: skip
        script = "sleep 1; mount -t tmpfs inner /vol/container-side; exec sleep 300"
        config = container_config(daemon, "prop", script, mounts=[mount])
        config.linux.security_context.privileged = True
        cid = start_container(daemon, pod_id, pod, config)
        subprocess.run(["mount", "-t", "tmpfs", "outer", str(host_dir / "host-side")], check=True)
        seen_inside = _wait(lambda: _mounted_in_container(daemon, cid, "/vol/host-side"))
        seen_on_host = _wait(lambda: _host_has_mount(host_dir / "container-side"))
        expect_inside = propagation != api_pb2.PROPAGATION_PRIVATE
        expect_host = propagation == api_pb2.PROPAGATION_BIDIRECTIONAL
        assert (seen_inside, seen_on_host) == (expect_inside, expect_host)
        daemon.runtime().RemovePodSandbox(api_pb2.RemovePodSandboxRequest(pod_sandbox_id=pod_id))


def test_bidirectional_needs_a_shared_source(daemon, tmp_path):
    pod = pod_config(daemon)
    pod_id = run_pod(daemon, pod)
    mount = api_pb2.Mount(container_path="/vol", host_path=str(tmp_path),
                          propagation=api_pb2.PROPAGATION_BIDIRECTIONAL)  # fmt: skip
    with pytest.raises(grpc.RpcError) as refused:
        start_container(daemon, pod_id, pod, container_config(daemon, "p", "true", mounts=[mount]))
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "propagation" in refused.value.details()


def _host_has_mount(path: Path) -> bool:
    return any(line.split()[4] == str(path) for line in open("/proc/self/mountinfo"))


def _wait(condition, seconds: float = 3.0) -> bool:
    """True as soon as `condition` holds; False when it never did within `seconds`."""
    import time

    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.2)
    return condition()


def test_remove_pod_sandbox_removes_its_containers(daemon):
    pod = pod_config(daemon)
    pod_id = run_pod(daemon, pod)
    cids = [start_container(daemon, pod_id, pod, container_config(daemon, n, "sleep 300"))
            for n in ("one", "two")]  # fmt: skip
    daemon.runtime().RemovePodSandbox(api_pb2.RemovePodSandboxRequest(pod_sandbox_id=pod_id))
    listed = daemon.runtime().ListContainers(api_pb2.ListContainersRequest()).containers
    assert not {c.id for c in listed} & set(cids)
    for cid in cids:
        with pytest.raises(grpc.RpcError) as gone:
            daemon.runtime().ContainerStatus(api_pb2.ContainerStatusRequest(container_id=cid))
        assert gone.value.code() == grpc.StatusCode.NOT_FOUND
