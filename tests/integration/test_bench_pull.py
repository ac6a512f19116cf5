"""`observe-rt bench pull` on the real machine with a small image: report structure and clean-up
(no containerd or registry left running, no mounts, no temp dirs), also after SIGTERM. No timing
claims."""

from __future__ import annotations

import glob
import os

import pytest

from tests.support.bench import interrupt, mounts, processes, run_bench, run_json

MARK = "observe-rt-bench-pull-"
BENCH_PROGRAMS = ("containerd", "docker-registry", "ctr")

pytestmark = pytest.mark.root


def bench_processes() -> set[tuple[int, str]]:
    """containerd daemons and registries started by a bench session (their args name its dir)."""
    return processes(
        lambda argv, text: MARK in text and os.path.basename(argv[0]) in BENCH_PROGRAMS
    )


def leftovers() -> dict:
    return {
        "dirs": set(glob.glob(f"/tmp/{MARK}*")),
        "processes": bench_processes(),
        "mounts": mounts(MARK),
    }


def test_bench_pull_json_reports_both_pullers_and_leaves_nothing():
    before = leftovers()
    result = run_json("pull", "--size-mb", "5", "--runs", "1", timeout=300)
    assert result["benchmark"] == "pull" and result["baseline"] == "containerd"
    assert result["runs"] == 1 and result["warmup"] == 1
    assert result["command"] == "observe-rt bench pull --runs 1 --size-mb 5"
    assert result["reference"].startswith("127.0.0.1:") and result["reference"].endswith(
        "/bench/app:1"
    )
    image = result["image"]
    assert len(image["layers"]) == 5 and image["digest"].startswith("sha256:")
    assert 4_000_000 < image["compressed_bytes"] < 8_000_000
    assert image["uncompressed_bytes"] > image["compressed_bytes"] and image["entries"] > 100
    assert list(result["pullers"]) == ["observe-rt", "containerd"]
    for name, entry in result["pullers"].items():
        assert entry["available"], entry
        assert entry["runs"] == 1 and len(entry["samples_s"]) == 1
        assert entry["min_s"] <= entry["median_s"] <= entry["p95_s"] <= entry["max_s"]
        assert entry["median_s"] > 0 and entry["peak_rss_mib"] > 1
        assert set(entry["ratio_to_containerd"]) == {
            "wall", "peak_rss", "peak_rss_vs_daemon_plus_ctr",
        }  # fmt: skip
        assert all(value > 0 for value in entry["ratio_to_containerd"].values()), name
    containerd = result["pullers"]["containerd"]
    assert containerd["version"].startswith("containerd ")
    assert containerd["client_peak_rss_mib"] > 1
    assert containerd["combined_peak_rss_mib"] > containerd["peak_rss_mib"]
    assert result["pullers"]["containerd"]["ratio_to_containerd"]["wall"] == 1.0
    assert leftovers() == before


def test_bench_pull_table():
    out = run_bench("pull", "--size-mb", "2", "--runs", "1", "--warmup", "0", timeout=300)
    for text in ("observe-rt", "containerd", "Median", "VmHWM", "ru_maxrss", "Measured by"):
        assert text in out, text


def test_sigterm_mid_pull_cleans_up():
    before = leftovers()

    def containerd_up() -> bool:  # a containerd of this session (a pull is starting or running)
        return any("--config" in text for _, text in bench_processes() - before["processes"])

    interrupt("pull", "--size-mb", "20", "--runs", "5", "--json", ready=containerd_up, wait=120,
              exit_timeout=60, settle=0.3)  # fmt: skip
    assert leftovers() == before
