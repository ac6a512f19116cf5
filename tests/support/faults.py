"""Real faults for a test daemon, without hooks in the runtime: a CNI plugin that fails, hangs
or is slow, a registry link that is slow or dies, a process frozen with SIGSTOP, a full disk.

    faulty = FaultyCni.install(daemon)          # bridge -> faulty -> loopback, own bin dir
    faulty.set(add="hang")                      # pass | fail | hang | slow (per CNI command)
    with SlowLink(registry.host) as link: ...   # TCP relay: throttle(), die(), revive()
    with frozen(pid): ...                       # SIGSTOP ... SIGCONT
    witness = Witness.start(daemon); ... assert_converged(daemon, witness, baseline)

Everything listens on 127.0.0.1 and is stopped or resumed on exit, also when a test fails.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import struct
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from observe_rt.cri.v1 import api_pb2
from tests.support import footprint, images
from tests.support.daemon import container_config, pod_config, run_pod, start_container, status

# A chained CNI plugin (spec 1.0) whose behaviour per command is read from a file next to it,
# so a test changes it between calls without restarting the daemon.
_FAULTY_PLUGIN = f"""#!{sys.executable}
import json, os, sys, time
mode = json.load(open(os.path.join(os.path.dirname(sys.argv[0]), "faulty.json")))
command = os.environ.get("CNI_COMMAND", "")
conf = json.loads(sys.stdin.read() or "{{}}")
if command == "VERSION":
    print(json.dumps({{"cniVersion": "1.0.0", "supportedVersions": ["0.4.0", "1.0.0"]}}))
    sys.exit(0)
action = mode.get(command, "pass")
if action == "hang":
    time.sleep(3600)
if action == "slow":
    time.sleep(mode.get("seconds", 5))
if action == "fail":
    print(json.dumps({{"cniVersion": "1.0.0", "code": 11, "msg": "injected failure"}}))
    sys.exit(1)
if command == "ADD":
    print(json.dumps(conf.get("prevResult") or {{"cniVersion": "1.0.0"}}))
