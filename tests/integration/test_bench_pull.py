"""`observe-rt bench pull` on the real machine with a small image: report structure and clean-up
(no containerd or registry left running, no mounts, no temp dirs), also after SIGTERM. No timing
claims."""

from __future__ import annotations

import glob
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

OBSERVE_RT = str(Path(sys.executable).with_name("observe-rt"))
MARK = "observe-rt-bench-pull-"

pytestmark = pytest.mark.root


def bench_processes() -> set[tuple[int, str]]:
    """containerd daemons and registries started by a bench session (their args name its dir)."""
    found = set()
    for path in glob.glob("/proc/[0-9]*/cmdline"):
        try:
            argv = Path(path).read_bytes().split(b"\0")
        except OSError:
            continue
        text = " ".join(arg.decode(errors="replace") for arg in argv)
        if MARK in text and os.path.basename(argv[0].decode(errors="replace")) in (
            "containerd", "docker-registry", "ctr",
        ):  # fmt: skip
            found.add((int(path.split("/")[2]), text))
    return found


def bench_mounts() -> list[str]:
    return [line for line in Path("/proc/self/mountinfo").read_text().splitlines() if MARK in line]


def leftovers() -> dict:
    return {
        "dirs": set(glob.glob(f"/tmp/{MARK}*")),
        "processes": bench_processes(),
        "mounts": bench_mounts(),
    }


def test_bench_pull_json_reports_both_pullers_and_leaves_nothing():
    before = leftovers()
    out = subprocess.run(
        [OBSERVE_RT, "bench", "pull", "--size-mb", "5", "--runs", "1", "--json"],
        capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout)
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
    out = subprocess.run(
        [OBSERVE_RT, "bench", "pull", "--size-mb", "2", "--runs", "1", "--warmup", "0"],
        capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    for text in ("observe-rt", "containerd", "Median", "VmHWM", "ru_maxrss", "Measured by"):
        assert text in out.stdout, text


def test_sigterm_mid_pull_cleans_up():
    before = leftovers()
    bench = subprocess.Popen(
        [OBSERVE_RT, "bench", "pull", "--size-mb", "20", "--runs", "5", "--json"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and bench.poll() is None:
            daemons = [p for p in bench_processes() - before["processes"] if "--config" in p[1]]
            if daemons:  # a containerd of this session is up (a pull is starting or running)
                break
            time.sleep(0.05)
        else:
            pytest.fail(f"no containerd started by the bench: {bench.communicate()[1]}")
        time.sleep(0.3)
        bench.send_signal(signal.SIGTERM)
        _, err = bench.communicate(timeout=60)
    finally:
        if bench.poll() is None:
            bench.kill()
            bench.wait()
    assert bench.returncode == 130, err
    assert "interrupted" in err
    assert leftovers() == before
