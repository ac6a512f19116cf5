"""The benchmark's pure logic (percentiles, ratios, report, table rows) and its driver loop,
run against a fake runc-compatible runtime written in sh (no root, no containers)."""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

import pytest

from observe_rt import cli
from observe_rt.bench import bundle, command, common, report, runtimes, stats
from observe_rt.bench.oci import OciBench, RuntimeRun, slugs
from observe_rt.bench.runtimes import STEPS, RuntimeCli
from tests.support.bench import assert_rejected, parse, rendered

# --- stats -------------------------------------------------------------------------------------


def test_percentile_interpolates_between_ranks():
    samples = [5.0, 1.0, 4.0, 2.0, 3.0]
    assert stats.percentile(samples, 50) == 3.0
    assert stats.percentile(samples, 0) == 1.0
    assert stats.percentile(samples, 100) == 5.0
    assert stats.percentile(samples, 95) == pytest.approx(4.8)  # rank 3.8
    assert stats.percentile([1.0, 2.0], 50) == 1.5
    assert stats.percentile([7.0], 95) == 7.0


def test_percentile_matches_statistics_inclusive_quantiles():
    samples = [float(x * x % 97) for x in range(1, 51)]
    cuts = statistics.quantiles(samples, n=20, method="inclusive")
    assert stats.percentile(samples, 95) == pytest.approx(cuts[18])
    assert stats.percentile(samples, 50) == pytest.approx(statistics.median(samples))


@pytest.mark.parametrize("samples, q", [([], 50), ([1.0], -1), ([1.0], 101)])
def test_percentile_rejects_bad_input(samples, q):
    with pytest.raises(ValueError):
        stats.percentile(samples, q)


def test_summarize():
    summary = stats.summarize([10.0, 30.0, 20.0, 40.0])
    assert summary == stats.Summary(runs=4, median=25.0, p95=pytest.approx(38.5), minimum=10.0,
                                    maximum=40.0)  # fmt: skip


def test_ratio():
    assert stats.ratio(50.0, 25.0) == 2.0
    assert stats.ratio(50.0, None) is None
    assert stats.ratio(50.0, 0.0) is None


# --- report ------------------------------------------------------------------------------------


def _run(name: str, totals: list[float], reason: str | None = None) -> RuntimeRun:
    cli_ = RuntimeCli(name, (f"/usr/bin/{name}",), Path("/state"), f"{name} 1.0")
    # Split each total over the steps as 40/30/10/20 percent.
    samples = [dict(zip(STEPS, (t * 0.4, t * 0.3, t * 0.1, t * 0.2), strict=True)) for t in totals]
    return RuntimeRun(name, name, cli_, samples, reason)


def _report() -> dict:
    runs = [
        _run("observe-rt", [100.0, 120.0, 110.0]),
        _run("runc", [20.0, 22.0, 24.0]),
        RuntimeRun("crun", "crun", reason="warm-up 1: create failed: hybrid"),
    ]
    return report.build_report(runs, ["/bin/true"], warmup=3, measured=3)


def test_report_figures_and_ratio_to_runc():
    result = _report()
    ort, runc = result["runtimes"]["observe-rt"], result["runtimes"]["runc"]
    assert ort["median_ms"] == 110.0 and ort["min_ms"] == 100.0 and ort["max_ms"] == 120.0
    assert ort["p95_ms"] == pytest.approx(119.0)
    assert ort["ratio_to_runc"] == 5.0 and runc["ratio_to_runc"] == 1.0
    assert ort["step_median_ms"] == {"create": 44.0, "start": 33.0, "wait": 11.0, "delete": 22.0}
    assert ort["samples_ms"] == [100.0, 120.0, 110.0]
    assert ort["version"] == "observe-rt 1.0" and ort["command"] == ["/usr/bin/observe-rt"]
    assert result["runtimes"]["crun"] == {
        "available": False, "reason": "warm-up 1: create failed: hybrid",
    }  # fmt: skip
    assert result["runs"] == 3 and result["warmup"] == 3 and result["baseline"] == "runc"
    json.dumps(result)  # JSON-ready as it is


def test_no_ratio_without_runc():
    result = report.build_report([_run("observe-rt", [10.0])], ["/bin/true"], 0, 1)
    assert result["runtimes"]["observe-rt"]["ratio_to_runc"] is None
    assert report.table_rows(result)[0][6] == "n/a"


