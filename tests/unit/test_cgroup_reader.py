"""cgroup_reader on fixture trees shaped like v1, hybrid and v2 cgroupfs (no root needed).

The tree builders are imported by test_snapshot_stats.py too.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from observe_rt.collect.cgroup_reader import (
    CgroupGone,
    parse_keyed,
    parse_psi,
    read_cgroup,
    shares_from_weight,
)
from observe_rt.runtime.cgroups import cpu_weight

MiB = 1 << 20
PSI_TEXT = (
    "some avg10=1.50 avg60=0.75 avg300=0.25 total=12345\n"
    "full avg10=0.50 avg60=0.25 avg300=0.00 total=678\n"
)
V1_MEMORY_STAT = (
    "cache 4096\nrss 8192\n"
    f"total_cache {10 * MiB}\ntotal_rss {70 * MiB}\ntotal_swap {MiB}\n"
    f"total_inactive_file {6 * MiB}\ntotal_pgfault 1000\ntotal_pgmajfault 7\n"
)
V2_MEMORY_STAT = (
    f"anon {70 * MiB}\nfile {10 * MiB}\ninactive_file {6 * MiB}\npgfault 1000\npgmajfault 7\n"
)


def _write(directory: Path, files: dict[str, str]) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    for name, text in files.items():
        (directory / name).write_text(text)


def make_v1_tree(root: Path, path: str = "pod/ctr", unified: bool = True, **over) -> dict:
    """A cgroup in v1 hierarchies (plus an empty-controller cgroup2 one when `unified`)."""
    dirs = {h: root / h / path for h in ("cpu", "cpuacct", "memory", "pids")}
    values = {
        "cpuacct.usage": "5000000000",
        "cpuacct.stat": "user 300\nsystem 100\n",
        "cpu.stat": "nr_periods 40\nnr_throttled 10\nthrottled_time 2500000000\n",
        "cpu.cfs_quota_us": "50000",
        "cpu.cfs_period_us": "100000",
        "cpu.shares": "512",
        "memory.usage_in_bytes": str(80 * MiB),
        "memory.stat": V1_MEMORY_STAT,
        "memory.failcnt": "3",
        "memory.limit_in_bytes": str(128 * MiB),
        "memory.oom_control": "oom_kill_disable 0\nunder_oom 0\noom_kill 2\n",
        "pids.current": "5",
        "cgroup.procs": "101\n102\n",
        **over,
    }
    for hierarchy, prefix in (("cpu", "cpu."), ("cpuacct", "cpuacct."), ("memory", "memory.")):
        _write(dirs[hierarchy], {k: v for k, v in values.items() if k.startswith(prefix)})
    _write(dirs["pids"], {k: values[k] for k in ("pids.current", "cgroup.procs")})
    _write(dirs["pids"] / "child", {"cgroup.procs": "103\n"})
    paths = {h: str(d) for h, d in dirs.items()}
    if unified:
        u = root / "unified" / path
        _write(u, {"cpu.pressure": PSI_TEXT, "memory.pressure": PSI_TEXT, "io.pressure": PSI_TEXT})
        _write(u, {"cgroup.procs": "101\n102\n"})
        paths["unified"] = str(u)
    return paths


def make_v2_tree(root: Path, path: str = "pod/ctr", psi: bool = True, **over) -> dict:
    """A cgroup in a pure cgroup2 hierarchy with cpu, memory and pids enabled."""
    files = {
        "cpu.stat": "usage_usec 5000000\nuser_usec 3000000\nsystem_usec 1000000\n"
        "nr_periods 40\nnr_throttled 10\nthrottled_usec 2500000\n",
        "cpu.max": "50000 100000",
        "cpu.weight": str(cpu_weight(512)),
        "memory.current": str(80 * MiB),
        "memory.stat": V2_MEMORY_STAT,
        "memory.events": "low 0\nhigh 0\nmax 3\noom 2\noom_kill 2\n",
        "memory.swap.current": str(MiB),
        "memory.max": str(128 * MiB),
        "pids.current": "5",
        "cgroup.procs": "101\n102\n",
        **over,
    }
    if psi:
        files.update({f"{r}.pressure": PSI_TEXT for r in ("cpu", "memory", "io")})
    directory = root / path
    _write(directory, files)
    _write(directory / "child", {"cgroup.procs": "103\n"})
    return {"unified": str(directory)}


@pytest.mark.parametrize("kind", ["hybrid", "v2"])
def test_reads_every_part(tmp_path, kind):
    paths = make_v1_tree(tmp_path) if kind == "hybrid" else make_v2_tree(tmp_path)
    stats, errors = read_cgroup(paths, 42)
    assert errors == []
    assert stats.timestamp_ns == 42
    cpu = stats.cpu
    assert cpu.usage_ns == 5_000_000_000
    assert (cpu.user_ns, cpu.system_ns) == (3_000_000_000, 1_000_000_000)
    assert (cpu.periods, cpu.throttled_periods, cpu.throttled_ns) == (40, 10, 2_500_000_000)
    assert cpu.usage_nano_cores is None
    assert cpu.psi.some.total_us == 12345 and cpu.psi.full.avg10 == 0.5
    mem = stats.memory
    assert mem.usage_bytes == 80 * MiB
    assert mem.working_set_bytes == 74 * MiB  # usage - inactive_file
    assert (mem.rss_bytes, mem.cache_bytes, mem.swap_bytes) == (70 * MiB, 10 * MiB, MiB)
    assert (mem.page_faults, mem.major_page_faults, mem.failcnt) == (1000, 7, 3)
    assert mem.limit_bytes == 128 * MiB and mem.available_bytes == 54 * MiB
    assert mem.psi is not None and stats.io_psi.some.avg60 == 0.75
    assert stats.oom_kills == 2
    assert (stats.processes.processes, stats.processes.threads) == (3, 5)  # child cgroup too
    limits = stats.limits
    assert (limits.cpu_quota_us, limits.cpu_period_us) == (50000, 100000)
    assert limits.memory_limit_bytes == 128 * MiB
    assert abs(limits.cpu_shares - 512) <= 30  # v2 weight round trip is lossy


def test_pure_v1_has_no_psi(tmp_path):
    stats, errors = read_cgroup(make_v1_tree(tmp_path, unified=False), 1)
    assert errors == []
    assert stats.cpu.psi is None and stats.memory.psi is None and stats.io_psi is None
    assert stats.memory.working_set_bytes == 74 * MiB


def test_working_set_floored_and_unlimited(tmp_path):
    paths = make_v1_tree(
        tmp_path,
        **{
            "memory.usage_in_bytes": str(4 * MiB),  # below inactive_file
            "memory.limit_in_bytes": "9223372036854771712",
            "cpu.cfs_quota_us": "-1",
        },
    )
    stats, _ = read_cgroup(paths, 1)
    assert stats.memory.working_set_bytes == 0
    assert stats.memory.limit_bytes is None and stats.memory.available_bytes == 0
    assert stats.limits.cpu_quota_us is None and stats.limits.memory_limit_bytes is None


def test_v2_without_swap_or_psi(tmp_path):
    paths = make_v2_tree(tmp_path, psi=False, **{"memory.max": "max", "cpu.max": "max 100000"})
    os.unlink(os.path.join(paths["unified"], "memory.swap.current"))
    stats, errors = read_cgroup(paths, 1)
    assert errors == []
    assert stats.memory.swap_bytes == 0 and stats.memory.psi is None and stats.cpu.psi is None
    assert stats.memory.limit_bytes is None and stats.limits.cpu_quota_us is None


def test_threads_counted_without_pids_controller(tmp_path):
    paths = make_v2_tree(tmp_path)
    os.unlink(os.path.join(paths["unified"], "pids.current"))
    Path(paths["unified"], "cgroup.threads").write_text("101\n102\n104\n")
    stats, _ = read_cgroup(paths, 1)
    assert stats.processes.threads == 3


def test_unreadable_file_leaves_that_part_out(tmp_path):
    paths = make_v1_tree(tmp_path)
    os.unlink(os.path.join(paths["memory"], "memory.stat"))
    Path(paths["cpuacct"], "cpuacct.usage").write_text("garbage")
    stats, errors = read_cgroup(paths, 1)
    assert stats.memory is None and stats.cpu is None and stats.oom_kills is None
    assert stats.processes is not None
    assert len(errors) == 2 and errors[0].startswith("cpu:") and errors[1].startswith("memory:")


def test_vanished_cgroup_raises_cgroup_gone(tmp_path):
    paths = make_v2_tree(tmp_path)
    shutil.rmtree(paths["unified"])
    with pytest.raises(CgroupGone):
        read_cgroup(paths, 1)
    with pytest.raises(CgroupGone):
        read_cgroup({}, 1)


def test_parsers():
    assert parse_keyed("a 1\nb -2\nc x\n\n") == {"a": 1, "b": -2}
    psi = parse_psi("some avg10=0.00 avg60=0.00 avg300=0.00 total=17736\n")
    assert psi.some.total_us == 17736 and psi.full is None
    assert parse_psi("junk\n").some is None
    for shares in (2, 1024, 262144):
        assert abs(shares_from_weight(cpu_weight(shares)) - shares) <= 27
