"""Concurrency: pods made in parallel (RunPodSandbox + CreateContainer + StartContainer each),
mixed with stats, exec, listings and removals of other pods. Every call answers, no call
stalls (a watchdog dumps the daemon's thread stacks and fails the test if one does), and
afterwards what the daemon lists agrees with what exists on disk and in the kernel.
"""

from __future__ import annotations

import json
import os
import random
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from observe_rt.client.cri_client import CriClient
from observe_rt.cri.v1 import api_pb2
from tests.support import footprint
from tests.support.bundles import cgroup_dirs
from tests.support.daemon import container_config, pod_config
from tests.support.faults import frozen
from tests.support.watchdog import Watchdog

pytestmark = pytest.mark.root

CALL_TIMEOUT = 600  # seconds; far beyond the watchdog, so a stall is reported by it first
STALL_AFTER = 300


class Storm:
    """The parallel workload; counts the calls it made."""

    def __init__(self, daemon, client: CriClient, watchdog: Watchdog) -> None:
        self.daemon, self.client, self.watchdog = daemon, client, watchdog
        self.calls = 0

    def call(self, fn, *args):
        self.calls += 1
        return self.watchdog.call(fn, *args)

    def make_pod(self, name: str) -> tuple[str, str]:
        config = pod_config(self.daemon, name=name)
        pod_id = self.call(self.client.run_pod_sandbox, config)
        container = container_config(self.daemon, "c", "sleep 3600")
        cid = self.call(self.client.create_container, pod_id, container, config)
        self.call(self.client.start_container, cid)
        return pod_id, cid

    def remove_pod(self, pod_id: str) -> None:
        self.call(self.client.stop_pod_sandbox, pod_id)
        self.call(self.client.remove_pod_sandbox, pod_id)

    def exec_in(self, cid: str) -> None:
        result = self.call(self.client.exec_sync, cid, ["echo", "alive"], 60)
        assert (result.exit_code, result.stdout) == (0, b"alive\n")

    def read_stats(self, cid: str) -> None:
        stub = self.client.runtime
        self.call(stub.ListContainerStats, api_pb2.ListContainerStatsRequest(), CALL_TIMEOUT)
        self.call(stub.ListPodSandboxStats, api_pb2.ListPodSandboxStatsRequest(), CALL_TIMEOUT)
        self.call(self.client.list_containers)
        self.call(self.client.list_pod_sandbox)
        self.call(self.client.container_status, cid)


def storm(daemon, new_pods: int, removed_pods: int, readers: int) -> tuple[set[str], int]:
    """Returns the ids of the pods that must exist afterwards, and the number of calls."""
    client = CriClient(daemon.socket, timeout=CALL_TIMEOUT)
    with client, Watchdog(daemon, STALL_AFTER) as watchdog:
        load = Storm(daemon, client, watchdog)
        with ThreadPoolExecutor(8) as pool:  # the set-up is not what is under test
            steady = list(pool.map(load.make_pod, [f"steady-{i}" for i in range(4)]))
            doomed = list(pool.map(load.make_pod, [f"doomed-{i}" for i in range(removed_pods)]))
        tasks = [(load.make_pod, f"storm-{i}") for i in range(new_pods)]
        tasks += [(load.remove_pod, pod_id) for pod_id, _ in doomed]
        tasks += [(load.exec_in, random.choice(steady)[1]) for _ in range(readers)]
        tasks += [(load.read_stats, random.choice(steady)[1]) for _ in range(readers)]
        random.shuffle(tasks)
        with ThreadPoolExecutor(len(tasks)) as pool:
            futures = [pool.submit(fn, arg) for fn, arg in tasks]
            results = [future.result() for future in futures]  # every call answered
    made = {r[0] for (fn, _), r in zip(tasks, results, strict=True) if fn == load.make_pod}
    return made | {pod_id for pod_id, _ in steady}, load.calls


def assert_consistent(daemon, expected_pods: set[str]) -> None:
    """The List answers, the files, the processes, the network and the kernel all agree."""
    with CriClient(daemon.socket, timeout=CALL_TIMEOUT) as client:
        pods = client.list_pod_sandbox()
        containers = client.list_containers()
    assert {p.id for p in pods} == expected_pods
    assert all(p.state == api_pb2.SANDBOX_READY for p in pods)
    assert {c.pod_sandbox_id for c in containers} == expected_pods
    assert all(c.state == api_pb2.CONTAINER_RUNNING for c in containers)
    on_disk = {kind: {name.removesuffix(".json") for name in os.listdir(daemon.state_dir / kind)}
               for kind in ("pods", "containers")}  # fmt: skip
    assert on_disk == {"pods": expected_pods, "containers": {c.id for c in containers}}
    assert set(os.listdir(daemon.run_dir / "netns")) == expected_pods
    assert len(daemon.shim_pids()) >= len(pods)  # a pod with its own pid namespace has two
    found = footprint.inventory(daemon)
    assert len(found["veths"]) == len(pods) and len(found["ip_allocations"]) == len(pods)
    assert footprint.bpf_entries(daemon.process.pid, ("tracked",)) == {"tracked": len(containers)}
    for container in containers:  # each one's cgroup holds its workload
        pod_cgroup = f"{daemon.cgroup_parent}/pod-{container.pod_sandbox_id[:12]}"
        procs = [os.path.join(d, container.id, "cgroup.procs") for d in cgroup_dirs(pod_cgroup)]
        assert any(Path(p).read_text().split() for p in procs if os.path.exists(p)), container.id


def teardown_all(daemon, pods: set[str]) -> None:
    with CriClient(daemon.socket, timeout=CALL_TIMEOUT) as client, ThreadPoolExecutor(16) as pool:
        list(pool.map(lambda pod_id: (client.stop_pod_sandbox(pod_id),
                                      client.remove_pod_sandbox(pod_id)), pods))  # fmt: skip
    assert footprint.leftovers(daemon) == {}


def test_fifty_pods_made_in_parallel_with_stats_exec_and_removals(daemon):
    expected, calls = storm(daemon, new_pods=50, removed_pods=10, readers=20)
    print(f"concurrency: {calls} CRI calls, 50 pods made in parallel with removals, "
          f"exec and stats")  # fmt: skip
    assert_consistent(daemon, expected)
    teardown_all(daemon, expected)


def test_watchdog_fails_a_stalled_call_with_the_daemons_stacks(daemon):
    """The watchdog itself, on a real stall: StartContainer waits on a pod shim frozen with
    SIGSTOP, so the daemon's stacks must show the thread waiting for the shim."""
    with CriClient(daemon.socket, timeout=CALL_TIMEOUT) as client:
        config = pod_config(daemon, name="stalled")
        pod_id = client.run_pod_sandbox(config)
        cid = client.create_container(pod_id, container_config(daemon, "c", "sleep 3600"), config)
        info = json.loads(client.pod_sandbox_status(pod_id, verbose=True).info["info"])
        pool = ThreadPoolExecutor(1)
        with frozen(info["shim"]["pid"]):
            watchdog = Watchdog(daemon, stall_after=2)
            with pytest.raises(pytest.fail.Exception) as failed, watchdog:
                started = pool.submit(watchdog.call, client.start_container, cid)
                while not watchdog.stalled:
                    time.sleep(0.2)
        started.result()  # answered once the shim woke up
        pool.shutdown()
        assert "calls stalled" in str(failed.value) and "start_container" in str(failed.value)
        assert "shim_client.py" in str(failed.value)  # the daemon thread stuck on the shim
        teardown_all(daemon, {pod_id})