def test_failed_runtime_keeps_no_samples():
    run = _run("runc", [20.0], reason="run 2: start failed: boom")
    assert report.runtime_entry(run) == {"available": False, "reason": "run 2: start failed: boom"}


def test_table_rows_and_unavailable_lines():
    result = _report()
    rows = report.table_rows(result)
    assert rows == [
        ["observe-rt", "3", "110.0", "119.0", "100.0", "120.0", "5.00×"],
        ["runc", "3", "22.0", "23.8", "20.0", "24.0", "1.00×"],
    ]
    assert all(len(row) == len(report.COLUMNS) for row in rows)
    assert report.step_rows(result) == [
        ["observe-rt", "44.0", "33.0", "11.0", "22.0"],
        ["runc", "8.8", "6.6", "2.2", "4.4"],
    ]
    assert report.unavailable_lines(result) == [
        "crun: unavailable: warm-up 1: create failed: hybrid"
    ]


# --- command line ------------------------------------------------------------------------------


def test_bench_without_subcommand_lists_benchmarks(capsys):
    assert cli.main(["bench"]) == 0
    out = capsys.readouterr().out
    assert "oci" in out and "runc" in out and "pull" in out and "cri " in out


def test_bench_oci_options():
    args = parse("oci", "--runs", "7", "--runtimes", "runc,runc")
    assert args.func is command.run_oci
    assert (args.runs, args.warmup, args.runtimes, args.json) == (7, 3, ["runc"], False)
    defaults = parse("oci")
    assert defaults.runs == 50
    assert defaults.runtimes == ["observe-rt", "observe-rt-lib", "runc", "crun"]
    assert command.command_line(defaults) == "observe-rt bench oci --runs 50"
    assert command.command_line(parse("oci", "--warmup", "0", "--runtimes", "crun,runc")) == (
        "observe-rt bench oci --runs 50 --warmup 0 --runtimes crun,runc"
    )
    assert_rejected("oci", ["--runs", "0"], ["--warmup", "-1"], ["--runtimes", ","])


def test_render_prints_both_tables_and_the_notes():
    result = _report()
    result["command"] = "observe-rt bench oci --runs 3"
    out = rendered(command.render, result, 120)
    assert "/bin/true: create → start → wait → delete, ms" in out and "median per step" in out
    assert "crun: unavailable: warm-up 1: create failed: hybrid" in out
    assert "Measured by: observe-rt bench oci --runs 3" in out


def test_rotation():
    assert common.rotated(["a", "b"], 0) == ["a", "b"]
    assert common.rotated(["a", "b"], 3) == ["b", "a"]
    assert common.rotated([], 1) == []


