"""Cgroup layer on fixture trees: mountinfo text + tmp dirs that stand in for cgroupfs."""

from __future__ import annotations

import errno
import json
import os

import pytest

from observe_rt.runtime.cgroups import (
    CgroupError,
    CgroupLayout,
    CgroupManager,
    cpu_weight,
    detect_layout,
    normalize_cgroups_path,
    plan,
)
from observe_rt.runtime.cgroups import manager as manager_mod

V1_SEPARATE = ["cpu", "cpuacct", "cpuset", "memory", "devices", "freezer", "blkio", "pids"]
V2_CONTROLLERS = "cpuset cpu io memory hugetlb pids rdma misc"


def _line(n: int, mount_point: str, fstype: str, options: str) -> str:
    return f"{n} 20 0:{n} / {mount_point} rw,nosuid shared:{n} - {fstype} {fstype} rw,{options}"


def _host(tmp_path, mode: str, comount: bool = False, swap: bool = True) -> CgroupLayout:
    """Write a mountinfo and the mount points for `mode`; return the detected layout."""
    lines = ["19 1 8:1 / / rw,relatime shared:1 - ext4 /dev/vda1 rw"]
    lines.append("20 19 0:19 / /sys/fs/cgroup ro shared:2 - tmpfs tmpfs ro,mode=755")
    mounts: dict[str, str] = {}
    if mode in ("v1", "hybrid"):
        names = [n for n in V1_SEPARATE if not (comount and n in ("cpu", "cpuacct"))]
        mounts = {f"/sys/fs/cgroup/{n}": n for n in names}
        if comount:
            mounts["/sys/fs/cgroup/cpu,cpuacct"] = "cpu,cpuacct"
        mounts["/sys/fs/cgroup/systemd"] = "xattr,name=systemd"
        lines += [
            _line(30 + i, mp, "cgroup", o) for i, (mp, o) in enumerate(sorted(mounts.items()))
        ]
    if mode in ("hybrid", "v2"):
        mp = "/sys/fs/cgroup/unified" if mode == "hybrid" else "/sys/fs/cgroup"
        lines.append(_line(50, mp, "cgroup2", "nsdelegate"))
        mounts[mp] = mp
    for mp in mounts:
        os.makedirs(tmp_path / mp.lstrip("/"), exist_ok=True)
    cg = tmp_path / "sys/fs/cgroup"
    if mode == "v2":
        (cg / "cgroup.controllers").write_text(V2_CONTROLLERS + "\n")
    if mode == "hybrid":
        (cg / "unified/cgroup.controllers").write_text("\n")
    if mode in ("v1", "hybrid"):
        (cg / "cpuset/cpuset.cpus").write_text("0-3\n")
        (cg / "cpuset/cpuset.mems").write_text("0\n")
        if swap:
            (cg / "memory/memory.memsw.limit_in_bytes").write_text("9223372036854771712\n")
    (tmp_path / "mountinfo").write_text("\n".join(lines) + "\n")
    return detect_layout(str(tmp_path / "mountinfo"), root=str(tmp_path))


@pytest.fixture(autouse=True)
def cgroupfs_rmdir(monkeypatch):
    """cgroupfs removes a directory that holds only interface files; emulate that."""

    def rmdir(path):
        if os.path.isdir(path):
            for name in os.listdir(path):
                if os.path.isfile(os.path.join(path, name)):
                    os.unlink(os.path.join(path, name))
        os.rmdir(path)

    monkeypatch.setattr(manager_mod, "_rmdir", rmdir)


def _rd(path) -> str:
    with open(path) as f:
        return f.read()


def _wr(path, text: str) -> None:
    with open(path, "w") as f:
        f.write(text)


def _writes(p) -> dict[str, str]:
    """file name (hierarchy/file for v1) -> value."""
    return {f"{w.hierarchy}/{os.path.basename(w.path)}": w.value for w in p.writes}


# -- detect_layout ---------------------------------------------------------------------------


