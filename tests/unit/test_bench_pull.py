"""`bench pull`'s pure logic: image layers from a fixture tree, containerd config, mountinfo and
/proc parsing, the timed child, the report and table rows, the option parsing (no root)."""

from __future__ import annotations

import gzip
import hashlib
import os
import sys
import tarfile
import tomllib
from pathlib import Path

import pytest

from observe_rt.bench import containerd, pull_command, pull_report
from observe_rt.bench.common import clean_env
from observe_rt.bench.image import MTIME
from observe_rt.bench.pull import (
    PullBench,
    PullError,
    PullerRun,
    PullSample,
    observe_rt_pull,
    timed_run,
)
from observe_rt.bench.pull_image import LayerPlan, budgets, build_layers, walk
from tests.support.bench import assert_rejected, parse, rendered

# --- layers from host files --------------------------------------------------------------------


@pytest.fixture
def tree(tmp_path) -> Path:
    """Two source dirs: files of known sizes, a symlink, a hardlink pair, a fifo, a setuid file."""
    root = tmp_path / "src"
    for name in ("a/lib/sub", "b/doc"):
        (root / name).mkdir(parents=True)
    for index in range(12):
        (root / "a/lib" / f"f{index:02}.bin").write_bytes(os.urandom(40_000))  # incompressible
    (root / "a/lib/sub/small.txt").write_text("hello\n" * 100)
    (root / "a/lib/sub/tool").write_bytes(b"#!/bin/sh\n")
    (root / "a/lib/sub/tool").chmod(0o4755)
    os.symlink("f00.bin", root / "a/lib/link.so")
    os.link(root / "a/lib/f01.bin", root / "a/lib/f01-hard.bin")
    os.mkfifo(root / "a/lib/pipe")
    (root / "b/doc/readme").write_text("docs\n" * 1000)
    return root


def members(path: Path) -> list[tarfile.TarInfo]:
    with tarfile.open(path, "r:gz") as tar:
        return tar.getmembers()


def test_budgets_split_the_total_exactly():
    assert budgets(100, [0.45, 0.2, 0.15, 0.12, 0.08]) == [45, 20, 15, 12, 8]
    assert sum(budgets(1_000_003, [1, 1, 1])) == 1_000_003
    assert budgets(10, [2, 1, 1]) == [6, 2, 2]  # rounding leftovers go to the first layer
    with pytest.raises(ValueError):
        budgets(10, [])
    with pytest.raises(ValueError):
        budgets(10, [1, 0])


def test_walk_is_sorted_depth_first_and_skips_special_files(tree):
    names = [os.path.relpath(entry.path, tree) for entry in walk(tree)]
    files = [f"a/lib/f{index:02}.bin" for index in range(12)]
    files.insert(1, "a/lib/f01-hard.bin")  # "-" sorts before "."
    assert names == [*files, "a/lib/link.so", "a/lib/sub/small.txt", "a/lib/sub/tool",
                     "b/doc/readme"]  # fmt: skip
    assert list(walk(tree / "missing")) == []


def test_layers_are_deterministic_and_respect_budgets(tree, tmp_path):
    plans = [LayerPlan("libs", (str(tree / "a"),), 3), LayerPlan("docs", (str(tree / "b"),), 1)]
    first = build_layers(tmp_path / "one", 400_000, plans, fallback=())
    second = build_layers(tmp_path / "two", 400_000, plans, fallback=())
    assert [layer.digest for layer in first] == [layer.digest for layer in second]
    libs, docs = first
    assert libs.name == "libs" and libs.size >= 300_000  # reached its 3/4 budget
    assert libs.size < 300_000 + 2 * 40_000  # stops right after reaching it
    assert docs.size < 100_000  # its source ran out first: it is simply smaller
    for layer in first:
        data = layer.path.read_bytes()
        assert layer.path.name == layer.digest.split(":")[1] and len(data) == layer.size
        assert layer.digest == "sha256:" + hashlib.sha256(data).hexdigest()
        tar = gzip.decompress(data)
        assert layer.diff_id == "sha256:" + hashlib.sha256(tar).hexdigest()
        assert layer.uncompressed_size == len(tar)
        assert layer.descriptor()["mediaType"].endswith("tar+gzip")
    assert not list((tmp_path / "one").glob("*.partial"))