"""


class FaultyCni:
    """The daemon's network becomes bridge -> faulty -> loopback, `faulty` in a private bin
    dir; the daemon is restarted once with that bin dir and a short plugin timeout."""

    def __init__(self, bin_dir: Path) -> None:
        self.bin_dir = bin_dir

    @classmethod
    def install(cls, daemon, timeout: float = 5.0) -> FaultyCni:
        bin_dir = daemon.root / "cni-bin"
        bin_dir.mkdir(exist_ok=True)
        plugin = bin_dir / "faulty"
        plugin.write_text(_FAULTY_PLUGIN)
        plugin.chmod(0o755)
        faulty = cls(bin_dir)
        faulty.set()
        conflist = daemon.root / "cni" / "10-test.conflist"
        config = json.loads(conflist.read_text())
        config["plugins"].insert(1, {"type": "faulty"})
        conflist.write_text(json.dumps(config, indent=1))
        reconfigure(daemon, cni_bin_dirs=[str(bin_dir), "/usr/lib/cni", "/opt/cni/bin"],
                    cni_timeout=timeout)  # fmt: skip
        return faulty

    def set(self, add: str = "pass", delete: str = "pass", seconds: float = 5.0) -> None:
        (self.bin_dir / "faulty.json").write_text(
            json.dumps({"ADD": add, "DEL": delete, "seconds": seconds})
        )

    def running(self, command: str) -> list[int]:
        """Pids of faulty plugin runs for `command` (ADD, DEL) in progress now."""
        marker = f"CNI_COMMAND={command}".encode()
        found = []
        for entry in os.listdir("/proc"):
            with contextlib.suppress(OSError, ValueError):
                cmdline = Path(f"/proc/{entry}/cmdline").read_bytes()
                environ = Path(f"/proc/{entry}/environ").read_bytes().split(b"\0")
                if str(self.bin_dir / "faulty").encode() in cmdline and marker in environ:
                    found.append(int(entry))
        return found


def unique_image(megabytes: int = 2) -> images.Image:
    """busybox plus a layer of random bytes that no other image shares: pulling it always
    fetches that layer, which takes a while through a throttled SlowLink."""
    noise = images.tar_bytes([images.regular("noise", os.urandom(megabytes << 20))])
    return images.build_image([images.busybox_layer(), noise], ["gzip", "none"],
                              images.host_platform(), "oci")  # fmt: skip


def reconfigure(daemon, **settings) -> None:
    """Restart the daemon with top-level config keys added (values as TOML literals)."""
    daemon.stop()
    lines = "".join(f"{key} = {json.dumps(value)}\n" for key, value in settings.items())
    table = "\n[runtime_handlers]"
    daemon.config_file.write_text(daemon.config_file.read_text().replace(table, lines + table))
    daemon.start()


def wait_for(predicate, timeout: float = 60.0, interval: float = 0.005, what: str = ""):
    """Poll `predicate` until it returns something true; its value, or AssertionError."""
    deadline = time.monotonic() + timeout
    while not (value := predicate()):
        assert time.monotonic() < deadline, f"timed out waiting for {what or predicate}"
        time.sleep(interval)
    return value


@contextlib.contextmanager
def frozen(pid: int):
    """SIGSTOP `pid` for the block: a process that is alive but does not answer."""
    os.kill(pid, signal.SIGSTOP)
    try:
        yield
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGCONT)


class SlowLink:
    """A TCP relay on 127.0.0.1 in front of `upstream` (host:port), for a registry that is slow
    (`throttle`: bytes per second towards the client) or dies mid-transfer (`die`: the port
    closes and every open connection is reset) and comes back on the same port (`revive`)."""

    def __init__(self, upstream: str) -> None:
        host, port = upstream.rsplit(":", 1)
        self.upstream = (host, int(port))
        self.rate: float | None = None
        self.relayed = 0  # bytes sent towards clients so far
        self._conns: list[socket.socket] = []
        self._lock = threading.Lock()
        self._listener = self._listen(0)
        self.port = self._listener.getsockname()[1]
        self.host = f"127.0.0.1:{self.port}"

    def __enter__(self) -> SlowLink:
        return self

    def __exit__(self, *exc) -> None:
        self.die()

    def throttle(self, bytes_per_second: float | None) -> None:
        self.rate = bytes_per_second

    def die(self) -> None:
        # shutdown() first: close() alone would not wake the threads blocked in accept() and
        # recv(), and the kernel would keep the port and the connections open for them.
        for sock in (self._listener, *self._take_conns()):
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                sock.shutdown(socket.SHUT_RDWR)
            with contextlib.suppress(OSError):
                sock.close()

    def _take_conns(self) -> list[socket.socket]:
        with self._lock:
            conns, self._conns = self._conns, []
        return conns

    def revive(self) -> None:
        self._listener = self._listen(self.port)

    def _listen(self, port: int) -> socket.socket:
        listener = socket.socket()
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", port))
        listener.listen(32)
        threading.Thread(target=self._accept, args=(listener,), daemon=True).start()
        return listener

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return  # closed by die()
            try:
                server = socket.create_connection(self.upstream, timeout=10)
                server.settimeout(None)
            except OSError:
                client.close()
                continue
            with self._lock:
                self._conns += [client, server]
            threading.Thread(target=self._pipe, args=(client, server, False), daemon=True).start()
            threading.Thread(target=self._pipe, args=(server, client, True), daemon=True).start()

    def _pipe(self, source: socket.socket, sink: socket.socket, to_client: bool) -> None:
        with contextlib.suppress(OSError):
            while data := source.recv(4096 if to_client and self.rate else 65536):
                sink.sendall(data)
                if to_client:
                    self.relayed += len(data)
                    if self.rate:
                        time.sleep(len(data) / self.rate)
        for sock in (source, sink):
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)


# --- a pod that must come through every fault unharmed --------------------------------------


@dataclass
class Witness:
    """A pod with a running container, made before the faults of a module."""

    pod_id: str
    container_id: str

    @classmethod
    def start(cls, daemon) -> Witness:
        config = pod_config(daemon, name="witness")
        pod_id = run_pod(daemon, config)
        container = container_config(daemon, "w", "sleep 3600")
        return cls(pod_id, start_container(daemon, pod_id, config, container))

    def container_pid(self, daemon) -> int:
        request = api_pb2.ContainerStatusRequest(container_id=self.container_id, verbose=True)
        return json.loads(daemon.runtime().ContainerStatus(request).info["info"])["pid"]


def assert_converged(daemon, witness: Witness, baseline: dict) -> None:
    """The witness pod is ready with its container running and known, no other pod is listed,
    and the host holds exactly what it held at `baseline` (footprint.inventory)."""
    stub = daemon.runtime()
    pod = stub.PodSandboxStatus(api_pb2.PodSandboxStatusRequest(pod_sandbox_id=witness.pod_id))
    assert pod.status.state == api_pb2.SANDBOX_READY
    running = status(daemon, witness.container_id)
    assert running.state == api_pb2.CONTAINER_RUNNING, running
    os.kill(witness.container_pid(daemon), 0)  # its process is really there
    listed = [p.id for p in stub.ListPodSandbox(api_pb2.ListPodSandboxRequest()).items]
    assert listed == [witness.pod_id]
    assert footprint.difference(baseline, footprint.inventory(daemon, counters=False)) == {}


def remove_pod(daemon, pod_id: str) -> None:
    stub = daemon.runtime()
    stub.StopPodSandbox(api_pb2.StopPodSandboxRequest(pod_sandbox_id=pod_id))
    stub.RemovePodSandbox(api_pb2.RemovePodSandboxRequest(pod_sandbox_id=pod_id))


def fill_disk(path: Path) -> int:
    """Write `path` until its file system has no byte left (ENOSPC); returns bytes written."""
    written = 0
    with open(path, "wb", buffering=0) as f:
        for chunk in (1 << 20, 4096, 1):
            with contextlib.suppress(OSError):
                while True:
                    written += f.write(b"\0" * chunk)
    return written