def test_detect_v1_separate_mounts(tmp_path):
    layout = _host(tmp_path, "v1")
    cg = str(tmp_path / "sys/fs/cgroup")
    assert layout.mode == "v1"
    assert layout.unified is None
    assert layout.v1_mounts["cpu"] == f"{cg}/cpu"
    assert layout.v1_mounts["cpuacct"] == f"{cg}/cpuacct"
    assert layout.v1_mounts["name=systemd"] == f"{cg}/systemd"
    assert set(layout.v1_mounts) == set(V1_SEPARATE) | {"name=systemd"}
    assert layout.v1_swap_accounting


def test_detect_v1_comounted_cpu_cpuacct(tmp_path):
    layout = _host(tmp_path, "v1", comount=True)
    cg = str(tmp_path / "sys/fs/cgroup")
    assert layout.v1_mounts["cpu"] == layout.v1_mounts["cpuacct"] == f"{cg}/cpu,cpuacct"


def test_detect_hybrid(tmp_path):
    layout = _host(tmp_path, "hybrid", swap=False)
    assert layout.mode == "hybrid"
    assert layout.unified == str(tmp_path / "sys/fs/cgroup/unified")
    assert layout.v2_controllers == frozenset()
    assert not layout.v1_swap_accounting
    assert layout.hierarchy_roots()["unified"] == layout.unified


def test_detect_v2(tmp_path):
    layout = _host(tmp_path, "v2")
    assert layout.mode == "v2"
    assert layout.v1_mounts == {}
    assert layout.unified == str(tmp_path / "sys/fs/cgroup")
    assert layout.v2_controllers == frozenset(V2_CONTROLLERS.split())


def test_detect_unescapes_and_needs_a_cgroup_mount(tmp_path):
    info = tmp_path / "mountinfo"
    info.write_text(r"50 20 0:50 / /my\040cg rw shared:5 - cgroup2 cgroup2 rw" + "\n")
    assert detect_layout(str(info)).unified == "/my cg"
    info.write_text("19 1 8:1 / / rw - ext4 /dev/vda1 rw\n")
    with pytest.raises(RuntimeError, match="no cgroup"):
        detect_layout(str(info))


# -- cgroups path ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ("/kubepods/burstable/pod1/abc", "/kubepods/burstable/pod1/abc"),
        ("kubepods//pod1/./abc/", "/kubepods/pod1/abc"),
        ("", "/observe-rt/ctr1"),
        (None, "/observe-rt/ctr1"),
    ],
)
def test_cgroups_path(given, expected):
    assert normalize_cgroups_path(given, "ctr1") == expected


@pytest.mark.parametrize(
    ("given", "message"),
    [
        ("/a/../../etc", "must not contain '..'"),
        ("/", "below the root"),
        ("kubepods.slice:cri-o:abc", "systemd cgroup driver"),
    ],
)
def test_cgroups_path_rejected(given, message):
    with pytest.raises(ValueError, match=message):
        normalize_cgroups_path(given, "ctr1")


def test_dirs_sit_under_every_hierarchy_root(tmp_path):
    layout = _host(tmp_path, "hybrid")
    p = plan(None, "pod/ctr", layout)
    assert set(p.dirs) == set(V1_SEPARATE) | {"name=systemd", "unified"}
    for hierarchy, root in layout.hierarchy_roots().items():
        assert p.dirs[hierarchy] == f"{root}/pod/ctr"
    assert p.writes == () and p.enable == ()


# -- plan: v1 --------------------------------------------------------------------------------

RESOURCES = {
    "memory": {"limit": 64 << 20, "reservation": 32 << 20, "swap": 96 << 20},
    "cpu": {"shares": 512, "quota": 20000, "period": 100000, "cpus": "0-1", "mems": "0"},
    "pids": {"limit": 32},
    "devices": [{"allow": False, "access": "rwm"}],
}