def test_registration_does_not_import_rich_or_the_benchmark():
    # Every `observe-rt oci` step the benchmark times pays for what registration imports.
    code = (
        "import sys; from observe_rt.bench import command; "
        "print(any(m.startswith(('rich', 'observe_rt.bench.oci')) for m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.stdout.strip() == "False", out.stderr


# --- runtimes and bundles ----------------------------------------------------------------------


def test_slugs_are_safe_and_distinct():
    assert slugs(["observe-rt", "/opt/x/runc", "runc", "a b/"]) == [
        "observe-rt", "runc", "runc-2", "a_b",
    ]  # fmt: skip


def test_find_runtime(tmp_path):
    assert runtimes.find_runtime("no-such-runtime-xyz", tmp_path) == (
        "no-such-runtime-xyz not found on PATH"
    )
    ours = runtimes.find_runtime("observe-rt", tmp_path)
    assert isinstance(ours, RuntimeCli) and ours.argv[-1] == "oci"
    assert ours.command("state", "x")[-4:] == ["--root", str(tmp_path), "state", "x"]


def test_last_line():
    assert runtimes.last_line("\nfirst\n  last error  \n\n") == "last error"
    assert runtimes.last_line("") == ""


def test_wait_exit_reaps_a_child():
    child = subprocess.Popen(["sleep", "0.05"])
    runtimes.wait_exit(child.pid, timeout=5)
    with pytest.raises(ChildProcessError):
        os.waitpid(child.pid, os.WNOHANG)
    child.returncode = 0  # reaped by wait_exit; keep Popen from trying


def test_wait_exit_times_out():
    child = subprocess.Popen(["sleep", "5"])
    try:
        with pytest.raises(runtimes.LifecycleError, match="still running"):
            runtimes.wait_exit(child.pid, timeout=0.05)
    finally:
        child.kill()
        child.wait()


def test_write_bench_bundle(tmp_path):
    rootfs = tmp_path / "rootfs"
    rootfs.mkdir()
    path = bundle.write_bench_bundle(tmp_path / "b", rootfs, ["/bin/true"], "/p/c1")
    spec = json.loads((path / "config.json").read_text())
    assert spec["process"]["args"] == ["/bin/true"]
    assert spec["root"]["path"] == str(rootfs.resolve())
    assert spec["linux"]["cgroupsPath"] == "/p/c1"
    assert spec["ociVersion"] == bundle.BENCH_OCI_VERSION


def test_remove_cgroup_tree_on_a_fixture_tree(tmp_path):
    for hierarchy in ("memory", "pids"):
        (tmp_path / hierarchy / "bench-1" / "c1").mkdir(parents=True)
    (tmp_path / "memory" / "other").mkdir()
    assert len(bundle.cgroup_dirs("/bench-1", str(tmp_path))) == 2
    bundle.remove_cgroup_tree("/bench-1", str(tmp_path))
    assert bundle.cgroup_dirs("/bench-1", str(tmp_path)) == []
    assert (tmp_path / "memory" / "other").is_dir()


# --- the driver loop, against a fake runtime ---------------------------------------------------

FAKE_RUNTIME = """#!/bin/sh
# A runc-compatible stand-in: --root DIR COMMAND ARGS...; logs "name command id" to $FAKE_LOG.
[ "$1" = --version ] && { echo "fake 0.1"; exit 0; }
command=$3; shift 3
for last; do :; done
echo "$(basename "$0") $command $last" >> "$FAKE_LOG"
[ "$command" = "$FAIL_COMMAND" ] && [ "$(basename "$0")" = "$FAIL_RUNTIME" ] && {
    echo "first line" >&2; echo "boom" >&2; exit 1; }
if [ "$command" = create ]; then
    sleep 0.01 & echo $! > "$4"   # create --bundle B --pid-file P ID: the "workload"
fi
exit 0
"""


@pytest.fixture
def fake_runtimes(tmp_path, monkeypatch):
    paths = []
    for name in ("fake-a", "fake-b"):
        path = tmp_path / "bin" / name
        path.parent.mkdir(exist_ok=True)
        path.write_text(FAKE_RUNTIME)
        path.chmod(0o755)
        paths.append(str(path))
    monkeypatch.setenv("FAKE_LOG", str(tmp_path / "log"))
    return paths, tmp_path / "log"


def test_measure_round_robin_with_rotation(fake_runtimes):
    paths, log = fake_runtimes
    with OciBench(paths) as bench:
        tmp = bench.tmp
        runs = bench.measure(runs=2, warmup=1)
    assert [len(run.samples) for run in runs] == [2, 2]
    assert all(v > 0 for run in runs for sample in run.samples for v in sample.values())
    creates = [line.split()[2] for line in log.read_text().splitlines() if " create " in line]
    assert creates == ["fake-a-0", "fake-b-0", "fake-b-1", "fake-a-1", "fake-a-2", "fake-b-2"]
    steps = [line.split()[1] for line in log.read_text().splitlines()[:4]]
    assert steps == ["create", "start", "delete", "create"]
    assert not tmp.exists()


def test_a_failing_runtime_is_reported_and_the_rest_measured(fake_runtimes, monkeypatch):
    paths, log = fake_runtimes
    monkeypatch.setenv("FAIL_RUNTIME", "fake-b")
    monkeypatch.setenv("FAIL_COMMAND", "start")
    with OciBench([*paths, "no-such-runtime-xyz"]) as bench:
        runs = bench.measure(runs=3, warmup=1)
    assert len(runs[0].samples) == 3
    assert runs[1].reason == "warm-up 1: start failed: boom" and not runs[1].samples
    assert runs[2].reason == "no-such-runtime-xyz not found on PATH"
    # The failed container was force-deleted, and fake-b was not tried again.
    assert "fake-b delete fake-b-0" in log.read_text()
    assert "fake-b create fake-b-1" not in log.read_text()
