"""The two CRI runtimes `bench cri` drives, each with private dirs, socket, network and cgroups.

    runtime = ObserveRtRuntime(base, network, cgroup_parent, env)   # or ContainerdRuntime(...)
    runtime.start(images)        # daemon up, CRI answering, network ready; images pulled (CRI)
    runtime.client               # the project's CriClient on the runtime's socket
    runtime.daemon_pid(), runtime.shim_pids()
    runtime.close()              # pods removed, daemon and shims gone, mounts, bridge, cgroups,
                                 # stray sockets and CNI cache entries removed; safe to repeat

observe-rt   `observe-rt daemon --config <base>/config.toml`: state, run dir (short: the pod
             shims' socket paths must fit in 107 bytes), socket, CNI conf and IPAM under <base>.
containerd   `containerd --config <base>/config.toml` with its CRI plugin: root, state, socket,
             runc root and network namespaces under <base>; cgroupfs, overlayfs,
             io.containerd.runc.v2; its sandbox image is the session's pause image; the
             registry is reached in plain HTTP through a hosts.toml. Outside <base> it leaves
             only what containerd always puts there: shim sockets in /run/containerd/s and CNI
             result caches in /var/lib/cni, which close() removes for this session's pods.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import signal
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from observe_rt import __version__
from observe_rt.bench import cri_memory, cri_setup
from observe_rt.bench.bundle import remove_cgroup_tree
from observe_rt.bench.containerd import find_containerd, unmount_under
from observe_rt.bench.cri_image import BenchImages
from observe_rt.bench.runtimes import last_line, observe_rt_argv

CNI_BIN_DIR = "/usr/lib/cni"
READY_TIMEOUT = 30.0
STOP_TIMEOUT = 15.0
CLEANUP_RPC_TIMEOUT = 60.0
CONTAINERD_SHIM_SOCKETS = Path("/run/containerd/s")
CNI_CACHE = Path("/var/lib/cni")
BPFFS = Path("/sys/fs/bpf")  # libcni's default cache dir, used by containerd's CRI


@dataclass(frozen=True)
class Network:
    name: str
    bridge: str
    subnet: str


class Unavailable(Exception):
    """The runtime cannot run on this machine (not installed, ...): reported, not fatal."""


class BenchRuntime:
    """What both runtimes share: the daemon process, readiness, pulling, and clean-up."""

    name = ""

    def __init__(self, base: Path, network: Network, cgroup_parent: str, env: dict) -> None:
        self.base, self.network, self.cgroup_parent, self.env = base, network, cgroup_parent, env
        self.process: subprocess.Popen | None = None
        self.client = None  # CriClient, once the socket answers
        self.version = ""
        self.pod_ids: set[str] = set()  # every pod created, for clean-up
        self._images: BenchImages | None = None  # what start() pulled, for restart()

    # --- to be provided by each runtime --------------------------------------------------------

    @property
    def socket(self) -> Path:
        raise NotImplementedError

    def _write_config(self, images: BenchImages) -> Path:
        raise NotImplementedError

    def images_to_pull(self, images: BenchImages) -> list[str]:
        return [images.busybox]

    def shim_pids(self) -> list[int]:
        raise NotImplementedError

    # --- start ---------------------------------------------------------------------------------

    def argv(self, config: Path) -> list[str]:
        raise NotImplementedError

    @property
    def log(self) -> Path:
        return self.base / "daemon.log"

    def start(self, images: BenchImages) -> None:
        self.base.mkdir(parents=True, exist_ok=True)
        self._images = images
        config = self._write_config(images)
        with open(self.log, "ab") as out:
            # Its own session: a Ctrl-C reaches only us, and we stop the daemon in order.
            self.process = subprocess.Popen(
                self.argv(config), stdin=subprocess.DEVNULL, stdout=out, stderr=out,
                env=self.env, start_new_session=True,
            )  # fmt: skip
        self._wait_ready()
        for reference in self.images_to_pull(images):
            self.client.pull_image(reference)

    def restart(self) -> None:
        """Stop the daemon alone (pods stay up where the runtime allows, as after a crash)
        and start it again on a freshly written config."""
        if self.client is not None:
            self.client.close()
            self.client = None
        self._stop_daemon()
        self.process = None
        self.start(self._images)

    def _wait_ready(self) -> None:
        """Until the socket accepts, Version answers and the network is ready."""
        import grpc

        from observe_rt.client.cri_client import CriClient

        deadline, why = time.monotonic() + READY_TIMEOUT, "socket not created"
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"{self.name} exited at start: {self.log_tail()}")
            if self.client is None and _accepts(self.socket):
                self.client = CriClient(str(self.socket), timeout=30.0)
            if self.client is not None:
                try:
                    version = self.client.version()
                    ready = _conditions(self.client.status())
                except grpc.RpcError as err:
                    why = f"{err.code().name}: {err.details()}"
                else:
                    if ready.get("RuntimeReady") and ready.get("NetworkReady"):
                        self.version = self.version or (
                            f"{version.runtime_name} {version.runtime_version}"
                        )
                        return
                    why = f"conditions {ready}"
            time.sleep(0.05)
        raise RuntimeError(f"{self.name} not ready after {READY_TIMEOUT:.0f}s ({why}): "
                           f"{self.log_tail()}")  # fmt: skip

    def log_tail(self) -> str:
        try:
            return last_line(self.log.read_text(errors="replace")) or "empty log"
        except OSError:
            return "no log"

    def daemon_pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    # --- clean-up ------------------------------------------------------------------------------

    def close(self) -> None:
        """Undo everything, best effort, each step independent of the others."""
        self._remove_pods()
        if self.client is not None:
            self.client.close()
            self.client = None
        self._stop_daemon()
        _kill_and_wait(self.shim_pids())
        remove_cgroup_tree(self.cgroup_parent)
        unmount_under(self.base)
        subprocess.run(["ip", "link", "del", self.network.bridge], capture_output=True,
                       check=False)  # fmt: skip
        self._remove_outside()

    def _remove_pods(self) -> None:
        if self.client is None or self.process is None or self.process.poll() is not None:
            return
        with contextlib.suppress(Exception):
            for pod in self.client.list_pod_sandbox():
                with contextlib.suppress(Exception):
                    self.client.stop_pod_sandbox(pod.id)
                with contextlib.suppress(Exception):
                    self.client.remove_pod_sandbox(pod.id)

    def _stop_daemon(self) -> None:
        process = self.process
        if process is None or process.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            process.wait()

    def _remove_outside(self) -> None:
        """What the runtime keeps outside `base` (nothing for observe-rt)."""


class ObserveRtRuntime(BenchRuntime):
    name = "observe-rt"
    probes = True  # set False (then restart()) to run the daemon with its eBPF probes off

    @property
    def socket(self) -> Path:
        return self.base / "cri.sock"

    @property
    def run_dir(self) -> Path:
        return self.base / "r"

    def argv(self, config: Path) -> list[str]:
        return [*observe_rt_argv(), "daemon", "--config", str(config)]

    def _write_config(self, images: BenchImages) -> Path:
        cri_setup.check_run_dir(self.run_dir)
        self.version = f"observe-rt {__version__}"
        cni = self.base / "cni"
        cri_setup.write_conflist(cni, self.network.name, self.network.bridge,
                                 self.network.subnet, self.base / "ipam")  # fmt: skip
        (self.base / "hosts.d").mkdir(exist_ok=True)  # none: loopback falls back to plain HTTP
        config = self.base / "config.toml"
        config.write_text(cri_setup.observe_rt_config(
            socket=self.socket, state_dir=self.base / "state", run_dir=self.run_dir,
            cni_conf_dir=cni, cni_bin_dir=CNI_BIN_DIR, hosts_dir=self.base / "hosts.d",
            policy=self.base / "no-policy.json", cgroup_parent=self.cgroup_parent,
            probes=self.probes, bpf_pin_dir=self.pin_dir,
        ))  # fmt: skip
        return config

    def shim_pids(self) -> list[int]:
        return cri_memory.find_processes(
            lambda argv: cri_memory.is_observe_rt_shim(argv, self.run_dir)
        )

    @property
    def pin_dir(self) -> Path:
        """The probes' pinned maps (bpffs), private to the session."""
        return BPFFS / f"{self.base.parent.name}-{self.base.name}"

    def _remove_outside(self) -> None:
        shutil.rmtree(self.pin_dir, ignore_errors=True)


