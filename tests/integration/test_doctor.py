"""`observe-rt doctor` on the real machine (root, real kernel), plus its active probes."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from observe_rt.doctor import probes
from observe_rt.doctor.checks_probes import TRACEPOINTS
from observe_rt.host.kernel_headers import ensure_kernel_headers, ensure_tracefs

OBSERVE_RT = str(Path(sys.executable).with_name("observe-rt"))

pytestmark = [
    pytest.mark.root,
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root and the real kernel"),
]


def doctor(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [OBSERVE_RT, "doctor", *args], capture_output=True, text=True, timeout=120, check=False
    )


@pytest.fixture(scope="module")
def report() -> dict:
    result = doctor("--json")
    assert result.returncode == 0, result.stdout + result.stderr
    return {item["name"]: item for item in json.loads(result.stdout)}


def test_exit_zero_and_required_checks_ok(report):
    for name in ("kernel", "cgroup mode", "overlayfs", "seccomp", "namespace pid"):
        assert report[name]["status"] == "OK", report[name]
        assert report[name]["required"] is True
    assert all(item["status"] != "FAIL" for item in report.values())


def test_cgroups_are_hybrid(report):
    assert report["cgroup mode"]["detail"].split(":")[0] == "hybrid"
    assert "/sys/fs/cgroup/unified" in report["cgroup mode"]["detail"]


def test_bpf_usable_through_tracepoints_without_kprobes(report):
    assert report["kprobes"]["status"] != "OK"
    assert report["kprobes"]["required"] is False
    assert report["bpf syscall"]["status"] == "OK"
    for tracepoint in TRACEPOINTS:
        assert report[f"tracepoint {tracepoint}"]["status"] == "OK"


def test_bcc_compiles_and_attaches_with_a_time(report):
    check = report["bcc compile+attach"]
    assert check["status"] == "OK", check
    assert re.match(r"\d+ ms: compiled bpf/doctor_probe\.c in \d+ ms", check["detail"])
    assert re.search(r"saw [1-9]\d* exec", check["detail"])


def test_headers_bcc_uses_are_reported(report):
    check = report["kernel headers"]
    release = os.uname().release
    assert release in check["detail"]
    if check["status"] == "WARN":  # this machine: Debian 6.1 headers for a 6.18 kernel
        assert "has no headers; bcc uses Debian" in check["detail"]


def test_oom_score_adj_failure_is_only_a_warning(report):
    check = report["oom_score_adj"]
    assert check["required"] is False and check["status"] in ("OK", "WARN")


def test_table_output(tmp_path):
    result = doctor()
    assert result.returncode == 0, result.stderr
    assert "observe-rt doctor" in result.stdout and "hybrid" in result.stdout
    assert "0 FAIL: containers can run" in result.stdout


def test_root_option_on_a_broken_tree_exits_nonzero(tmp_path):
    # A tree with a kernel but no overlay and no cgroup mount: containers cannot run.
    (tmp_path / "proc/sys/kernel").mkdir(parents=True)
    (tmp_path / "proc/sys/kernel/osrelease").write_text("6.18.0\n")
    (tmp_path / "proc/filesystems").write_text("nodev\tsysfs\next4\n")
    (tmp_path / "proc/self").mkdir()
    (tmp_path / "proc/self/mountinfo").write_text("")
    result = doctor("--root", str(tmp_path), "--json")
    assert result.returncode == 1, result.stdout + result.stderr
    failed = {c["name"] for c in json.loads(result.stdout) if c["status"] == "FAIL"}
    assert {"overlayfs", "cgroup mode", "namespace pid", "seccomp"} <= failed


def test_child_probes_leave_this_process_alone():
    namespaces = {n: os.readlink(f"/proc/self/ns/{n}") for n in ("pid", "net", "mnt", "user")}
    oom_before = Path("/proc/self/oom_score_adj").read_text()
    mounts_before = _securityfs_mounts()

    assert all(o.ok for o in probes.probe_namespaces().values())
    assert probes.probe_seccomp().ok
    oom = probes.probe_oom_score_adj()
    assert oom.ok or re.match(r"E[A-Z]+ \(", oom.detail)
    lsm = probes.probe_lsm()
    assert lsm.ok and "capability" in lsm.detail

    assert {n: os.readlink(f"/proc/self/ns/{n}") for n in namespaces} == namespaces
    assert Path("/proc/self/oom_score_adj").read_text() == oom_before
    assert "Seccomp:\t0\n" in Path("/proc/self/status").read_text()  # no filter here
    assert _securityfs_mounts() == mounts_before  # the child's securityfs stayed private


def _securityfs_mounts() -> list[str]:
    """Only what the doctor might leave: other tests on the host mount and unmount freely."""
    lines = Path("/proc/self/mountinfo").read_text().splitlines()
    return [line for line in lines if " - securityfs " in line]


def test_bpf_syscall_and_bcc_probes():
    assert probes.probe_bpf_syscall().ok
    outcome = probes.probe_bcc()
    assert outcome.imported and outcome.compile_ms and outcome.attach_ms is not None
    assert outcome.events >= 1


def test_headers_and_tracefs_already_set_up():
    # deploy/setup.sh ran on this machine: both ensure_* find nothing to do.
    setup = ensure_kernel_headers()
    assert setup.actions == ()
    assert setup.headers.in_use
    assert ensure_tracefs() is None
