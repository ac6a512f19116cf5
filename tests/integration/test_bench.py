"""`observe-rt bench oci` on the real machine: report structure and clean-up, no timing claims."""

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
STEPS = {"create", "start", "wait", "delete"}

pytestmark = pytest.mark.root


def leftovers() -> set[str]:
    """Cgroup parents and temp dirs a bench session creates (and must remove)."""
    return set(glob.glob("/sys/fs/cgroup/*/observe-rt-bench-*")) | set(
        glob.glob("/tmp/observe-rt-bench-*")
    )


def test_bench_oci_json_reports_every_runtime():
    before = leftovers()
    out = subprocess.run(
        [OBSERVE_RT, "bench", "oci", "--runs", "3", "--json"],
        capture_output=True, text=True, timeout=240, check=False,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout)
    assert result["benchmark"] == "oci" and result["workload"] == ["/bin/true"]
    assert result["runs"] == 3 and result["warmup"] == 3 and result["baseline"] == "runc"
    assert result["command"] == "observe-rt bench oci --runs 3"
    assert list(result["runtimes"]) == ["observe-rt", "observe-rt-lib", "runc", "crun"]
    for name in ("observe-rt", "observe-rt-lib", "runc"):
        entry = result["runtimes"][name]
        assert entry["available"], entry
        assert entry["runs"] == 3 and len(entry["samples_ms"]) == 3
        assert all(sample > 0 for sample in entry["samples_ms"])
        assert set(entry["step_median_ms"]) == STEPS
        assert entry["min_ms"] <= entry["median_ms"] <= entry["p95_ms"] <= entry["max_ms"]
        assert entry["ratio_to_runc"] > 0
    crun = result["runtimes"]["crun"]  # hybrid cgroups: crun 1.8 refuses; elsewhere it runs
    assert len(crun["samples_ms"]) == 3 if crun["available"] else crun["reason"]
    assert leftovers() == before


def test_bench_oci_table():
    out = subprocess.run(
        [OBSERVE_RT, "bench", "oci", "--runs", "1", "--warmup", "0", "--runtimes", "runc,nope"],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    assert "runc" in out.stdout and "Median" in out.stdout and "delete" in out.stdout
    assert "nope: unavailable: nope not found on PATH" in out.stdout


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_interrupt_removes_containers_cgroups_and_temp_dirs(sig):
    """Ctrl-C reaches the whole foreground process group (the runtime CLI too); so do we."""
    before = leftovers()
    bench = subprocess.Popen(
        [OBSERVE_RT, "bench", "oci", "--runs", "200", "--json"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True,
    )  # fmt: skip
    deadline = time.monotonic() + 60
    while not glob.glob("/sys/fs/cgroup/*/observe-rt-bench-*/*"):  # a container exists
        assert time.monotonic() < deadline and bench.poll() is None, "no container was created"
        time.sleep(0.05)
    time.sleep(0.5)
    os.killpg(bench.pid, sig)
    _, err = bench.communicate(timeout=120)
    assert bench.returncode == 130, err
    assert "interrupted" in err
    assert leftovers() == before
