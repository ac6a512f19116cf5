"""`bench cri`: pod start and teardown through the CRI, observe-rt vs containerd + runc.

One session (use as a context manager: clean-up always runs, also after Ctrl-C or SIGTERM):

    /tmp/ocb-XXXXXXXX/registry-*/   docker-registry on 127.0.0.1, holding bench/busybox:1 and
                                    bench/pause:1 (containerd's sandbox image)
    /tmp/ocb-XXXXXXXX/o/            observe-rt daemon: config, socket, state, run dir, CNI, IPAM
    /tmp/ocb-XXXXXXXX/c/            containerd: config, socket, root, state, runc root, CNI, IPAM
    /tmp/ocb-XXXXXXXX/logs/         the pods' log directories
    cgroup /observe-rt-bench-cri-TAG/<runtime>/pod-N    each pod's CRI cgroup_parent
    bridges ocbTAGo, ocbTAGc        one CNI bridge per runtime, each its own private /24

Both runtimes are driven by the same client (observe_rt.client.cri_client.CriClient) with the
same requests, as a kubelet would send them: a pod (pod network, ipc shared, pid per container)
and one container running `sleep 3600` from busybox, both images pulled through the CRI first.

    warm-up    `warmup` pods per runtime, each started and torn down (not recorded)
    start      `pods` pods per runtime, one at a time: RunPodSandbox + CreateContainer +
               StartContainer, timed from the client
    memory     with every pod up: the daemon's and each pod shim's Rss and Pss (smaps_rollup)
    teardown   each pod: StopPodSandbox + RemovePodSandbox, timed
    exec       (--exec N) one more pod per runtime; N ExecSync(`true`, timeout 10) calls into
               its container, timed, alternating between the runtimes; the pod removed
    stats      (--stats-containers N) N more pods of one container each per runtime; after
               STATS_SETTLE_S (collector ticks), STATS_CALLS ListContainerStats calls timed,
               alternating; observe-rt's /metrics scraped SCRAPES times; then both daemons'
               CPU time (utime + stime, the whole process) over an idle CPU_WINDOW_S window;
               the pods removed
Runtimes alternate, one pod each per iteration, the order rotated every iteration, so machine
noise lands on both alike. A runtime that fails is dropped with the reason.
"""

from __future__ import annotations

import contextlib
import secrets
import shutil
import signal
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from observe_rt.bench import cri_calls, cri_memory, cri_setup
from observe_rt.bench.bundle import cgroup_dirs, remove_cgroup_tree
from observe_rt.bench.common import Session, clean_env, rotated, signals_ignored
from observe_rt.bench.containerd import unmount_under
from observe_rt.bench.cri_image import BenchImages, push_bench_images
from observe_rt.bench.cri_runtimes import (
    CNI_CACHE,
    CONTAINERD_SHIM_SOCKETS,
    BenchRuntime,
    ContainerdRuntime,
    Network,
    ObserveRtRuntime,
    Unavailable,
    remove_empty_dirs,
)
from observe_rt.bench.registry import RunningRegistry, start_registry

RUNTIMES = ("observe-rt", "containerd")
START_STEPS = ("RunPodSandbox", "CreateContainer", "StartContainer")
TEARDOWN_STEPS = ("StopPodSandbox", "RemovePodSandbox")
WORKLOAD = ("sleep", "3600")
POD_NAMESPACE = "bench"
SETTLE_S = 1.0  # after the last pod starts, before memory is read
EXEC_COMMAND = ("true",)
EXEC_TIMEOUT_S = 10
STATS_SETTLE_S = 3.0  # after the last stats pod starts: a few collector ticks
STATS_CALLS = 20  # ListContainerStats calls per runtime
SCRAPES = 10  # observe-rt /metrics scrapes
CPU_WINDOW_S = 10.0  # idle window over which the daemons' CPU time is read
STATS_INTERVAL_S = 1.0  # observe-rt's collector interval (its config default)
TMP_PREFIX = "ocb-"  # short: observe-rt's run dir must stay within 22 bytes (cri_setup)
# Directories containerd creates outside its own dirs; removed at the end if empty and new.
OUTSIDE_DIRS = [CONTAINERD_SHIM_SOCKETS, CONTAINERD_SHIM_SOCKETS.parent,
                CNI_CACHE / "results", CNI_CACHE]  # fmt: skip


