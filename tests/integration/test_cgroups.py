"""Cgroup layer on the real kernel: limits the kernel enforces, ids BPF will see, cleanup.

Each test uses its own parent "/observe-rt-test-<uuid>" and removes it in every hierarchy
afterwards, even when the test fails half-way.
"""

from __future__ import annotations

import errno
import os
import signal
import subprocess
import sys
import time
import uuid

import pytest

from observe_rt.runtime.cgroups import CgroupManager, detect_layout, plan

pytestmark = [
    pytest.mark.root,
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root for cgroupfs"),
    pytest.mark.skipif(not os.path.isdir("/sys/fs/cgroup"), reason="no cgroupfs"),
]

MiB = 1 << 20


def _scrub(directory: str) -> None:
    """Kill and rmdir everything under `directory`, deepest first (test clean-up)."""
    if not os.path.isdir(directory):
        return
    for current, _dirs, _files in os.walk(directory, topdown=False):
        for _ in range(200):
            try:
                with open(os.path.join(current, "cgroup.procs")) as f:
                    for pid in f.read().split():
                        try:
                            os.kill(int(pid), signal.SIGKILL)
                        except ProcessLookupError:
                            pass
                os.rmdir(current)
                break
            except OSError as err:
                if err.errno not in (errno.EBUSY, errno.ENOENT):
                    raise
                if err.errno == errno.ENOENT:
                    break
                time.sleep(0.01)


@pytest.fixture
def cgroup():
    """Factory: cgroup(resources) -> created CgroupManager under a unique test parent."""
    layout = detect_layout()
    parent = f"/observe-rt-test-{uuid.uuid4().hex[:12]}"
    made: list[CgroupManager] = []

    def make(resources, layout=layout):
        mgr = CgroupManager(plan(resources, f"{parent}/ctr", layout))
        made.append(mgr)
        mgr.create()
        return mgr

    make.layout = layout
    make.parent = parent
    try:
        yield make
    finally:
        for mgr in made:
            try:
                mgr.destroy(timeout=5)
            except Exception:
                pass
        for root in set(layout.hierarchy_roots().values()):
            _scrub(os.path.join(root, parent.lstrip("/")))


def _start(mgr: CgroupManager, code: str, args=(), **kw) -> subprocess.Popen:
    """A Python child that waits for a line on stdin (so it is moved first), then runs code."""
    script = "import sys\nsys.stdin.readline()\n" + code
    child = subprocess.Popen(
        [sys.executable, "-I", "-S", "-c", script, *args], stdin=subprocess.PIPE, text=True, **kw
    )
    mgr.add_process(child.pid)
    child.stdin.write("go\n")
    child.stdin.flush()
    return child


def _block_device_of(path: str) -> str:
    import stat

    dev = os.stat(path).st_dev
    for name in sorted(os.listdir("/dev")):
        info = os.stat(f"/dev/{name}")
        if stat.S_ISBLK(info.st_mode) and info.st_rdev == dev:
            return f"/dev/{name}"
    pytest.skip(f"no block device node for {path} in /dev")


def _read(*parts: str) -> str:
    with open(os.path.join(*parts)) as f:
        return f.read().strip()


def test_create_join_read_back_destroy(cgroup):
    resources = {
        "memory": {"limit": 64 * MiB},
        "cpu": {"quota": 20000, "period": 100000},
        "pids": {"limit": 32},
    }
    mgr = cgroup(resources)
    paths = mgr.paths()
    child = subprocess.Popen(["sleep", "60"])
    try:
        mgr.add_process(child.pid)
        lines = _read(f"/proc/{child.pid}/cgroup").splitlines()
        assert all(line.split(":", 2)[2] == mgr.cgroup_path for line in lines), lines
        if cgroup.layout.unified:
            assert f"0::{mgr.cgroup_path}" in lines
            assert mgr.cgroup_id() == os.stat(paths["unified"]).st_ino != 0
        assert mgr.pids() == [child.pid]
        if cgroup.layout.mode == "v2":
            assert _read(paths["unified"], "memory.max") == str(64 * MiB)
            assert _read(paths["unified"], "cpu.max") == "20000 100000"
            assert _read(paths["unified"], "pids.max") == "32"
        else:
            assert _read(paths["memory"], "memory.limit_in_bytes") == str(64 * MiB)
            assert _read(paths["cpu"], "cpu.cfs_quota_us") == "20000"
            assert _read(paths["cpu"], "cpu.cfs_period_us") == "100000"
            assert _read(paths["pids"], "pids.max") == "32"
        assert mgr.memory_limit() == 64 * MiB

        again = CgroupManager.from_state(mgr.to_state())  # as `oci delete` would
        again.destroy(timeout=5)
        assert child.wait(timeout=5) == -signal.SIGKILL
        assert not any(os.path.exists(d) for d in paths.values())
        for root in set(cgroup.layout.hierarchy_roots().values()):
            assert not os.path.exists(os.path.join(root, cgroup.parent.lstrip("/")))
    finally:
        child.kill()
        child.wait()


