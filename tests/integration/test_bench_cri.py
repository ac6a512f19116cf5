"""`observe-rt bench cri` on the real machine with 2 pods: report structure and clean-up (no
daemon, shim, registry, mount, bridge, cgroup, shim socket, CNI cache entry or temp dir left),
also after SIGTERM with pods up. No timing claims."""

from __future__ import annotations

import pytest

from tests.support.bench import (
    NOTHING_LEFT,
    assert_no_new_shim_sockets,
    containerd_shim_sockets,
    cri_bench_processes,
    cri_leftovers,
    cri_session,
    interrupt,
    run_json,
)

pytestmark = pytest.mark.root


def test_bench_cri_json_reports_both_runtimes_and_leaves_nothing():
    sockets, stderr = containerd_shim_sockets(), []
    result = run_json("cri", "--pods", "2", timeout=600, stderr=stderr)
    assert result["benchmark"] == "cri" and result["baseline"] == "containerd"
    assert result["pods"] == 2 and result["warmup"] == 2
    assert result["command"] == "observe-rt bench cri --pods 2"
    assert result["start"] == "RunPodSandbox + CreateContainer + StartContainer"
    assert result["teardown"] == "StopPodSandbox + RemovePodSandbox"
    workload = result["workload"]
    assert workload["command"] == ["sleep", "3600"]
    assert workload["container"].startswith("127.0.0.1:")
    assert workload["sandbox_image"].endswith("/bench/pause:1")
    assert list(result["runtimes"]) == ["observe-rt", "containerd"]
    for name, entry in result["runtimes"].items():
        assert entry["available"], entry
        for phase, steps in (("start", 3), ("teardown", 2)):
            figures = entry[phase]
            assert figures["runs"] == 2 and len(figures["samples_ms"]) == 2
            assert figures["min_ms"] <= figures["median_ms"] <= figures["p95_ms"]
            assert (
                figures["p95_ms"] <= figures["max_ms"] and len(figures["step_median_ms"]) == steps
            )
        memory = entry["memory"]
        assert memory["pods_up"] == 2
        assert memory["daemon"]["rss_mib"] >= memory["daemon"]["pss_mib"] > 1
        shims = memory["shims"]
        assert shims["processes"] >= 2, name  # one shim per pod for both runtimes
        assert shims["rss_mib_per_pod"] >= shims["pss_mib_per_pod"] > 0
        assert all(value > 0 for value in entry["ratio_to_containerd"].values()), name
    containerd = result["runtimes"]["containerd"]
    assert containerd["version"].startswith("containerd ") and "runc" in containerd["version"]
    assert containerd["memory"]["sandbox_processes"]["processes"] >= 2
    assert "sandbox_processes" not in result["runtimes"]["observe-rt"]["memory"]
    assert set(containerd["ratio_to_containerd"].values()) == {1.0}
    assert cri_leftovers(*cri_session(stderr[0])) == NOTHING_LEFT
    assert_no_new_shim_sockets(sockets)


def test_sigterm_with_pods_up_cleans_up():
    before, sockets = cri_bench_processes(), containerd_shim_sockets()

    def pods_up() -> bool:  # pods of both runtimes are up
        new = [text for _, text in cri_bench_processes() - before]
        return len([text for text in new if "shim-runc-v2" in text or "pod.shim" in text]) >= 4

    err = interrupt("cri", "--pods", "20", "--json", ready=pods_up, wait=180, exit_timeout=180)
    assert cri_leftovers(*cri_session(err)) == NOTHING_LEFT
    assert_no_new_shim_sockets(sockets)


def test_bench_cri_exec_and_stats_phases_report_structure():
    sockets, stderr = containerd_shim_sockets(), []
    result = run_json("cri", "--pods", "1", "--exec", "3", "--stats-containers", "2",
                      timeout=600, stderr=stderr)  # fmt: skip
    assert result["command"] == "observe-rt bench cri --pods 1 --exec 3 --stats-containers 2"
    assert result["exec"] == {"calls": 3, "command": ["true"], "timeout_s": 10}
    assert result["stats"]["containers"] == 2 and result["stats"]["list_calls"] == 20
    for name, entry in result["runtimes"].items():
        assert entry["available"], entry
        exec_ = entry["exec"]
        assert exec_["available"] and exec_["runs"] == 3 and len(exec_["samples_ms"]) == 3, name
        assert 0 < exec_["min_ms"] <= exec_["median_ms"] <= exec_["p95_ms"] <= exec_["max_ms"]
        stats = entry["stats"]
        assert stats["available"] and stats["containers_up"] == 2, name
        assert stats["containers_reported"] >= 2, name
        assert stats["list_container_stats"]["runs"] == 20
        cpu = stats["daemon_cpu"]
        assert cpu["window_s"] >= 10 and cpu["cpu_ms"] >= 0 and cpu["cpu_ms_per_s"] >= 0
        ratios = entry["ratio_to_containerd"]
        assert {"exec_median", "list_stats_median", "daemon_cpu_per_s"} <= set(ratios)
    ort = result["runtimes"]["observe-rt"]["stats"]
    assert ort["metrics_scrape"]["scrapes"] == 10 and ort["metrics_scrape"]["bytes"] > 0
    assert ort["metrics_scrape"]["median_ms"] > 0 and ort["daemon_cpu"]["collector_ticks"] == 10
    assert "metrics_scrape" not in result["runtimes"]["containerd"]["stats"]
    assert cri_leftovers(*cri_session(stderr[0])) == NOTHING_LEFT
    assert_no_new_shim_sockets(sockets)