@dataclass(frozen=True)
class Pod:
    id: str
    name: str
    cgroup_parent: str
    container_id: str = field(default="", compare=False)


@dataclass(frozen=True)
class MemorySample:
    pods: int  # pods up when read
    daemon: cri_memory.Usage
    shims: list[cri_memory.Usage]
    sandboxes: list[cri_memory.Usage] | None = None  # containerd's pause processes


@dataclass
class StatsSample:
    containers: int  # containers up
    reported: int  # containers in the last ListContainerStats answer
    list_ms: list[float]
    cpu: cri_calls.CpuWindow | None = None
    scrapes_ms: list[float] | None = None  # observe-rt's /metrics
    scrape_bytes: int | None = None


@dataclass
class RuntimeRun:
    name: str
    version: str = ""
    runtime: BenchRuntime | None = field(default=None, repr=False)
    starts: list[dict[str, float]] = field(default_factory=list)
    teardowns: list[dict[str, float]] = field(default_factory=list)
    memory: MemorySample | None = None
    live: list[Pod] = field(default_factory=list)  # measured pods up, in start order
    reason: str | None = None
    execs: list[float] = field(default_factory=list)  # ExecSync ms (--exec)
    exec_reason: str | None = None
    stats: StatsSample | None = None  # --stats-containers
    stats_reason: str | None = None

    @property
    def active(self) -> bool:
        return self.runtime is not None and self.reason is None


class StepError(Exception):
    """One CRI call failed; the message names it."""


def pod_config(name: str, session: str, log_dir: Path, cgroup_parent: str):
    """The PodSandboxConfig a kubelet would send for a plain pod (pid namespace per container)."""
    from observe_rt.cri.v1 import api_pb2

    options = api_pb2.NamespaceOption(network=api_pb2.POD, pid=api_pb2.CONTAINER,
                                      ipc=api_pb2.POD)  # fmt: skip
    return api_pb2.PodSandboxConfig(
        metadata=api_pb2.PodSandboxMetadata(name=name, uid=f"{name}-{session}",
                                            namespace=POD_NAMESPACE, attempt=0),
        hostname=name, log_directory=str(log_dir), labels={"observe-rt-bench": session},
        linux=api_pb2.LinuxPodSandboxConfig(
            cgroup_parent=cgroup_parent,
            security_context=api_pb2.LinuxSandboxSecurityContext(namespace_options=options)),
    )  # fmt: skip


def container_config(image: str):
    from observe_rt.cri.v1 import api_pb2

    options = api_pb2.NamespaceOption(network=api_pb2.POD, pid=api_pb2.CONTAINER,
                                      ipc=api_pb2.POD)  # fmt: skip
    return api_pb2.ContainerConfig(
        metadata=api_pb2.ContainerMetadata(name="sleep"), image=api_pb2.ImageSpec(image=image),
        command=list(WORKLOAD), log_path="sleep.log",
        linux=api_pb2.LinuxContainerConfig(
            security_context=api_pb2.LinuxContainerSecurityContext(namespace_options=options)),
    )  # fmt: skip


