"""`observe-rt bench top` with 2 containers and short windows: the report's structure (top really
drew the screen, CPU figures from /proc) and nothing left behind. No timing claims."""

from __future__ import annotations

import glob
import subprocess

import pytest

from tests.support.bench import mounts, processes, run_json

MARK = "/tmp/obt-"  # the session's temp dir prefix (observe_rt/bench/top.py)

pytestmark = pytest.mark.root


def leftovers() -> dict:
    links = subprocess.run(["ip", "-o", "link", "show"], capture_output=True, text=True).stdout
    return {
        "dirs": set(glob.glob(f"{MARK}*")),
        "processes": processes(lambda argv, text: MARK in text and "bench top" not in text),
        "mounts": mounts(MARK),
        "bridges": {line.split(":")[1].strip() for line in links.splitlines()
                    if line.split(":")[1].strip().startswith("obt")},
        "cgroups": set(glob.glob("/sys/fs/cgroup/*/observe-rt-bench-top-*"))
        | set(glob.glob("/sys/fs/cgroup/observe-rt-bench-top-*")),
    }  # fmt: skip


def test_bench_top_reports_the_view_and_daemon_cpu_and_leaves_nothing():
    before = leftovers()
    result = run_json("top", "--containers", "2", "--seconds", "2", timeout=600)
    assert result["benchmark"] == "top"
    assert result["command"] == "observe-rt bench top --containers 2 --seconds 2"
    assert (result["containers"], result["refresh_s"], result["screen"]) == (2, 1.0, [50, 160])
    for name in ("top", "daemon_idle", "daemon_with_top"):
        entry = result[name]
        assert entry["window_s"] >= 2 and entry["cpu_ms"] >= 0, name
        assert entry["cpu_ms_per_s"] == round(entry["cpu_ms"] / entry["window_s"], 3)
    assert result["top_output_bytes"] > 10_000  # full-screen frames were drawn
    assert leftovers() == before