def test_plan_v1_files(tmp_path):
    p = plan(RESOURCES, "/x/c", _host(tmp_path, "hybrid"))
    devices = [(os.path.basename(w.path), w.value) for w in p.writes if w.hierarchy == "devices"]
    assert devices[:2] == [("devices.deny", "a *:* rwm"), ("devices.allow", "c *:* m")]
    assert all(w.after_init for w in p.writes if w.hierarchy == "devices")
    assert {k: v for k, v in _writes(p).items() if not k.startswith("devices/")} == {
        "memory/memory.limit_in_bytes": str(64 << 20),
        "memory/memory.soft_limit_in_bytes": str(32 << 20),
        "memory/memory.memsw.limit_in_bytes": str(96 << 20),
        "cpu/cpu.shares": "512",
        "cpu/cpu.cfs_period_us": "100000",
        "cpu/cpu.cfs_quota_us": "20000",
        "cpuset/cpuset.cpus": "0-1",
        "cpuset/cpuset.mems": "0",
        "pids/pids.max": "32",
    }
    names = [os.path.basename(w.path) for w in p.writes]
    assert names.index("memory.limit_in_bytes") < names.index("memory.memsw.limit_in_bytes")
    assert names.index("cpu.cfs_period_us") < names.index("cpu.cfs_quota_us")
    assert p.cpuset_inherit and p.warnings == ()


def test_plan_v1_without_swap_accounting_warns(tmp_path):
    p = plan(RESOURCES, "/x/c", _host(tmp_path, "v1", swap=False))
    assert "memory/memory.memsw.limit_in_bytes" not in _writes(p)
    assert any("memory.swap: swap accounting is off" in w for w in p.warnings)


def test_plan_v1_unlimited_and_pids_max(tmp_path):
    layout = _host(tmp_path, "v1")
    p = plan({"memory": {"limit": -1}, "cpu": {"quota": -1}, "pids": {"limit": 0}}, "/c", layout)
    w = _writes(p)
    assert w["memory/memory.limit_in_bytes"] == "-1"
    assert w["memory/memory.memsw.limit_in_bytes"] == "-1"
    assert w["cpu/cpu.cfs_quota_us"] == "-1"
    assert w["pids/pids.max"] == "max"
    assert _writes(plan({"pids": {"limit": -1}}, "/c", layout))["pids/pids.max"] == "max"


def test_plan_comounted_cpu_writes_shared_dir(tmp_path):
    layout = _host(tmp_path, "v1", comount=True)
    p = plan({"cpu": {"shares": 100}}, "/c", layout)
    assert p.writes[0].path == os.path.join(layout.v1_mounts["cpu"], "c", "cpu.shares")


def test_plan_unified_on_v1_is_an_error(tmp_path):
    with pytest.raises(ValueError, match=r"linux.resources.unified: .*cgroup v1 \(hybrid"):
        plan({"unified": {"memory.high": "1000"}}, "/c", _host(tmp_path, "hybrid"))


def test_plan_missing_v1_hierarchy(tmp_path):
    layout = _host(tmp_path, "v1")
    mounts = {k: v for k, v in layout.v1_mounts.items() if k != "pids"}
    layout = CgroupLayout(mode="v1", v1_mounts=mounts)
    with pytest.raises(ValueError, match="linux.resources.pids.limit: needs the cgroup v1 'pids'"):
        plan({"pids": {"limit": 5}}, "/c", layout)


# -- plan: v2 --------------------------------------------------------------------------------


def test_plan_v2_files(tmp_path):
    p = plan(RESOURCES, "/x/c", _host(tmp_path, "v2"))
    assert _writes(p) == {
        "unified/memory.swap.max": str(32 << 20),  # memory+swap minus memory
        "unified/memory.max": str(64 << 20),
        "unified/memory.low": str(32 << 20),
        "unified/cpu.weight": str(cpu_weight(512)),
        "unified/cpu.max": "20000 100000",
        "unified/cpuset.cpus": "0-1",
        "unified/cpuset.mems": "0",
        "unified/pids.max": "32",
    }
    assert not p.cpuset_inherit


