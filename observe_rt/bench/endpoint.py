"""The CRI benchmark of any endpoint: targets, the interleaved loop, pods and containers.

    targets = [Target("observe-rt", client, image, ...), Target("containerd", ...)]
    run_phases(targets, Settings(...), progress)     # endpoint_phases.py: every phase in turn
    target.samples["pod_start"]  -> [ms, ...]        # endpoint_report.py turns them into figures

Every phase repeats one step per target, warm-up first, with the targets' order rotated every
repetition (A B, B A, A B ...), so drift on the machine (other work, a warming cache) lands on
every target alike. A target whose step fails loses that phase only, with the reason kept in
target.reasons[phase]; the other phases and targets go on.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from observe_rt.bench.common import rotated

POD_NAMESPACE = "bench"
READY_TIMEOUT_S = 30.0
# A container that stops at once on SIGTERM (sleep as pid 1 ignores it): the lifecycle phase
# times a graceful stop, not a grace period running out. It logs READY once the trap is set,
# and the phase waits for that line (untimed): a SIGTERM before it would be ignored.
READY = "ready"
TRAP_SCRIPT = f'trap "exit 0" TERM INT; echo {READY}; while :; do sleep 3600 & wait; done'
READY_LOG_TIMEOUT_S = 10.0
SLEEP = ("sleep", "3600")


class StepError(Exception):
    """One CRI call failed or answered wrong; the message names it."""


@dataclass
class Target:
    """One CRI endpoint and what the benchmark measured on it."""

    name: str
    client: object  # observe_rt.client.cri_client.CriClient (or a fake with its methods)
    image: str
    log_dir: Path  # the pods' log directories go below
    cgroup_parent: str = ""  # the pods' cgroup parents go below ("": the runtime's default)
    daemon_pid: int | None = None
    metrics_url: str | None = None  # observe-rt's /metrics
    version: str = ""
    samples: dict[str, list[float]] = field(default_factory=dict)  # figure -> measurements
    values: dict[str, float] = field(default_factory=dict)  # figure -> one reading
    reasons: dict[str, str] = field(default_factory=dict)  # phase -> why it has no figures
    pod_ids: set[str] = field(default_factory=set)  # every pod made, for clean-up

    def record(self, figure: str, value: float) -> None:
        self.samples.setdefault(figure, []).append(value)


@dataclass(frozen=True)
class Pod:
    id: str
    config: object  # the PodSandboxConfig, needed by CreateContainer


def interleave(
    targets: list[Target],
    phase: str,
    repetitions: int,
    warmup: int,
    step: Callable[[Target, int, bool], None],
    progress: Callable[[], None] | None = None,
) -> None:
    """`step(target, index, measured)` `warmup + repetitions` times per target, the order of
    the targets rotated every time. A StepError drops the target from this phase."""
    for index in range(warmup + repetitions):
        for target in rotated([t for t in targets if phase not in t.reasons], index):
            try:
                step(target, index, index >= warmup)
            except StepError as err:
                target.reasons[phase] = str(err)
            if progress:
                progress()


def timed(step: str, method, *args):
    """(result, milliseconds) of one CRI call; a gRPC error becomes a StepError naming it."""
    import grpc

    start = time.perf_counter_ns()
    try:
        result = method(*args)
    except grpc.RpcError as err:
        raise StepError(f"{step} failed: {err.code().name}: {err.details()}") from None
    return result, (time.perf_counter_ns() - start) / 1e6


def call(step: str, method, *args):
    return timed(step, method, *args)[0]


# --- requests a kubelet would send ----------------------------------------------------------


def pod_config(target: Target, name: str, session: str):
    """A plain pod: pod network, ipc shared, a pid namespace per container."""
    from observe_rt.cri.v1 import api_pb2

    log_dir = target.log_dir / name
    log_dir.mkdir(parents=True, exist_ok=True)
    linux = api_pb2.LinuxPodSandboxConfig(
        security_context=api_pb2.LinuxSandboxSecurityContext(namespace_options=_namespaces())
    )
    if target.cgroup_parent:
        linux.cgroup_parent = f"{target.cgroup_parent}/{name}"
    return api_pb2.PodSandboxConfig(
        metadata=api_pb2.PodSandboxMetadata(name=name, uid=f"{name}-{session}",
                                            namespace=POD_NAMESPACE, attempt=0),
        hostname=name, log_directory=str(log_dir), labels={"observe-rt-bench": session},
        linux=linux,
    )  # fmt: skip


def container_config(image: str, name: str, command=SLEEP):
    from observe_rt.cri.v1 import api_pb2

    return api_pb2.ContainerConfig(
        metadata=api_pb2.ContainerMetadata(name=name), image=api_pb2.ImageSpec(image=image),
        command=list(command), log_path=f"{name}.log",
        linux=api_pb2.LinuxContainerConfig(security_context=api_pb2.LinuxContainerSecurityContext(
            namespace_options=_namespaces())),
    )  # fmt: skip


def _namespaces():
    from observe_rt.cri.v1 import api_pb2

    return api_pb2.NamespaceOption(network=api_pb2.POD, pid=api_pb2.CONTAINER, ipc=api_pb2.POD)


# --- pods and containers --------------------------------------------------------------------


def run_pod(target: Target, name: str, session: str) -> tuple[Pod, float]:
    config = pod_config(target, name, session)
    pod_id, elapsed = timed("RunPodSandbox", target.client.run_pod_sandbox, config)
    target.pod_ids.add(pod_id)
    return Pod(pod_id, config), elapsed


def start_container(target: Target, pod: Pod, name: str, command=SLEEP) -> str:
    """Create and start a container and wait until its status says running; its id."""
    client = target.client
    config = container_config(target.image, name, command)
    container_id = call("CreateContainer", client.create_container, pod.id, config, pod.config)
    call("StartContainer", client.start_container, container_id)
    wait_running(target, container_id)
    return container_id


def wait_running(target: Target, container_id: str) -> None:
    from observe_rt.cri.v1 import api_pb2

    deadline = time.monotonic() + READY_TIMEOUT_S
    while True:
        status = call("ContainerStatus", target.client.container_status, container_id).status
        if status.state == api_pb2.CONTAINER_RUNNING:
            return
        if status.state == api_pb2.CONTAINER_EXITED or time.monotonic() > deadline:
            state = api_pb2.ContainerState.Name(status.state)
            raise StepError(
                f"container {container_id[:12]} is not running: {state} {status.reason}"
            )
        time.sleep(0.01)


def wait_logged(path: Path, text: str, timeout: float = READY_LOG_TIMEOUT_S) -> bool:
    """Until the container's CRI log at `path` has the line `text` (or `timeout`). A CRI log
    line is `<time> <stream> <P|F> <text>`."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            lines = path.read_text().splitlines()
            if any(line.split(" ", 3)[3:] == [text] for line in lines):
                return True
        except OSError:
            pass  # not created yet
        time.sleep(0.01)
    return False