def test_memory_limit_oom_kills(cgroup):
    mgr = cgroup({"memory": {"limit": 48 * MiB, "swap": 48 * MiB}})
    before = mgr.oom_kill_count()
    child = _start(mgr, "data = b'x' * (256 << 20)\n")
    assert child.wait(timeout=30) == -signal.SIGKILL
    assert mgr.oom_kill_count() > before


def test_pids_limit_stops_forks(cgroup):
    mgr = cgroup({"pids": {"limit": 8}})
    child = subprocess.Popen(
        ["sh", "-c", "read x; for i in $(seq 20); do sleep 2 & done; wait"],
        stdin=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    mgr.add_process(child.pid)
    _, err = child.communicate("go\n", timeout=30)
    assert child.returncode != 0
    assert "fork" in err.lower(), err


def test_cpu_quota_throttles(cgroup):
    mgr = cgroup({"cpu": {"quota": 20000, "period": 100000}})
    start = mgr.cpu_stat()
    t0 = time.monotonic()
    child = _start(
        mgr, "import time\nt = time.monotonic()\nwhile time.monotonic() - t < 1.5: pass\n"
    )
    assert child.wait(timeout=30) == 0
    wall = time.monotonic() - t0
    end = mgr.cpu_stat()
    assert end["nr_throttled"] > start["nr_throttled"]
    used = (end["usage_usec"] - start["usage_usec"]) / 1e6
    # The busy loop wants a whole CPU; the kernel lets it have 0.2 of one.
    assert 0.05 < used / wall < 0.4, (used, wall)


def test_destroy_kills_forked_children_and_nested_cgroups(cgroup):
    mgr = cgroup(None)
    child = _start(
        mgr,
        "import os, subprocess, time\n"
        "for _ in range(3): subprocess.Popen(['sleep', '60'])\n"
        "time.sleep(60)\n",
    )
    deadline = time.monotonic() + 5
    while len(mgr.pids()) < 4 and time.monotonic() < deadline:
        time.sleep(0.02)
    assert len(mgr.pids()) == 4
    nested = [os.path.join(d, "sub") for d in set(mgr.paths().values())]
    for d in nested:
        os.mkdir(d)  # the workload may make its own sub-cgroups
    mgr.destroy(timeout=5)
    assert child.wait(timeout=5) == -signal.SIGKILL
    assert not any(os.path.exists(d) for d in mgr.paths().values())


def test_pure_v2_code_path_on_unified_mount(cgroup):
    """Drive the v2 code (cgroup.kill, enable writes, cpu.stat) on the host's cgroup2 mount."""
    layout = cgroup.layout
    if layout.unified is None:
        pytest.skip("no cgroup2 mount")
    if layout.mode == "v2":
        pytest.skip("already covered by the other tests on a v2 host")
    from observe_rt.runtime.cgroups import CgroupLayout

    v2 = CgroupLayout(mode="v2", unified=layout.unified, v2_controllers=frozenset())
    mgr = cgroup(None, layout=v2)
    assert mgr.paths() == {"unified": os.path.join(layout.unified, cgroup.parent[1:], "ctr")}
    child = _start(mgr, "import time\ntime.sleep(60)\n")
    assert mgr.pids() == [child.pid]
    assert "usage_usec" in mgr.cpu_stat()
    mgr.kill_all(signal.SIGKILL)  # through cgroup.kill
    assert child.wait(timeout=5) == -signal.SIGKILL
    mgr.destroy(timeout=5)
    assert not os.path.exists(mgr.paths()["unified"])


def test_device_filter_on_a_v2_cgroup(cgroup):
    """The v2 device filter (BPF), through the pure-v2 code path on this host's cgroup2 mount:
    v1 list semantics, enforced by the kernel on open()."""
    layout = cgroup.layout
    if layout.unified is None:
        pytest.skip("no cgroup2 mount")
    from observe_rt.runtime.cgroups import CgroupLayout

    v2 = CgroupLayout(mode="v2", unified=layout.unified, v2_controllers=frozenset())
    kmsg = {"type": "c", "major": 1, "minor": 11}
    rules = [{"allow": False, "access": "rwm"},  # deny all, then:
             {"allow": True, **kmsg, "access": "rw"},
             {"allow": False, **kmsg, "access": "w"}]  # fmt: skip
    mgr = cgroup({"devices": rules}, layout=v2)
    mgr.apply_after_init()
    node = _block_device_of("/")  # the host's root disk: a block device no rule allows
    probe = (
        "import os, sys\n"
        "for path, flags in (('/dev/kmsg', os.O_RDONLY), ('/dev/kmsg', os.O_WRONLY),\n"
        "                    ('/dev/zero', os.O_RDWR), (sys.argv[1], os.O_RDONLY)):\n"
        "    try:\n"
        "        os.close(os.open(path, flags)); print('ok')\n"
        "    except PermissionError:\n"
        "        print('denied')\n"
    )
    child = _start(mgr, probe, stdout=subprocess.PIPE, args=[node])
    out, _ = child.communicate(timeout=30)
    # kmsg: read allowed, write denied by the later rule; zero: runc's defaults; the disk: no.
    assert out.split() == ["ok", "denied", "ok", "denied"]
