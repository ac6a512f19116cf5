"""`observe-rt bench oci` on the real machine: report structure and clean-up, no timing claims."""

from __future__ import annotations

import glob
import signal

import pytest

from tests.support.bench import interrupt, run_bench, run_json

STEPS = {"create", "start", "wait", "delete"}

pytestmark = pytest.mark.root


def leftovers() -> set[str]:
    """Cgroup parents and temp dirs a bench session creates (and must remove)."""
    return set(glob.glob("/sys/fs/cgroup/*/observe-rt-bench-*")) | set(
        glob.glob("/tmp/observe-rt-bench-*")
    )


def test_bench_oci_json_reports_every_runtime():
    before = leftovers()
    result = run_json("oci", "--runs", "3", timeout=240)
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
    out = run_bench("oci", "--runs", "1", "--warmup", "0", "--runtimes", "runc,nope", timeout=120)
    assert "runc" in out and "Median" in out and "delete" in out
    assert "nope: unavailable: nope not found on PATH" in out


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_interrupt_removes_containers_cgroups_and_temp_dirs(sig):
    """Ctrl-C reaches the whole foreground process group (the runtime CLI too); so do we."""
    before = leftovers()
    interrupt(
        "oci", "--runs", "200", "--json",
        ready=lambda: bool(glob.glob("/sys/fs/cgroup/*/observe-rt-bench-*/*")),  # a container
        wait=60, exit_timeout=120, sig=sig, settle=0.5, group=True,
    )  # fmt: skip
    assert leftovers() == before
