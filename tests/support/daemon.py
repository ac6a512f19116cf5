"""Run a real observe-rt daemon for tests: private dirs, socket, cgroup parent, CNI bridge.

The CNI network is a private bridge with its own name and subnet, no gateway, no default route
and no masquerading: pods reach each other and nothing else.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import grpc

from observe_rt.cri.v1 import api_pb2, api_pb2_grpc
from tests.support.bundles import remove_cgroup_tree

OBSERVE_RT = str(Path(sys.executable).with_name("observe-rt"))
LOG_LINE = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{9}Z (stdout|stderr) (P|F) .*$")


@dataclass
class Daemon:
    root: Path
    socket: str
    config_file: Path
    cgroup_parent: str
    bridge: str
    subnet: str
    process: subprocess.Popen | None = None
    log: Path = field(init=False)

    def __post_init__(self) -> None:
        self.log = self.root / "daemon.log"

    @property
    def run_dir(self) -> Path:
        return self.root / "run"

    @property
    def state_dir(self) -> Path:
        return self.root / "state"

    def start(self) -> None:
        with open(self.log, "ab") as out:
            self.process = subprocess.Popen(
                [OBSERVE_RT, "daemon", "--config", str(self.config_file)],
                stdin=subprocess.DEVNULL, stdout=out, stderr=out,
            )  # fmt: skip
        deadline = time.monotonic() + 30
        while True:
            with contextlib.suppress(grpc.RpcError):
                self.runtime().Version(api_pb2.VersionRequest(), timeout=2)
                return
            if self.process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"daemon did not start: {self.log.read_text()[-3000:]}")
            time.sleep(0.1)

    def kill9(self) -> None:
        self.process.send_signal(signal.SIGKILL)
        self.process.wait()

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()

    def channel(self) -> grpc.Channel:
        # As the kubelet does: ExecSync answers may carry 16 MiB per stream.
        options = [("grpc.max_receive_message_length", 64 << 20)]
        return grpc.insecure_channel(f"unix://{self.socket}", options=options)

    def runtime(self) -> api_pb2_grpc.RuntimeServiceStub:
        return api_pb2_grpc.RuntimeServiceStub(self.channel())

    def images(self) -> api_pb2_grpc.ImageServiceStub:
        return api_pb2_grpc.ImageServiceStub(self.channel())

    def shim_pids(self) -> list[int]:
        marker = str(self.run_dir).encode()
        found = []
        for entry in os.listdir("/proc"):
            if entry.isdigit():
                with contextlib.suppress(OSError):
                    cmdline = Path(f"/proc/{entry}/cmdline").read_bytes()
                    if b"observe_rt.pod.shim" in cmdline and marker in cmdline:
                        found.append(int(entry))
        return found

    def mounts(self) -> list[str]:
        with open("/proc/self/mountinfo") as f:
            return [line.split()[4] for line in f if str(self.root) in line.split()[4]]


def pin_dir(root: Path) -> Path:
    """Each test daemon pins its probe maps in its own bpffs directory."""
    return Path("/sys/fs/bpf") / root.name


def write_config(root: Path, cgroup_parent: str, bridge: str, subnet: str) -> Path:
    cni_dir = root / "cni"
    cni_dir.mkdir()
    conflist = {
        "cniVersion": "1.0.0",
        "name": f"{bridge}-net",
        "plugins": [
            {"type": "bridge", "bridge": bridge, "isGateway": False, "ipMasq": False,
             "hairpinMode": True,
             "ipam": {"type": "host-local", "dataDir": str(root / "ipam"),
                      "ranges": [[{"subnet": subnet}]]}},
            {"type": "loopback"},
        ],
    }  # fmt: skip
    (cni_dir / "10-test.conflist").write_text(json.dumps(conflist, indent=1))
    config = root / "config.toml"
    config.write_text(
        f'socket = "{root}/cri.sock"\nstate_dir = "{root}/state"\nrun_dir = "{root}/run"\n'
        f'cni_conf_dir = "{cni_dir}"\ncgroup_parent = "{cgroup_parent}"\n'
        f'registry_hosts_dir = "{root}/certs.d"\npolicy = "{root}/no-policy.json"\n'
        'log_level = "debug"\nmetrics_address = "127.0.0.1:0"\n'
        f'bpf_pin_dir = "{pin_dir(root)}"\n'
        '\n[runtime_handlers]\nrunc = "/usr/sbin/runc"\n'
    )
    return config


@contextlib.contextmanager
def running_daemon():
    # A short path: unix socket paths are limited to 107 bytes.
    root = Path(tempfile.mkdtemp(prefix="ort-", dir="/tmp"))
    tag = uuid.uuid4().hex[:6]
    cgroup_parent, bridge = f"/observe-rt-test-{tag}", f"ort{tag}"
    subnet = f"10.{random.randint(100, 250)}.{random.randint(0, 255)}.0/24"
    daemon = Daemon(root, f"{root}/cri.sock", write_config(root, cgroup_parent, bridge, subnet),
                    cgroup_parent, bridge, subnet)  # fmt: skip
    try:
        daemon.start()
        yield daemon
    finally:
        _teardown(daemon)


def _teardown(daemon: Daemon) -> None:
    with contextlib.suppress(Exception):
        if daemon.process and daemon.process.poll() is None:
            stub = daemon.runtime()
            for pod in stub.ListPodSandbox(api_pb2.ListPodSandboxRequest(), timeout=30).items:
                stub.RemovePodSandbox(api_pb2.RemovePodSandboxRequest(pod_sandbox_id=pod.id),
                                      timeout=60)  # fmt: skip
    daemon.stop()
    for pid in daemon.shim_pids():
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    for mount in sorted(daemon.mounts(), key=len, reverse=True):
        subprocess.run(["umount", "-l", mount], check=False)
    subprocess.run(["ip", "link", "del", daemon.bridge], check=False, capture_output=True)
    remove_cgroup_tree(daemon.cgroup_parent)
    shutil.rmtree(pin_dir(daemon.root), ignore_errors=True)
    shutil.rmtree(daemon.root, ignore_errors=True)


# --- CRI helpers for tests ------------------------------------------------------------


def pod_config(daemon, name=None, host_network=False, **extra) -> api_pb2.PodSandboxConfig:
    name = name or f"pod-{uuid.uuid4().hex[:6]}"
    options = api_pb2.NamespaceOption(network=api_pb2.NODE if host_network else api_pb2.POD)
    return api_pb2.PodSandboxConfig(
        metadata=api_pb2.PodSandboxMetadata(name=name, namespace="test", uid=name + "-uid"),
        hostname=name, log_directory=str(daemon.root / "logs" / name),
        linux=api_pb2.LinuxPodSandboxConfig(
            security_context=api_pb2.LinuxSandboxSecurityContext(namespace_options=options)),
        **extra,
    )  # fmt: skip


def run_pod(daemon, config) -> str:
    return (
        daemon.runtime().RunPodSandbox(api_pb2.RunPodSandboxRequest(config=config)).pod_sandbox_id
    )


def container_config(daemon, name, args, **extra) -> api_pb2.ContainerConfig:
    return api_pb2.ContainerConfig(
        metadata=api_pb2.ContainerMetadata(name=name), image=api_pb2.ImageSpec(image=daemon.image),
        command=["sh", "-c"], args=[args], log_path=f"{name}.log", **extra,
    )  # fmt: skip


def start_container(daemon, pod_id, sandbox_config, config) -> str:
    stub = daemon.runtime()
    cid = stub.CreateContainer(
        api_pb2.CreateContainerRequest(
            pod_sandbox_id=pod_id, config=config, sandbox_config=sandbox_config
        )
    ).container_id
    stub.StartContainer(api_pb2.StartContainerRequest(container_id=cid))
    return cid


def status(daemon, cid) -> api_pb2.ContainerStatus:
    return daemon.runtime().ContainerStatus(api_pb2.ContainerStatusRequest(container_id=cid)).status


def wait_exited(daemon, cid, timeout=30) -> api_pb2.ContainerStatus:
    deadline = time.monotonic() + timeout
    while (current := status(daemon, cid)).state != api_pb2.CONTAINER_EXITED:
        assert time.monotonic() < deadline, f"container {cid} still {current.state}"
        time.sleep(0.1)
    return current


def log_text(path: str) -> str:
    lines = Path(path).read_text().splitlines()
    assert all(LOG_LINE.match(line) for line in lines), lines
    return "\n".join(line.split(" ", 3)[3] for line in lines)