def test_layer_entries_keep_modes_links_and_parents(tree, tmp_path):
    plans = [LayerPlan("all", (str(tree),), 1)]
    (layer,) = build_layers(tmp_path / "out", 10_000_000, plans, fallback=())
    found = {member.name: member for member in members(layer.path)}
    prefix = str(tree).lstrip("/")
    assert found[prefix.split("/")[0]].isdir()  # every parent directory comes first
    assert found[f"{prefix}/a/lib/link.so"].issym()
    assert found[f"{prefix}/a/lib/link.so"].linkname == "f00.bin"
    hard = found[f"{prefix}/a/lib/f01.bin"]
    assert hard.islnk() and hard.linkname == f"{prefix}/a/lib/f01-hard.bin"  # sorted: -hard first
    assert found[f"{prefix}/a/lib/sub/tool"].mode == 0o4755
    assert f"{prefix}/a/lib/pipe" not in found
    assert {(m.uid, m.gid, m.uname, m.mtime) for m in found.values()} == {(0, 0, "root", MTIME)}
    assert layer.entries == len(found)


def test_no_file_is_repeated_across_layers(tree, tmp_path):
    plans = [LayerPlan("one", (str(tree / "a"),), 1), LayerPlan("two", (str(tree / "a"),), 1)]
    one, two = build_layers(tmp_path / "out", 600_000, plans, fallback=(str(tree / "b"),))
    files = lambda layer: {m.name for m in members(layer.path) if not m.isdir()}  # noqa: E731
    assert files(one) and files(two)
    assert not files(one) & files(two)
    assert any(name.endswith("b/doc/readme") for name in files(one) | files(two))


# --- containerd --------------------------------------------------------------------------------


def test_config_keeps_everything_under_the_base_and_disables_cri(tmp_path):
    config = tomllib.loads(containerd.config_toml(tmp_path))
    assert config["version"] == 2
    assert config["disabled_plugins"] == ["io.containerd.grpc.v1.cri"]
    opt = config["plugins"]["io.containerd.internal.v1.opt"]["path"]
    paths = [config["root"], config["state"], config["grpc"]["address"],
             config["ttrpc"]["address"], opt]  # fmt: skip
    assert all(path.startswith(str(tmp_path) + "/") for path in paths)
    assert config["debug"]["address"] == "" and config["metrics"]["address"] == ""


def test_vm_hwm_is_read_from_status():
    status = "Name:\tcontainerd\nVmPeak:\t 1000 kB\nVmHWM:\t   48840 kB\nVmRSS:\t 40000 kB\n"
    assert containerd.parse_vm_hwm(status) == 48840
    with pytest.raises(ValueError):
        containerd.parse_vm_hwm("Name:\tx\n")
    assert containerd.parse_vm_hwm(Path("/proc/self/status").read_text()) > 0


MOUNTINFO = """\
22 1 254:0 / / rw,relatime shared:1 - ext4 /dev/vda rw
90 22 0:50 / /tmp/b/root/tmpmounts/m1 rw - overlay overlay rw,lowerdir=/x
91 22 0:51 / /tmp/b/root/with\\040space rw - tmpfs tmpfs rw
92 90 0:52 / /tmp/b/root/tmpmounts/m1/inner rw - tmpfs tmpfs rw
93 22 0:53 / /tmp/b rw - tmpfs tmpfs rw
94 22 0:54 / /tmp/bb/other rw - tmpfs tmpfs rw
"""


def test_mounts_under_a_prefix_deepest_first():
    assert containerd.mounts_under(MOUNTINFO, "/tmp/b/") == [
        "/tmp/b/root/tmpmounts/m1/inner",
        "/tmp/b/root/tmpmounts/m1",
        "/tmp/b/root/with space",
        "/tmp/b",
    ]
    assert containerd.mounts_under(MOUNTINFO, "/tmp/bb") == ["/tmp/bb/other"]
    assert containerd.mounts_under(MOUNTINFO, "/nowhere") == []
    assert containerd.unescape_mount_path("a\\011b\\134c\\012") == "a\tb\\c\n"


