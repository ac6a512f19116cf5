"""The phases of the CRI endpoint benchmark, each interleaved over the targets (endpoint.py).

    pods       N pods one after the other: start (RunPodSandbox + CreateContainer +
               StartContainer until ContainerStatus says running), then teardown
               (StopPodSandbox + RemovePodSandbox)
    parallel   K pods started at once (K threads), `parallel_rounds` times: the time until all
               K run, each pod's own time, and the K teardowns at once
    lifecycle  one pod; per repetition a container created, started, status read, stopped
               (graceful: its shell exits on SIGTERM), removed, each call timed; then
               ExecSync(`true`) into a second container of that pod
    lists      pods of `containers_per_pod` containers up to each level (10, 100 containers);
               at each level ListContainerStats, ListPodSandboxStats and ListContainers timed;
               at the top level the daemon's and the shims' memory and observe-rt's /metrics
Figures are milliseconds under target.samples[name]; one-off readings under target.values.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from observe_rt.bench import cri_calls, cri_memory
from observe_rt.bench.endpoint import (
    READY,
    TRAP_SCRIPT,
    Pod,
    StepError,
    Target,
    container_config,
    interleave,
    remove_pod,
    run_pod,
    start_container,
    start_pod,
    timed,
    wait_logged,
)

LIFECYCLE_STEPS = ("create", "start", "status", "stop", "remove")
LIST_CALLS = ("list_container_stats", "list_pod_sandbox_stats", "list_containers")
STOP_TIMEOUT_S = 10
EXEC_TIMEOUT_S = 10
SCRAPES = 5
MIB = 1024


@dataclass(frozen=True)
class Settings:
    session: str  # a short tag: pod uids and labels, so runs never collide
    pods: int = 20
    warmup: int = 2
    parallel: int = 5
    parallel_rounds: int = 3
    repetitions: int = 20  # lifecycle rounds, ExecSync calls, calls per list level
    levels: tuple[int, ...] = (10, 100)
    containers_per_pod: int = 10
    settle_s: float = 3.0  # after a list level is up: a few collector ticks


# --- pods, serial and parallel ----------------------------------------------------------------


def measure_pods(targets: list[Target], settings: Settings) -> None:
    def step(target: Target, index: int, measured: bool) -> None:
        pod, start_ms = start_pod(target, f"serial-{index}", settings.session)
        teardown_ms = remove_pod(target, pod.id)
        if measured:
            target.record("pod_start", start_ms)
            target.record("pod_teardown", teardown_ms)

    interleave(targets, "pods", settings.pods, settings.warmup, step)


def measure_parallel(targets: list[Target], settings: Settings) -> None:
    k = settings.parallel

    def step(target: Target, index: int, measured: bool) -> None:
        names = [f"par-{index}-{n}" for n in range(k)]
        with ThreadPoolExecutor(k) as pool:
            start = time.perf_counter_ns()
            started = list(pool.map(lambda n: start_pod(target, n, settings.session), names))
            all_up_ms = (time.perf_counter_ns() - start) / 1e6
            start = time.perf_counter_ns()
            list(pool.map(lambda pod: remove_pod(target, pod[0].id), started))
            all_down_ms = (time.perf_counter_ns() - start) / 1e6
        if measured:
            target.record("pod_start_parallel", all_up_ms)
            target.record("pod_teardown_parallel", all_down_ms)
            for _, each_ms in started:
                target.record("pod_start_parallel_each", each_ms)

    interleave(targets, "parallel", settings.parallel_rounds, min(settings.warmup, 1), step)


# --- container lifecycle and ExecSync -----------------------------------------------------------


def measure_lifecycle(targets: list[Target], settings: Settings) -> None:
    pods: dict[str, tuple[Pod, str]] = {}
    for target in targets:
        try:
            pod, _ = run_pod(target, "lifecycle", settings.session)
            pods[target.name] = (pod, start_container(target, pod, "exec"))
        except StepError as err:
            target.reasons["lifecycle"] = target.reasons["exec"] = f"lifecycle pod: {err}"

    def lifecycle(target: Target, index: int, measured: bool) -> None:
        client, pod = target.client, pods[target.name][0]
        config = container_config(target.image, f"lc-{index}", ("/bin/sh", "-c", TRAP_SCRIPT))
        spans = {}
        container_id, spans["create"] = timed("CreateContainer", client.create_container,
                                              pod.id, config, pod.config)  # fmt: skip
        _, spans["start"] = timed("StartContainer", client.start_container, container_id)
        _, spans["status"] = timed("ContainerStatus", client.container_status, container_id)
        wait_logged(Path(pod.config.log_directory, config.log_path), READY)
        _, spans["stop"] = timed("StopContainer", client.stop_container, container_id,
                                 STOP_TIMEOUT_S)  # fmt: skip
        _, spans["remove"] = timed("RemoveContainer", client.remove_container, container_id)
        if measured:
            for step_name, value in spans.items():
                target.record(step_name, value)

    def exec_true(target: Target, index: int, measured: bool) -> None:
        container_id = pods[target.name][1]
        response, elapsed = timed("ExecSync", target.client.exec_sync, container_id, ["true"],
                                  EXEC_TIMEOUT_S)  # fmt: skip
        if response.exit_code != 0:
            raise StepError(f"ExecSync `true` exited {response.exit_code}")
        if measured:
            target.record("exec_sync", elapsed)

    interleave(targets, "lifecycle", settings.repetitions, settings.warmup, lifecycle)
    interleave(targets, "exec", settings.repetitions, settings.warmup, exec_true)
    for target in targets:
        if target.name in pods:
            _remove_quietly(target, "lifecycle", pods[target.name][0].id)


# --- List* at 10 and 100 containers, memory, /metrics ---------------------------------------------


def measure_lists(targets: list[Target], settings: Settings) -> None:
    up: dict[str, list[str]] = {target.name: [] for target in targets}
    top = max(settings.levels)
    for level in sorted(settings.levels):
        wanted = math.ceil(level / settings.containers_per_pod)

        def grow(target: Target, index: int, measured: bool, wanted: int = wanted) -> None:
            if len(up[target.name]) < wanted:
                pod, _ = start_pod(target, f"list-{len(up[target.name])}", settings.session,
                                   settings.containers_per_pod)  # fmt: skip
                up[target.name].append(pod.id)

        interleave(targets, "lists", wanted, 0, grow)
        time.sleep(settings.settle_s)
        interleave(targets, "lists", settings.repetitions, 1, _list_step(level))
        for target in targets:
            if "lists" not in target.reasons:
                count = len(up[target.name]) * settings.containers_per_pod
                target.values[f"containers@{level}"] = count
        if level == top:
            for target in targets:
                if "lists" not in target.reasons:
                    read_memory(target, up[target.name])
                    scrape_metrics(target, level)
    for target in targets:
        for pod_id in up[target.name]:
            _remove_quietly(target, "lists", pod_id)


def _list_step(level: int):
    from observe_rt.cri.v1 import api_pb2

    requests = {
        "list_container_stats": ("ListContainerStats", api_pb2.ListContainerStatsRequest()),
        "list_pod_sandbox_stats": ("ListPodSandboxStats", api_pb2.ListPodSandboxStatsRequest()),
        "list_containers": ("ListContainers", api_pb2.ListContainersRequest()),
    }

    def step(target: Target, index: int, measured: bool) -> None:
        stub, deadline = target.client.runtime, getattr(target.client, "timeout", 60.0)
        for figure, (rpc, request) in requests.items():
            _, elapsed = timed(rpc, getattr(stub, rpc), request, deadline)
            if measured:
                target.record(f"{figure}@{level}", elapsed)

    return step


def read_memory(target: Target, pod_ids: list[str]) -> None:
    """The daemon's Rss/Pss, and every shim's (a process whose command line names a pod of
    ours: containerd's `-id ID`, observe-rt's `--dir .../pods/ID/shim`) per pod."""
    if target.daemon_pid is None:
        target.reasons["memory"] = "the daemon's pid is unknown (no process owns the socket)"
        return
    daemon = cri_memory.read_usage(target.daemon_pid)
    if daemon is None:
        target.reasons["memory"] = "the daemon exited"
        return
    target.values["daemon_rss_mib"] = round(daemon.rss_kib / MIB, 2)
    target.values["daemon_pss_mib"] = round(daemon.pss_kib / MIB, 2)
    ids = tuple(pod_ids)
    shims = cri_memory.find_processes(
        lambda argv: argv and argv[0] != "sleep" and any(i in arg for arg in argv for i in ids)
    )
    usages = cri_memory.usages(shims)
    if ids and usages:
        target.values["shim_processes"] = len(usages)
        target.values["shim_rss_mib_per_pod"] = round(
            sum(u.rss_kib for u in usages) / len(ids) / MIB, 2
        )
        target.values["shim_pss_mib_per_pod"] = round(
            sum(u.pss_kib for u in usages) / len(ids) / MIB, 2)  # fmt: skip


def scrape_metrics(target: Target, level: int) -> None:
    if target.metrics_url is None:
        return
    try:
        for _ in range(SCRAPES):
            elapsed, size = cri_calls.scrape(target.metrics_url)
            target.record(f"metrics_scrape@{level}", elapsed)
    except OSError as err:
        target.reasons["metrics"] = f"/metrics scrape: {err}"
        return
    target.values[f"metrics_bytes@{level}"] = size


def _remove_quietly(target: Target, phase: str, pod_id: str) -> None:
    try:
        remove_pod(target, pod_id)
    except StepError as err:
        target.reasons.setdefault(phase, f"teardown: {err}")


PHASES = {"pods": measure_pods, "parallel": measure_parallel, "lifecycle": measure_lifecycle,
          "lists": measure_lists}  # fmt: skip


def run_phases(targets: list[Target], settings: Settings, say: Callable[[str], None]) -> None:
    for name, measure in PHASES.items():
        say(f"phase {name}")
        measure(targets, settings)