def start_pod(target: Target, name: str, session: str, containers: int = 1) -> tuple[Pod, float]:
    """A pod with `containers` running containers; (pod, ms until the last one runs)."""
    start = time.perf_counter_ns()
    pod, _ = run_pod(target, name, session)
    for index in range(containers):
        start_container(target, pod, f"c{index}")
    return pod, (time.perf_counter_ns() - start) / 1e6


def remove_pod(target: Target, pod_id: str) -> float:
    """StopPodSandbox + RemovePodSandbox; milliseconds."""
    start = time.perf_counter_ns()
    call("StopPodSandbox", target.client.stop_pod_sandbox, pod_id)
    call("RemovePodSandbox", target.client.remove_pod_sandbox, pod_id)
    target.pod_ids.discard(pod_id)
    return (time.perf_counter_ns() - start) / 1e6


def remove_all_pods(target: Target) -> None:
    """Best effort: every pod this benchmark made on the target (also after a failure)."""
    for pod_id in sorted(target.pod_ids):
        try:
            remove_pod(target, pod_id)
        except StepError:
            pass


# --- finding the runtime's processes ----------------------------------------------------------


def socket_inodes(unix_table: str, path: str) -> set[int]:
    """Inodes of the sockets bound to `path` in a /proc/net/unix text. gRPC binds
    `unix:///x` as "///x", so leading slashes are compared as one."""
    found, wanted = set(), "/" + path.lstrip("/")
    for line in unix_table.splitlines()[1:]:
        fields = line.split()
        if len(fields) >= 8 and "/" + fields[7].lstrip("/") == wanted:
            found.add(int(fields[6]))
    return found


def socket_owner(path: str, proc: str = "/proc") -> int | None:
    """The pid of the process listening on the unix socket `path` (the CRI daemon)."""
    try:
        inodes = socket_inodes(Path(proc, "net/unix").read_text(), path)
    except OSError:
        return None
    links = {f"socket:[{inode}]" for inode in inodes}
    for entry in sorted(os.listdir(proc), key=lambda e: (len(e), e)):
        if not entry.isdigit():
            continue
        try:
            for fd in os.listdir(f"{proc}/{entry}/fd"):
                if os.readlink(f"{proc}/{entry}/fd/{fd}") in links:
                    return int(entry)
        except OSError:
            continue
    return None


def endpoint_path(endpoint: str) -> str:
    """`unix:///run/x.sock` (or a bare path) -> /run/x.sock; anything else is refused."""
    if endpoint.startswith("unix://"):
        path = endpoint.removeprefix("unix://")
    elif endpoint.startswith("/"):
        path = endpoint
    else:
        raise ValueError(f"endpoint {endpoint!r}: expected unix:///path/to/cri.sock")
    if not path.startswith("/"):
        raise ValueError(f"endpoint {endpoint!r}: the socket path must be absolute")
    return path
