"""`observe-rt bench --endpoint` against a real observe-rt daemon, and `observe-rt bench compare`
(what `make bench` runs) on the real machine, both with tiny settings: every figure present,
the pods removed, nothing left running, also after SIGTERM. No timing claims."""

from __future__ import annotations

import subprocess

import pytest

from observe_rt.cri.v1 import api_pb2
from tests.integration.test_daemon_stats import metrics_url
from tests.support.bench import (
    NOTHING_LEFT,
    OBSERVE_RT,
    assert_no_new_shim_sockets,
    containerd_shim_sockets,
    cri_leftovers,
    cri_session,
    interrupt,
    run_json,
)

pytestmark = pytest.mark.root

TINY = ("--pods", "2", "--warmup", "1", "--parallel", "2", "--parallel-rounds", "1",
        "--repetitions", "2", "--levels", "2,4", "--containers-per-pod", "2")  # fmt: skip
TIMED = {"pod_start", "pod_teardown", "pod_start_parallel", "pod_start_parallel_each",
         "pod_teardown_parallel", "create", "start", "status", "stop", "remove", "exec_sync"} | {
    f"{call}@{level}" for level in (2, 4)
    for call in ("list_container_stats", "list_pod_sandbox_stats", "list_containers")}  # fmt: skip


def bench_pods(daemon) -> list:
    pods = daemon.runtime().ListPodSandbox(api_pb2.ListPodSandboxRequest()).items
    return [pod for pod in pods if "observe-rt-bench" in pod.labels]


def test_endpoint_benchmark_of_a_running_daemon(daemon):
    endpoint = f"unix://{daemon.socket}"
    result = run_json("--endpoint", endpoint, "--image", daemon.image,
                      "--metrics-url", metrics_url(daemon), *TINY, timeout=900)  # fmt: skip
    assert result["endpoint"] == endpoint and result["baseline"] is None
    assert result["command"].startswith(f"observe-rt bench --endpoint {endpoint} --image ")
    (name,) = result["targets"]
    entry = result["targets"][name]
    assert name == "observe-rt" and entry["unavailable"] == {}
    assert TIMED | {"metrics_scrape@4"} == set(entry["figures"])
    for key, figure in entry["figures"].items():
        assert 0 < figure["min_ms"] <= figure["median_ms"] <= figure["p95_ms"] <= figure["max_ms"]
        assert len(figure["samples_ms"]) == figure["runs"], key
    assert entry["figures"]["pod_start_parallel_each"]["runs"] == 2
    values = entry["values"]
    assert values["containers@4"] == 4 and values["metrics_bytes@4"] > 0
    assert values["daemon_rss_mib"] >= values["daemon_pss_mib"] > 1
    assert values["shim_processes"] >= 2 and values["shim_rss_mib_per_pod"] > 0
    assert bench_pods(daemon) == []


def test_sigterm_removes_the_endpoint_benchmarks_pods(daemon):
    interrupt("--endpoint", f"unix://{daemon.socket}", "--image", daemon.image, "--pods", "50",
              ready=lambda: bool(bench_pods(daemon)), wait=120, exit_timeout=120)  # fmt: skip
    assert bench_pods(daemon) == []


def test_an_endpoint_that_is_not_there_is_a_clear_error(tmp_path):
    out = subprocess.run([OBSERVE_RT, "bench", "--endpoint", f"unix://{tmp_path}/none.sock"],
                         capture_output=True, text=True, timeout=60)  # fmt: skip
    assert out.returncode != 0 and "is not a socket: is the runtime running?" in out.stderr
    assert list(tmp_path.iterdir()) == []


def test_compare_reports_both_endpoints_and_the_probes_and_leaves_nothing(tmp_path):
    sockets, stderr = containerd_shim_sockets(), []
    results = tmp_path / "results"
    probe_options = ("--probe-rounds", "1", "--syscalls", "100000", "--http-seconds", "1")
    result = run_json("compare", *TINY, *probe_options, "--results-dir", str(results),
                      timeout=900, stderr=stderr)  # fmt: skip
    assert result["benchmark"] == "compare" and result["baseline"] == "containerd"
    assert list(result["targets"]) == ["observe-rt", "containerd"]
    assert result["unavailable_endpoints"] == {}
    for name, entry in result["targets"].items():
        assert entry["unavailable"] == {}, name
        assert set(entry["figures"]) >= TIMED, name
        assert entry["values"]["shim_processes"] >= 2, name
    assert "metrics_scrape@4" in result["targets"]["observe-rt"]["figures"]
    assert set(result["ratios"]) >= TIMED | {"daemon_rss_mib", "shim_pss_mib_per_pod"}
    probes = result["probes"]
    assert probes["available"], probes
    assert probes["lost"] >= 0 and set(probes["lost_by_probe"]) <= {
        "syscalls",
        "oom",
        "tcp",
        "process",
    }
    samples = probes["samples"]
    assert len(samples["syscall_ns_on"]) == len(samples["syscall_ns_off"]) == 1
    assert samples["compile_ms"][0] > 0 and samples["events_per_s"][0] > 0
    assert samples["syscalls_counted_fraction"][0] >= 1.0  # every getppid of the workload
    assert (results / "latest.json").is_file() and len(list(results.glob("cri-*.json"))) == 1
    assert cri_leftovers(*cri_session(stderr[0])) == NOTHING_LEFT
    assert_no_new_shim_sockets(sockets)