def test_plan_v2_enables_controllers_root_down(tmp_path):
    layout = _host(tmp_path, "v2")
    p = plan({"pids": {"limit": 3}}, "/a/b/c", layout)
    root = layout.unified
    assert [w.path for w in p.enable] == [
        f"{root}/cgroup.subtree_control",
        f"{root}/a/cgroup.subtree_control",
        f"{root}/a/b/cgroup.subtree_control",
    ]
    assert {w.value for w in p.enable} == {"+cpu +cpuset +io +memory +pids"}


@pytest.mark.parametrize(("shares", "weight"), [(2, 1), (1024, 39), (262144, 10000), (1, 1)])
def test_cpu_weight(shares, weight):
    assert cpu_weight(shares) == weight


@pytest.mark.parametrize(
    ("memory", "swap_max"),
    [
        ({"limit": 100, "swap": 300}, "200"),
        ({"limit": 100, "swap": 100}, "0"),
        ({"limit": 100, "swap": -1}, "max"),
        ({"limit": -1}, "max"),
        ({"limit": -1, "swap": 500}, "500"),
        ({"limit": 100}, None),
    ],
)
def test_v2_swap_conversion(tmp_path, memory, swap_max):
    p = plan({"memory": memory}, "/c", _host(tmp_path, "v2"))
    swaps = [w for w in p.writes if w.path.endswith("memory.swap.max")]
    assert [w.value for w in swaps] == ([swap_max] if swap_max else [])
    if swaps:
        assert swaps[0].optional == (swap_max in ("max", "0"))


@pytest.mark.parametrize(
    ("cpu", "value"),
    [
        ({"quota": 50000, "period": 100000}, "50000 100000"),
        ({"quota": -1, "period": 100000}, "max 100000"),
        ({"period": 200000}, "max 200000"),
        ({"quota": 30000}, "30000"),
    ],
)
def test_v2_cpu_max(tmp_path, cpu, value):
    assert _writes(plan({"cpu": cpu}, "/c", _host(tmp_path, "v2")))["unified/cpu.max"] == value


def test_v2_unified_keys(tmp_path):
    layout = _host(tmp_path, "v2")
    res = {"memory": {"limit": 100}, "unified": {"memory.max": "200", "hugetlb.2MB.max": "0"}}
    p = plan(res, "/c", layout)
    # unified entries come last, so they override the converted value
    assert [os.path.basename(w.path) for w in p.writes][-2:] == ["memory.max", "hugetlb.2MB.max"]
    assert _writes(p)["unified/memory.max"] == "200"
    assert "+hugetlb" in p.enable[0].value


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        ("../memory.max", "1", "plain cgroup file name"),
        ("sub/memory.max", "1", "plain cgroup file name"),
        ("memory", "1", "plain cgroup file name"),
        ("cgroup.procs", "1", "may not be set"),
        ("memory.high", "1\nmemory.max 5", "single line"),
        ("rdma.max", "x", "'rdma' controller"),
    ],
)
def test_v2_unified_rejected(tmp_path, key, value, message):
    layout = _host(tmp_path, "v2")
    layout = CgroupLayout(mode="v2", unified=layout.unified, v2_controllers=frozenset({"memory"}))
    with pytest.raises(ValueError, match=r"linux.resources.unified\[.*" + message):
        plan({"unified": {key: value}}, "/c", layout)