def test_missing_containerd_is_a_reason(monkeypatch):
    monkeypatch.setattr(containerd.shutil, "which", lambda name, path=None: None)
    assert containerd.find_containerd() == "containerd not found on PATH"
    monkeypatch.setattr(containerd.shutil, "which",
                        lambda name, path=None: None if name == "ctr" else "/bin/true")  # fmt: skip
    assert containerd.find_containerd() == "ctr not found on PATH"


def test_version_is_shortened():
    text = "containerd github.com/containerd/containerd 1.6.20~ds1 1.6.20~ds1-1+deb12u3\n"
    assert containerd._short_version(text) == "containerd 1.6.20~ds1"
    assert containerd._short_version("") == "unknown"


# --- the timed child ---------------------------------------------------------------------------


def test_timed_run_measures_the_childs_peak_rss(tmp_path):
    code = "b = bytearray(64 * 1024 * 1024); b[::4096] = b'x' * len(b[::4096])"
    wall, peak_kib = timed_run([sys.executable, "-c", code], tmp_path / "log")
    assert wall > 0 and peak_kib >= 64 * 1024


def test_timed_run_reports_the_last_line_and_timeouts(tmp_path):
    fail = "import sys; print('first'); print('the reason', file=sys.stderr); sys.exit(3)"
    with pytest.raises(PullError, match="failed: the reason"):
        timed_run([sys.executable, "-c", fail], tmp_path / "log")
    with pytest.raises(PullError, match="timed out"):
        timed_run(["sleep", "5"], tmp_path / "log", timeout=0.2)


def test_pullers_get_no_proxy_settings():
    environ = {"PATH": "/bin", "http_proxy": "http://p:3128", "HTTPS_PROXY": "x", "NO_PROXY": "y"}
    assert clean_env(environ) == {"PATH": "/bin"}


def test_observe_rt_pull_command_has_private_store_and_no_host_config():
    argv = observe_rt_pull("/s", "/h", "127.0.0.1:5000/bench/app:1")
    assert argv[-9:] == ["images", "--root", "/s", "--hosts-dir", "/h", "--policy", "", "pull",
                         "127.0.0.1:5000/bench/app:1"]  # fmt: skip


def test_measure_alternates_and_drops_a_failing_puller():
    bench = PullBench.__new__(PullBench)  # no registry, no image: only the loop
    bench.runs = [PullerRun("observe-rt"), PullerRun("containerd")]
    calls = []

    def one(run, iteration, label):
        calls.append((iteration, run.name))
        if run.name == "containerd" and iteration == 2:
            run.reason = f"{label}: boom"
            return None
        return PullSample(1.0 + iteration, 1000)

    bench._one = one
    runs = bench.measure(3, 1)
    assert calls[:4] == [(0, "observe-rt"), (0, "containerd"), (1, "containerd"), (1, "observe-rt")]
    assert calls[4:] == [(2, "observe-rt"), (2, "containerd"), (3, "observe-rt")]
    assert [s.wall_s for s in runs[0].samples] == [2.0, 3.0, 4.0]  # warm-up not kept
    assert runs[1].reason == "run 2: boom"


# --- report ------------------------------------------------------------------------------------


IMAGE = {"digest": "sha256:abc", "layers": [{}] * 5, "compressed_bytes": 102_600_000,
         "uncompressed_bytes": 292_000_000, "entries": 8161}  # fmt: skip


def sample_runs() -> list[PullerRun]:
    ort = PullerRun("observe-rt", "observe-rt 0.1.0", ["observe-rt", "images"])
    ort.samples = [PullSample(w, 50 * 1024) for w in (2.0, 4.0, 3.0)]
    ctrd = PullerRun("containerd", "containerd 1.6.20", ["ctr"])
    ctrd.samples = [PullSample(w, 100 * 1024, 40 * 1024) for w in (1.0, 2.0, 1.5)]
    return [ort, ctrd, PullerRun("crio", reason="crictl not found on PATH")]