class ContainerdRuntime(BenchRuntime):
    name = "containerd"

    def __init__(self, base: Path, network: Network, cgroup_parent: str, env: dict) -> None:
        super().__init__(base, network, cgroup_parent, env)
        found = find_containerd()
        if isinstance(found, str):
            raise Unavailable(found)
        runc = shutil.which("runc") or shutil.which("runc", path="/usr/local/sbin:/usr/sbin")
        if runc is None:
            raise Unavailable("runc not found on PATH")
        self.paths, self.runc = found, runc
        self.version = f"{found.version} + {_first_line([runc, '--version'])}"

    @property
    def socket(self) -> Path:
        return self.base / "containerd.sock"

    def argv(self, config: Path) -> list[str]:
        return [self.paths.containerd, "--config", str(config)]

    def images_to_pull(self, images: BenchImages) -> list[str]:
        return [images.busybox, images.pause]  # the sandbox image too: no pull while timed

    def _write_config(self, images: BenchImages) -> Path:
        cni = self.base / "cni"
        cri_setup.write_conflist(cni, self.network.name, self.network.bridge,
                                 self.network.subnet, self.base / "ipam")  # fmt: skip
        registry_host = images.busybox.split("/", 1)[0]
        hosts = cri_setup.write_hosts_dir(self.base / "certs.d", registry_host)
        config = self.base / "config.toml"
        config.write_text(cri_setup.containerd_config(
            base=self.base, cni_conf_dir=cni, cni_bin_dir=CNI_BIN_DIR, hosts_dir=hosts,
            sandbox_image=images.pause, runc=self.runc,
        ))  # fmt: skip
        return config

    def shim_pids(self) -> list[int]:
        return cri_memory.find_processes(
            lambda argv: cri_memory.is_containerd_shim(argv, self.socket)
        )

    def _remove_outside(self) -> None:
        for pod_id in self.pod_ids:
            with contextlib.suppress(FileNotFoundError):
                (CONTAINERD_SHIM_SOCKETS / shim_socket_name(self.socket, pod_id)).unlink()
        results = CNI_CACHE / "results"
        with contextlib.suppress(FileNotFoundError):
            for entry in results.iterdir():
                if entry.name.startswith(f"{self.network.name}-"):
                    entry.unlink()