@pytest.mark.parametrize(
    ("resources", "message"),
    [
        ({"memory": {"limit": -5}}, "linux.resources.memory.limit: must be positive.*got -5"),
        ({"memory": {"limit": "64M"}}, "memory.limit: must be an integer, got '64M'"),
        ({"memory": {"limit": True}}, "memory.limit: must be an integer"),
        ({"memory": {"limit": 100, "swap": 50}}, "memory.swap: memory\\+swap \\(50\\) must be >="),
        ({"memory": {"swap": 50}}, "memory.swap: cannot limit swap without a memory limit"),
        ({"memory": {"swappiness": 101}}, "memory.swappiness: must be between 0 and 100"),
        ({"cpu": {"shares": -1}}, "cpu.shares: must not be negative"),
        ({"cpu": {"quota": 500}}, "cpu.quota: must be at least 1000"),
        ({"cpu": {"period": 2_000_000}}, "cpu.period: must be between"),
        ({"cpu": {"cpus": "0-1;reboot"}}, "cpu.cpus: must be a list"),
        ({"pids": {"limit": -2}}, "linux.resources.pids.limit: must be positive"),
        ({"memory": 5}, "linux.resources.memory: must be an object"),
    ],
)
def test_plan_bad_values(tmp_path, resources, message):
    with pytest.raises(ValueError, match=message):
        plan(resources, "/c", _host(tmp_path, "v2"))


def test_plan_warns_unsupported(tmp_path):
    p = plan({"blockIO": {"weight": 10}, "cpu": {"burst": 5}}, "/c", _host(tmp_path, "v2"))
    assert "linux.resources.blockIO: not supported by observe-rt, ignored" in p.warnings
    assert any(w.startswith("linux.resources.cpu.burst") for w in p.warnings)


# -- manager on fixture trees ----------------------------------------------------------------


def test_create_destroy_hybrid(tmp_path):
    layout = _host(tmp_path, "hybrid")
    os.makedirs(os.path.join(layout.v1_mounts["memory"], "kubepods"))  # pre-existing parent
    mgr = CgroupManager(plan(RESOURCES, "/kubepods/ctr", layout))
    mgr.create()
    paths = mgr.paths()
    assert all(os.path.isdir(d) for d in paths.values())
    with open(os.path.join(paths["memory"], "memory.limit_in_bytes")) as f:
        assert f.read() == str(64 << 20)
    cpuset = paths["cpuset"]
    assert _rd(os.path.join(os.path.dirname(cpuset), "cpuset.cpus")) == "0-3"
    assert _rd(os.path.join(cpuset, "cpuset.cpus")) == "0-1"  # plan wins over parent
    assert _rd(os.path.join(cpuset, "cpuset.mems")) == "0"
    assert mgr.cgroup_id() == os.stat(paths["unified"]).st_ino != 0

    state = json.loads(json.dumps(mgr.to_state()))
    again = CgroupManager.from_state(state)
    assert again.paths() == paths
    again.destroy(timeout=1)
    assert not any(os.path.exists(d) for d in paths.values())
    assert os.path.isdir(os.path.join(layout.v1_mounts["memory"], "kubepods"))  # not ours
    assert not os.path.exists(os.path.join(layout.v1_mounts["cpu"], "kubepods"))  # ours
    again.destroy(timeout=1)  # idempotent
    assert again.to_state()["created"] == []


def test_create_v2_enables_and_writes(tmp_path):
    layout = _host(tmp_path, "v2")
    mgr = CgroupManager(plan({"pids": {"limit": 7}}, "/a/ctr", layout))
    mgr.create()
    root = layout.unified
    assert _rd(f"{root}/cgroup.subtree_control") == "+cpu +cpuset +io +memory +pids"
    assert _rd(f"{root}/a/cgroup.subtree_control") == "+cpu +cpuset +io +memory +pids"
    assert not os.path.exists(f"{root}/a/ctr/cgroup.subtree_control")
    assert _rd(f"{root}/a/ctr/pids.max") == "7"
    assert mgr.paths() == {"unified": f"{root}/a/ctr"}
    mgr.destroy(timeout=1)
    assert not os.path.exists(f"{root}/a")


