"""`make run`: a private observe-rt daemon with demo workloads, and `observe-rt top` in front.

    python -m observe_rt.demo [--tag TAG] [--no-top]

    /tmp/ortd-TAG/          the daemon's config, socket, state (image store), run dir, CNI, logs
    cgroup /observe-rt-demo-TAG/...   every pod and container
    bridge ortdemoTAG       a private /24, no gateway, no masquerade, no routes: pods reach each
                            other and nothing else
    image observe-rt.local/demo:1    built here from the host's busybox-static, imported (no
                                      registry, no network)

Pods (namespace "demo"), restarted by this script when they exit, as the kubelet would:
    shop/cpu-burner     a shell loop limited to half a core
    shop/memory-hog     grows by 1 MiB every 0.2 s under a 48 MiB limit: OOM-killed, restarted
    tcp-server/server   busybox httpd on :8080 serving 256 KiB
    tcp-client/client   fetches it from the server pod's address every second (one TCP flow
                        each), and fails an open() (a syscall error to show)

Ctrl-C (or q in top) stops everything: pods, shims, daemon, mounts, cgroups, bridge, temp dir.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import secrets
import shutil
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from observe_rt.bench import cri_setup
from observe_rt.bench.common import clean_env, signals_ignored
from observe_rt.bench.cri_runtimes import Network, ObserveRtRuntime

NAMESPACE = "demo"
IMAGE = "observe-rt.local/demo:1"
RESTART_BACKOFF_S = 3.0  # after an exit, before the next attempt (the kubelet's is 10 s, doubling)
READY_TIMEOUT_S = 60.0


@dataclass(frozen=True)
class Workload:
    pod: str
    name: str
    script: str
    cpu_cores: float = 0.0
    memory_bytes: int = 0


WORKLOADS = (
    Workload("shop", "cpu-burner", "while :; do :; done", cpu_cores=0.5),
    Workload("shop", "memory-hog",
             'x=; while :; do x="$x$(head -c 1048576 /dev/zero | tr "\\0" a)"; sleep 0.2; done',
             memory_bytes=48 << 20),
    Workload("tcp-server", "server",
             "mkdir -p /www && head -c 262144 /dev/zero > /www/blob &&"
             " exec httpd -f -p 8080 -h /www"),
    Workload("tcp-client", "client",
             "while :; do wget -q -O /dev/null http://$SERVER:8080/blob;"
             " cat /etc/missing 2>/dev/null; sleep 1; done"),
)  # fmt: skip


# --- the image -----------------------------------------------------------------------------------


def image_archive(path: Path) -> Path:
    """An OCI layout tar of IMAGE: the host's busybox-static with every applet (bench's layer)."""
    from observe_rt.bench.cri_image import busybox_layer
    from observe_rt.bench.image import build_image, host_platform, regular, tar_bytes
    from observe_rt.oci import media

    env = ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"]
    image = build_image([busybox_layer()], ["gzip"], host_platform(),
                        config={"Env": env, "Cmd": ["/bin/sh"]})  # fmt: skip
    blobs = {image.top.digest: image.top.data}
    blobs.update({digest: blob.data for digest, blob in image.blobs.items()})
    annotations = {"org.opencontainers.image.ref.name": IMAGE}
    index = {"schemaVersion": 2, "mediaType": media.OCI_INDEX,
             "manifests": [image.top.descriptor(annotations=annotations)]}  # fmt: skip
    entries = [regular("oci-layout", json.dumps({"imageLayoutVersion": "1.0.0"}).encode()),
               regular("index.json", json.dumps(index).encode())]  # fmt: skip
    entries += [regular(f"blobs/sha256/{d.split(':')[1]}", data) for d, data in blobs.items()]
    path.write_bytes(tar_bytes(entries))
    return path


# --- the daemon and the pods ---------------------------------------------------------------------


class Demo:
    """Use as a context manager: close() always runs and leaves nothing behind."""

    def __init__(self, tag: str | None = None) -> None:
        self.tag = tag or secrets.token_hex(3)
        if not re.fullmatch(r"[0-9a-z]{1,8}", self.tag):
            raise ValueError(f"--tag {self.tag!r}: 1 to 8 lowercase letters or digits")
        self.base = Path(f"/tmp/ortd-{self.tag}")
        self.network = Network(f"ortdemo-{self.tag}", f"ortdemo{self.tag}",
                               cri_setup.pick_subnets(1)[0])  # fmt: skip
        self.cgroup_parent = f"/observe-rt-demo-{self.tag}"
        self.env = clean_env()
        self.runtime = None
        self.api = ""
        self.pods: dict[str, tuple[str, object]] = {}  # pod name -> (id, PodSandboxConfig)
        self._exited_at: dict[str, float] = {}
        self._stop = threading.Event()
        self._supervisor: threading.Thread | None = None

    def __enter__(self) -> Demo:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    @property
    def socket(self) -> str:
        return str(self.runtime.socket) if self.runtime else ""

    def start(self, say=print) -> None:
        from observe_rt.oci.images import ImageService

        if self.base.exists():
            raise FileExistsError(f"{self.base} exists: another demo with tag {self.tag} runs?")
        self.base.mkdir(mode=0o700)
        say(f"demo: building {IMAGE} from busybox-static and importing it")
        archive = image_archive(self.base / "demo-image.tar")
        ImageService(self.base / "state" / "images", hosts_dir=None).import_archive(archive)
        archive.unlink()
        say(f"demo: starting the daemon in {self.base} (bridge {self.network.bridge}, "
            f"{self.network.subnet})")  # fmt: skip
        self.runtime = DemoRuntime(self.base, self.network, self.cgroup_parent, self.env)
        self.runtime.start(None)
        self.api = _metrics_api(self.runtime.log)
        say("demo: starting pods: shop (cpu-burner, memory-hog), tcp-server, tcp-client")
        for workload in WORKLOADS:
            self._start(workload, attempt=0)
        (self.base / "demo.json").write_text(json.dumps(
            {"api": self.api, "socket": self.socket, "cgroup_parent": self.cgroup_parent,
             "bridge": self.network.bridge, "base": str(self.base)}))  # fmt: skip
        self._supervisor = threading.Thread(target=self._supervise, daemon=True,
                                            name="demo-restarts")  # fmt: skip
        self._supervisor.start()

    def _pod(self, name: str):
        if name not in self.pods:
            config = _pod_config(name, self.base / "logs" / name)
            self.pods[name] = (self.runtime.client.run_pod_sandbox(config), config)
        return self.pods[name]

    def _start(self, workload: Workload, attempt: int) -> str:
        client = self.runtime.client
        pod_id, pod_config = self._pod(workload.pod)
        env = {}
        if workload.name == "client":
            server_id, _ = self._pod("tcp-server")
            env["SERVER"] = client.pod_sandbox_status(server_id).status.network.ip
        config = _container_config(workload, attempt, env)
        container_id = client.create_container(pod_id, config, pod_config)
        client.start_container(container_id)
        return container_id

    def _supervise(self) -> None:
        while not self._stop.wait(1.0):
            with contextlib.suppress(Exception):  # a failed round is tried again next second
                self.restart_exited()

    def restart_exited(self) -> None:
        """Start the next attempt of each workload whose newest attempt exited
        RESTART_BACKOFF_S ago; keep only the newest dead attempt, as the kubelet does."""
        client = self.runtime.client
        for workload in WORKLOADS:
            pod_id, _ = self._pod(workload.pod)
            attempts = sorted((c for c in client.list_containers(pod_id=pod_id)
                               if c.metadata.name == workload.name),
                              key=lambda c: c.metadata.attempt, reverse=True)  # fmt: skip
            if not attempts or attempts[0].state != 2:  # CONTAINER_EXITED
                continue
            newest = attempts[0]
            seen = self._exited_at.setdefault(newest.id, time.monotonic())
            if time.monotonic() - seen < RESTART_BACKOFF_S or self._stop.is_set():
                continue
            self._start(workload, newest.metadata.attempt + 1)
            for old in attempts[1:]:
                client.remove_container(old.id)

    def close(self) -> None:
        self._stop.set()
        if self._supervisor is not None:
            self._supervisor.join(10)
        if self.runtime is not None:
            self.runtime.close()  # pods, daemon, shims, cgroups, mounts, bridge
        elif self.base.exists():
            from observe_rt.bench.bundle import remove_cgroup_tree

            remove_cgroup_tree(self.cgroup_parent)
        shutil.rmtree(self.base, ignore_errors=True)


class DemoRuntime(ObserveRtRuntime):
    """bench's observe-rt daemon set-up (private dirs, network, clean-up), without pulls: the
    demo image is imported before the daemon starts."""

    def images_to_pull(self, images) -> list[str]:
        return []


def _metrics_api(log: Path, timeout: float = READY_TIMEOUT_S) -> str:
    """The daemon logs where it serves /metrics (an ephemeral port); /api/v1/view is there too."""
    deadline = time.monotonic() + timeout
    pattern = re.compile(r"Prometheus metrics on (http://[^/\s\"]+)/metrics")
    while time.monotonic() < deadline:
        found = pattern.search(log.read_text(errors="replace")) if log.exists() else None
        if found:
            return found.group(1)
        time.sleep(0.1)
    raise RuntimeError(f"the daemon did not log its metrics address; see {log}")


def _pod_config(name: str, log_dir: Path):
    from observe_rt.cri.v1 import api_pb2

    return api_pb2.PodSandboxConfig(
        metadata=api_pb2.PodSandboxMetadata(name=name, namespace=NAMESPACE, uid=f"{name}-uid"),
        hostname=name, log_directory=str(log_dir), labels={"app": name},
    )  # fmt: skip


def _container_config(workload: Workload, attempt: int, env: dict[str, str]):
    from observe_rt.cri.v1 import api_pb2

    resources = api_pb2.LinuxContainerResources()
    if workload.cpu_cores:
        resources.cpu_period, resources.cpu_quota = 100_000, int(workload.cpu_cores * 100_000)
    if workload.memory_bytes:
        resources.memory_limit_in_bytes = workload.memory_bytes
    return api_pb2.ContainerConfig(
        metadata=api_pb2.ContainerMetadata(name=workload.name, attempt=attempt),
        image=api_pb2.ImageSpec(image=IMAGE), command=["sh", "-c", workload.script],
        envs=[api_pb2.KeyValue(key=k, value=v) for k, v in env.items()],
        log_path=f"{workload.name}_{attempt}.log",
        linux=api_pb2.LinuxContainerConfig(resources=resources),
    )  # fmt: skip


# --- the command ---------------------------------------------------------------------------------


def run_top(demo: Demo) -> int:
    """`observe-rt top` in front, on this terminal; Ctrl-C reaches it and us alike."""
    from observe_rt.bench.runtimes import observe_rt_argv

    argv = [*observe_rt_argv(), "top", "--api", demo.api, "--socket", demo.socket]
    top = subprocess.Popen(argv)
    try:
        return top.wait()
    except KeyboardInterrupt:
        try:  # top got the same SIGINT: let it restore the terminal
            return top.wait(5)
        except subprocess.TimeoutExpired:
            top.kill()
            return top.wait()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m observe_rt.demo",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--tag", help="names this demo's dirs, cgroups and bridge (default random)")
    parser.add_argument("--no-top", action="store_true", help="run the workloads until Ctrl-C")
    args = parser.parse_args(argv)
    if os.geteuid() != 0:
        print("demo: needs root (it creates namespaces, cgroups, mounts and a bridge)",
              file=sys.stderr)  # fmt: skip
        return 1
    # Also when started in the background (where SIGINT starts out ignored): Ctrl-C and
    # SIGTERM both end in the same clean-up.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, lambda *_: _interrupt())
    demo = Demo(args.tag)
    try:
        demo.start()
        if args.no_top:
            print(f"demo: running; api {demo.api}, socket {demo.socket}; Ctrl-C stops it",
                  flush=True)  # fmt: skip
            threading.Event().wait()
        else:
            run_top(demo)
    except KeyboardInterrupt:
        pass
    except Exception as err:  # said plainly; the clean-up below still runs
        print(f"demo: failed: {err}", file=sys.stderr, flush=True)
        return 1
    finally:
        with signals_ignored(signal.SIGINT, signal.SIGTERM):
            print("demo: stopping: pods, daemon, cgroups, bridge, files", flush=True)
            demo.close()
            print("demo: done, nothing left behind", flush=True)
    return 0


def _interrupt() -> None:
    raise KeyboardInterrupt


if __name__ == "__main__":
    sys.exit(main())