def shim_socket_name(address: Path | str, sandbox_id: str) -> str:
    """containerd 1.6 names a shim's socket sha256(<address>/<namespace>/<id>) in hex."""
    path = os.path.join(str(address), cri_setup.CRI_NAMESPACE, sandbox_id)
    return hashlib.sha256(path.encode()).hexdigest()


def _conditions(status) -> dict[str, bool]:
    return {condition.type: condition.status for condition in status.status.conditions}


def _accepts(path: Path) -> bool:
    if not path.exists():
        return False
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
        try:
            probe.connect(str(path))
        except OSError:
            return False
    return True


def _first_line(argv: list[str]) -> str:
    try:
        out = subprocess.run(argv, capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired) as err:
        return f"unknown ({err})"
    lines = out.stdout.strip().splitlines()
    return lines[0] if lines else "unknown"


def _kill_and_wait(pids: list[int], timeout: float = 5.0) -> None:
    """SIGKILL leftover processes (not our children) and wait until /proc no longer has them."""
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + timeout
    for pid in pids:
        while os.path.exists(f"/proc/{pid}") and time.monotonic() < deadline:
            with contextlib.suppress(ChildProcessError):
                os.waitpid(pid, os.WNOHANG)
            if _is_zombie(pid):
                break
            time.sleep(0.02)


def _is_zombie(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] == "Z"
    except (OSError, IndexError):
        return True


def remove_empty_dirs(paths: list[Path], existed: set[Path]) -> None:
    """rmdir each of `paths` (deepest first) that did not exist before and is now empty."""
    for path in sorted(paths, key=lambda p: -len(p.parts)):
        if path not in existed:
            with contextlib.suppress(OSError):
                path.rmdir()