def test_create_failure_undoes_and_names_file(tmp_path, monkeypatch):
    layout = _host(tmp_path, "hybrid")
    real_write = manager_mod._write

    def failing_write(path, value):
        if path.endswith("pids.max"):
            raise OSError(errno.EINVAL, "Invalid argument")
        real_write(path, value)

    monkeypatch.setattr(manager_mod, "_write", failing_write)
    mgr = CgroupManager(plan(RESOURCES, "/p/ctr", layout))
    with pytest.raises(CgroupError, match=r"cannot write '32' to .*/pids/p/ctr/pids.max"):
        mgr.create()
    for root in layout.hierarchy_roots().values():
        assert not os.path.exists(os.path.join(root, "p"))
    assert mgr.to_state()["created"] == []
    mgr.destroy(timeout=1)  # still fine after a failed create


def test_create_refuses_existing_leaf_and_keeps_it(tmp_path):
    layout = _host(tmp_path, "hybrid")
    taken = os.path.join(layout.v1_mounts["pids"], "p", "ctr")
    os.makedirs(taken)
    mgr = CgroupManager(plan(None, "/p/ctr", layout))
    with pytest.raises(CgroupError, match="already exists"):
        mgr.create()
    assert os.path.isdir(taken)
    assert not os.path.exists(os.path.join(layout.v1_mounts["memory"], "p"))


def test_add_process_and_pids(tmp_path):
    layout = _host(tmp_path, "v1", comount=True)
    mgr = CgroupManager(plan(None, "/c", layout))
    mgr.create()
    mgr.add_process(4242)
    procs = [os.path.join(d, "cgroup.procs") for d in set(mgr.paths().values())]
    assert len(procs) == len(mgr.paths()) - 1  # cpu and cpuacct share one directory
    assert all(_rd(p) == "4242" for p in procs)
    assert mgr.pids() == [4242]
    assert mgr.cgroup_id() == 0  # no unified mount on pure v1
    for p in procs:
        _wr(p, "")  # "the process exited"
    mgr.destroy(timeout=1)
    assert not os.path.exists(mgr.paths()["cpu"])


def test_readers(tmp_path):
    v1 = CgroupManager(plan(None, "/c", _host(tmp_path / "one", "hybrid")))
    v1.create()
    d = v1.paths()
    _wr(f"{d['memory']}/memory.oom_control", "oom_kill_disable 0\noom_kill 3\n")
    _wr(f"{d['memory']}/memory.limit_in_bytes", "9223372036854771712\n")
    _wr(f"{d['cpu']}/cpu.stat", "nr_periods 10\nnr_throttled 4\nthrottled_time 9\n")
    _wr(f"{d['cpuacct']}/cpuacct.usage", "5000000\n")
    assert v1.oom_kill_count() == 3
    assert v1.memory_limit() is None
    assert v1.cpu_stat() == {
        "nr_periods": 10,
        "nr_throttled": 4,
        "throttled_time": 9,
        "usage_usec": 5000,
    }
    v2 = CgroupManager(plan(None, "/c", _host(tmp_path / "two", "v2")))
    v2.create()
    u = v2.paths()["unified"]
    _wr(f"{u}/memory.events", "low 0\nhigh 0\nmax 2\noom 1\noom_kill 1\n")
    _wr(f"{u}/memory.max", "67108864\n")
    _wr(f"{u}/cpu.stat", "usage_usec 70\nnr_periods 5\nnr_throttled 2\n")
    assert v2.oom_kill_count() == 1
    assert v2.memory_limit() == 64 << 20
    assert v2.cpu_stat() == {"usage_usec": 70, "nr_periods": 5, "nr_throttled": 2}


def test_from_state_rejects_garbage():
    with pytest.raises(ValueError, match="unknown version"):
        CgroupManager.from_state({"version": 99})
    with pytest.raises(ValueError, match="malformed"):
        CgroupManager.from_state({"version": 1, "mode": "v2"})
    restored = CgroupManager.from_state(
        {"version": 1, "mode": "v2", "cgroup_path": "/c", "roots": {}, "dirs": {}, "created": []}
    )
    with pytest.raises(CgroupError, match="cannot create"):
        restored.create()