class CriBench(Session):
    def __init__(self, runtimes: tuple[str, ...] = RUNTIMES) -> None:
        self.tmp = Path(tempfile.mkdtemp(prefix=TMP_PREFIX, dir="/tmp"))
        self.session = secrets.token_hex(3)
        self.cgroup_parent = f"/observe-rt-bench-cri-{self.session}"
        self.existed = {path for path in OUTSIDE_DIRS if path.exists()}
        self.env = clean_env()
        self.registry: RunningRegistry | None = None
        self.runs = [RuntimeRun(name) for name in runtimes]
        try:
            self.registry = start_registry(self.tmp, access_log=False)
            self.images: BenchImages = push_bench_images(self.registry.url, self.registry.host)
            subnets = cri_setup.pick_subnets(len(self.runs))
            for run, subnet in zip(self.runs, subnets, strict=True):
                self._prepare(run, subnet)
        except BaseException:
            self.close()
            raise

    def describe(self) -> str:
        """The line that names this session's temp dir and tag (stderr): what it leaves
        behind, if anything, carries one or the other."""
        return f"session {self.session}: {self.tmp}"

    def _prepare(self, run: RuntimeRun, subnet: str) -> None:
        kinds = {"observe-rt": ObserveRtRuntime, "containerd": ContainerdRuntime}
        if run.name not in kinds:
            run.reason = f"unknown runtime {run.name!r} (known: {', '.join(kinds)})"
            return
        network = Network(f"ocb-{self.session}-{run.name[0]}",
                          cri_setup.bridge_name(self.session, run.name), subnet)  # fmt: skip
        base = self.tmp / run.name[0]
        try:
            run.runtime = kinds[run.name](base, network, f"{self.cgroup_parent}/{run.name}",
                                          self.env)  # fmt: skip
            run.version = run.runtime.version
            run.runtime.start(self.images)
            run.version = run.runtime.version
        except Unavailable as err:
            run.reason = str(err)
        except Exception as err:  # any failure to start is reported, not fatal
            run.reason = f"setup: {_describe(err)}"
            if run.runtime is not None:
                run.runtime.close()

    # --- the measurement -----------------------------------------------------------------------

    def measure(self, pods: int, warmup: int, progress: Callable[[], None] | None = None):
        tick = progress or (lambda: None)
        for iteration in range(warmup):
            for run in self._order(iteration):
                pod = self._start(run, f"warmup-{iteration}", f"warm-up {iteration + 1}")
                tick()
                if pod is not None:
                    self._teardown(run, pod, f"warm-up {iteration + 1}")
                tick()
        for iteration in range(pods):
            for run in self._order(iteration):
                pod = self._start(run, f"pod-{iteration}", f"pod {iteration + 1}", run.starts)
                if pod is not None:
                    run.live.append(pod)
                tick()
        time.sleep(SETTLE_S)
        for run in self._order(0):
            run.memory = self.read_memory(run)
        for iteration in range(pods):
            for run in self._order(iteration):
                if iteration < len(run.live):
                    self._teardown(run, run.live[iteration], f"pod {iteration + 1}", run.teardowns)
                tick()
        return self.runs

    # --- --exec: ExecSync latency into one running container --------------------------------

    def measure_exec(self, calls: int, progress: Callable[[], None] | None = None):
        tick = progress or (lambda: None)
        pods = {}
        for run in self._order(0):
            pod = self._start(run, "exec-0", "exec pod")
            if pod is None:
                run.exec_reason, run.reason = run.reason, None
            else:
                pods[run.name] = pod
        for iteration in range(calls):
            for run in self._order(iteration):
                if run.name in pods and run.exec_reason is None:
                    self._exec(run, pods[run.name], iteration)
                tick()
        for run in self._order(0):
            if run.name in pods:
                self._teardown(run, pods[run.name], "exec pod")
            if run.reason is not None:  # teardown trouble: this phase's, not the run's
                run.exec_reason, run.reason = run.reason, None
        return self.runs

    def _exec(self, run: RuntimeRun, pod: Pod, iteration: int) -> None:
        client = run.runtime.client
        try:
            start = time.perf_counter_ns()
            response = _call("ExecSync", client.exec_sync, pod.container_id,
                             list(EXEC_COMMAND), EXEC_TIMEOUT_S)  # fmt: skip
            elapsed = (time.perf_counter_ns() - start) / 1e6
        except StepError as err:
            run.exec_reason = f"exec {iteration + 1}: {err}"
            return
        if response.exit_code != 0:
            run.exec_reason = f"exec {iteration + 1}: `true` exited {response.exit_code}"
            return
        run.execs.append(elapsed)

    # --- --stats-containers: ListContainerStats, /metrics and the daemons' idle CPU -----------

    def measure_stats(self, containers: int, progress: Callable[[], None] | None = None):
        tick = progress or (lambda: None)
        pods: dict[str, list[Pod]] = {run.name: [] for run in self.runs}
        for iteration in range(containers):
            for run in self._order(iteration):
                if run.stats_reason is None:
                    pod = self._start(run, f"stats-{iteration}", f"stats pod {iteration + 1}")
                    if pod is None:
                        run.stats_reason, run.reason = run.reason, None
                    else:
                        pods[run.name].append(pod)
                tick()
        measured = [run for run in self._order(0) if run.stats_reason is None]
        time.sleep(STATS_SETTLE_S)
        lists: dict[str, list[float]] = {run.name: [] for run in measured}
        reported: dict[str, int] = {}
        for iteration in range(STATS_CALLS):
            for run in rotated(measured, iteration):
                if run.stats_reason is None:
                    reported[run.name] = self._list_stats(run, lists[run.name])
        for run in measured:
            if run.stats_reason is None:
                run.stats = StatsSample(len(pods[run.name]), reported.get(run.name, 0),
                                        lists[run.name])  # fmt: skip
        for run in measured:
            if run.stats is not None and isinstance(run.runtime, ObserveRtRuntime):
                self._scrape(run)
        if any(run.stats is not None for run in measured):
            self._read_cpu([run for run in measured if run.stats is not None])
        for run in self._order(0):
            for pod in pods[run.name]:
                self._teardown(run, pod, "stats pod")
                tick()
            if run.reason is not None:  # teardown trouble: this phase's, not the run's
                run.stats_reason, run.reason, run.stats = run.reason, None, None
        return self.runs

    def _list_stats(self, run: RuntimeRun, samples: list[float]) -> int:
        from observe_rt.cri.v1 import api_pb2

        client = run.runtime.client
        try:
            start = time.perf_counter_ns()
            response = _call("ListContainerStats", client.runtime.ListContainerStats,
                             api_pb2.ListContainerStatsRequest())  # fmt: skip
            samples.append((time.perf_counter_ns() - start) / 1e6)
        except StepError as err:
            run.stats_reason = str(err)
            return 0
        return len(response.stats)

    def _scrape(self, run: RuntimeRun) -> None:
        url = cri_calls.metrics_url(run.runtime.log.read_text(errors="replace"))
        if url is None:
            run.stats_reason, run.stats = "the daemon logged no metrics URL", None
            return
        times_ms, size = [], 0
        try:
            for _ in range(SCRAPES):
                elapsed, size = cri_calls.scrape(url)
                times_ms.append(elapsed)
        except OSError as err:
            run.stats_reason, run.stats = f"/metrics scrape: {err}", None
            return
        run.stats.scrapes_ms, run.stats.scrape_bytes = times_ms, size

    def _read_cpu(self, runs: list[RuntimeRun]) -> None:
        """Every daemon's CPU time over one idle window (all read together)."""
        before = {run.name: cri_calls.read_cpu_ticks(run.runtime.daemon_pid()) for run in runs}
        start = time.monotonic()
        time.sleep(CPU_WINDOW_S)
        after = {run.name: cri_calls.read_cpu_ticks(run.runtime.daemon_pid()) for run in runs}
        window = round(time.monotonic() - start, 3)
        for run in runs:
            if before[run.name] is None or after[run.name] is None:
                run.stats_reason, run.stats = f"{run.name} daemon exited", None
                continue
            run.stats.cpu = cri_calls.CpuWindow(after[run.name] - before[run.name],
                                                cri_calls.clock_ticks_per_s(), window)  # fmt: skip

    def _order(self, iteration: int) -> list[RuntimeRun]:
        return rotated([run for run in self.runs if run.active], iteration)

    def _start(self, run: RuntimeRun, name: str, label: str, samples=None) -> Pod | None:
        runtime = run.runtime
        log_dir = self.tmp / "logs" / run.name[0] / name
        log_dir.mkdir(parents=True)
        cgroup_parent = f"{runtime.cgroup_parent}/{name}"
        config = pod_config(name, self.session, log_dir, cgroup_parent)
        container = container_config(self.images.busybox)
        client, pod_id = runtime.client, None
        try:
            marks = [time.perf_counter_ns()]
            pod_id = _call("RunPodSandbox", client.run_pod_sandbox, config)
            marks.append(time.perf_counter_ns())
            runtime.pod_ids.add(pod_id)
            container_id = _call("CreateContainer", client.create_container, pod_id, container,
                                 config)  # fmt: skip
            marks.append(time.perf_counter_ns())
            _call("StartContainer", client.start_container, container_id)
            marks.append(time.perf_counter_ns())
        except StepError as err:
            run.reason = f"{label}: {err}"
            return None
        if samples is not None:
            samples.append(_spans(START_STEPS, marks))
        return Pod(pod_id, name, cgroup_parent, container_id)

    def _teardown(self, run: RuntimeRun, pod: Pod, label: str, samples=None) -> None:
        client = run.runtime.client
        try:
            marks = [time.perf_counter_ns()]
            _call("StopPodSandbox", client.stop_pod_sandbox, pod.id)
            marks.append(time.perf_counter_ns())
            _call("RemovePodSandbox", client.remove_pod_sandbox, pod.id)
            marks.append(time.perf_counter_ns())
        except StepError as err:
            run.reason = f"{label} teardown: {err}"
            return
        if samples is not None:
            samples.append(_spans(TEARDOWN_STEPS, marks))

    def read_memory(self, run: RuntimeRun) -> MemorySample | None:
        runtime = run.runtime
        daemon = cri_memory.read_usage(runtime.daemon_pid())
        if daemon is None:
            run.reason = f"{run.name} daemon exited before its memory was read"
            return None
        sandboxes = None
        if isinstance(runtime, ContainerdRuntime):
            pids = {pid for pod in run.live for pid in cgroup_pids(f"{pod.cgroup_parent}/{pod.id}")}
            sandboxes = cri_memory.usages(sorted(pids))
        return MemorySample(len(run.live), daemon, cri_memory.usages(runtime.shim_pids()),
                            sandboxes)  # fmt: skip

    # --- clean-up ------------------------------------------------------------------------------

    def close(self) -> None:
        """Pods, daemons, shims, mounts, bridges, cgroups, the registry and the temp dir; a
        second Ctrl-C or SIGTERM can't cut it short."""
        with signals_ignored(signal.SIGINT, signal.SIGTERM):
            for run in self.runs:
                if run.runtime is not None:
                    run.runtime.close()
            remove_cgroup_tree(self.cgroup_parent)
            if self.registry is not None:
                self.registry.stop()
            unmount_under(self.tmp)
            remove_empty_dirs(OUTSIDE_DIRS, self.existed)
            shutil.rmtree(self.tmp, ignore_errors=True)


def cgroup_pids(cgroup_path: str) -> set[int]:
    """Processes in `cgroup_path` in any hierarchy (hybrid hosts have several)."""
    pids: set[int] = set()
    for directory in cgroup_dirs(cgroup_path):
        with contextlib.suppress(OSError, ValueError):
            pids |= {int(pid) for pid in Path(directory, "cgroup.procs").read_text().split()}
    return pids


def _call(step: str, method, *args):
    import grpc

    try:
        return method(*args)
    except grpc.RpcError as err:
        raise StepError(f"{step} failed: {err.code().name}: {err.details()}") from None


def _spans(steps: tuple[str, ...], marks: list[int]) -> dict[str, float]:
    return {step: (marks[i + 1] - marks[i]) / 1e6 for i, step in enumerate(steps)}


def _describe(err: BaseException) -> str:
    import grpc

    if isinstance(err, grpc.RpcError):
        return f"{err.code().name}: {err.details()}"
    return str(err) or type(err).__name__