def test_report_figures_and_ratios():
    report = pull_report.build_report(sample_runs(), "127.0.0.1:1/bench/app:1", IMAGE, 1, 3)
    assert report["benchmark"] == "pull" and report["baseline"] == "containerd"
    ort, ctrd = report["pullers"]["observe-rt"], report["pullers"]["containerd"]
    assert ort["median_s"] == 3.0 and ort["min_s"] == 2.0 and ort["max_s"] == 4.0
    assert ort["samples_s"] == [2.0, 4.0, 3.0] and ort["peak_rss_mib"] == 50.0
    assert "client_peak_rss_mib" not in ort
    assert ctrd["client_peak_rss_mib"] == 40.0 and ctrd["combined_peak_rss_mib"] == 140.0
    assert ort["ratio_to_containerd"] == {
        "wall": 2.0, "peak_rss": 0.5, "peak_rss_vs_daemon_plus_ctr": round(50 / 140, 3),
    }  # fmt: skip
    assert ctrd["ratio_to_containerd"]["wall"] == 1.0
    assert report["pullers"]["crio"] == {"available": False, "reason": "crictl not found on PATH"}


def test_table_rows_and_lines():
    report = pull_report.build_report(sample_runs(), "127.0.0.1:1/bench/app:1", IMAGE, 1, 3)
    assert pull_report.wall_rows(report) == [
        ["observe-rt", "3", "3.00", "3.90", "2.00", "4.00", "2.00×"],
        ["containerd", "3", "1.50", "1.95", "1.00", "2.00", "1.00×"],
    ]
    rows = pull_report.memory_rows(report)
    assert rows[0] == ["observe-rt", "observe-rt images pull (ru_maxrss)", "50.0", "0.50×"]
    assert rows[1] == ["containerd", "containerd daemon (VmHWM)", "100.0", "1.00×"]
    assert [row[1:3] for row in rows[2:]] == [["ctr images pull (ru_maxrss)", "40.0"],
                                               ["daemon + ctr", "140.0"]]  # fmt: skip
    lines = pull_report.summary_lines(report)
    assert lines[0] == "crio: unavailable: crictl not found on PATH"
    assert lines[1] == (
        "observe-rt vs containerd: wall 2.00×, peak memory 0.50× of the daemon, "
        "0.36× of daemon + ctr."
    )
    assert "5 gzip layers, 102.6 MB compressed, 292.0 MB unpacked" in pull_report.image_line(report)


def test_report_without_containerd_has_no_ratios():
    runs = sample_runs()
    runs[1] = PullerRun("containerd", reason="containerd not found on PATH")
    report = pull_report.build_report(runs, "ref", IMAGE, 1, 3)
    assert report["pullers"]["observe-rt"]["ratio_to_containerd"]["wall"] is None
    assert pull_report.wall_rows(report)[0][-1] == "n/a"
    assert "containerd: unavailable: containerd not found on PATH" in pull_report.summary_lines(
        report
    )


# --- command line ------------------------------------------------------------------------------


def test_pull_options_and_command_line():
    args = parse("pull")
    assert (args.runs, args.warmup, args.size_mb, args.json) == (5, 1, 100, False)
    assert args.func is pull_command.run_pull
    assert pull_command.command_line(args) == "observe-rt bench pull --runs 5"
    args = parse("pull", "--size-mb", "5", "--runs", "1", "--warmup", "0", "--json")
    assert pull_command.command_line(args) == (
        "observe-rt bench pull --runs 1 --warmup 0 --size-mb 5"
    )
    assert parse("pull", "--size-mb", "2.5").size_mb == 2.5
    assert_rejected("pull", ["--runs", "0"], ["--size-mb", "0"], ["--warmup", "-1"])


def test_render_prints_both_tables():
    report = pull_report.build_report(sample_runs(), "127.0.0.1:1/bench/app:1", IMAGE, 1, 3)
    report["command"] = "observe-rt bench pull --runs 3"
    out = rendered(pull_command.render, report, 140)
    assert "wall time" in out and "peak memory" in out and "VmHWM" in out
    assert "Measured by: observe-rt bench pull --runs 3" in out
