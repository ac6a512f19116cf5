"""doctor's decisions on fixture trees standing in for / (no root, real / untouched)."""

from __future__ import annotations

import gzip
import json
import sys
from pathlib import Path

import pytest
from rich.console import Console

from observe_rt.cli import main
from observe_rt.doctor import cgroup_layout, probes, report
from observe_rt.doctor.checks_probes import TRACEPOINTS
from observe_rt.doctor.model import BccOutcome, Outcome, Probes, Status, Tree, exit_code
from observe_rt.runtime.cgroups import detect_layout

RELEASE = "6.18.44-fc-v657"
NS_FILES = ("pid", "net", "mnt", "ipc", "uts", "cgroup", "user", "time")
CGROUPS = """#subsys_name\thierarchy\tnum_cgroups\tenabled
cpuset\t3\t1\t1
cpu\t1\t1\t1
cpuacct\t2\t1\t1
blkio\t7\t1\t1
memory\t4\t9\t1
devices\t5\t1\t1
freezer\t6\t1\t1
hugetlb\t0\t1\t1
pids\t8\t1\t1
"""
V1 = ("cpu", "cpuacct", "cpuset", "memory", "devices", "freezer", "blkio", "pids")


def mountinfo(mode: str) -> str:
    lines = ["22 27 0:21 / /proc rw,relatime - proc proc rw"]
    if mode in ("v1", "hybrid"):
        lines.append("30 23 0:25 / /sys/fs/cgroup rw - tmpfs tmpfs rw,mode=755")
        for i, name in enumerate(V1):
            lines.append(
                f"{31 + i} 30 0:{40 + i} / /sys/fs/cgroup/{name} rw - cgroup cgroup rw,{name}"
            )
        lines.append("50 30 0:60 / /sys/fs/cgroup/systemd rw - cgroup cgroup rw,name=systemd")
    if mode == "hybrid":
        lines.append("51 30 0:61 / /sys/fs/cgroup/unified rw - cgroup2 cgroup2 rw")
    if mode == "v2":
        lines.append("30 23 0:25 / /sys/fs/cgroup rw - cgroup2 cgroup2 rw,nsdelegate")
    return "\n".join(lines) + "\n"


def write(root: Path, rel: str, text: str = "", mode: int | None = None) -> Path:
    path = root / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    if mode is not None:
        path.chmod(mode)
    return path


def make_host(
    root: Path, cgroups: str = "hybrid", overlay: bool = True, kprobes: bool = False
) -> Path:
    """A tree shaped like this project's Firecracker hosts (hybrid cgroups, no kprobes)."""
    write(root, "proc/sys/kernel/osrelease", RELEASE + "\n")
    write(root, "proc/self/mountinfo", mountinfo(cgroups))
    write(root, "proc/cgroups", CGROUPS)
    if cgroups == "hybrid":
        write(root, "sys/fs/cgroup/unified/cgroup.controllers", "hugetlb\n")
    if cgroups == "v2":
        write(root, "sys/fs/cgroup/cgroup.controllers", "cpuset cpu io memory hugetlb pids\n")
    write(
        root,
        "proc/filesystems",
        "nodev\tsysfs\nnodev\tcgroup2\next4\n" + ("nodev\toverlay\n" if overlay else ""),
    )
    for name in NS_FILES:
        write(root, f"proc/self/ns/{name}")
    write(root, "proc/self/status", "Name:\tpython\nSeccomp:\t0\nSeccomp_filters:\t0\n")
    write(root, "proc/sys/kernel/seccomp/actions_avail", "kill_process kill_thread trap\n")
    write(root, "proc/sys/kernel/unprivileged_bpf_disabled", "2\n")
    write(root, "sys/kernel/btf/vmlinux")
    for tracepoint in TRACEPOINTS:
        write(root, "sys/kernel/tracing/events/{}/{}/id".format(*tracepoint.split(":")), "1\n")
    if kprobes:
        write(root, "sys/bus/event_source/devices/kprobe/type", "6\n")
    for plugin in ("bridge", "host-local", "loopback", "portmap"):
        write(root, f"usr/lib/cni/{plugin}", "#!/bin/sh\n", 0o755)
    write(root, "proc/sys/net/ipv4/ip_forward", "1\n")
    write(
        root,
        "usr/src/linux-headers-6.1.0-56-amd64/include/generated/utsrelease.h",
        '#define UTS_RELEASE "6.1.0-56-amd64"\n',
    )
    write(root, "usr/src/linux-headers-6.1.0-56-common/include/linux/kconfig.h")
    (root / f"lib/modules/{RELEASE}").mkdir(parents=True)
    (root / f"lib/modules/{RELEASE}/build").symlink_to("/usr/src/linux-headers-6.1.0-56-amd64")
    (root / f"lib/modules/{RELEASE}/source").symlink_to("/usr/src/linux-headers-6.1.0-56-common")
    return root


def healthy_probes(**changes) -> Probes:
    namespaces = {
        n: Outcome(True, "") for n in ("pid", "net", "mount", "ipc", "uts", "cgroup", "user")
    }
    values = dict(
        namespaces=namespaces,
        seccomp=Outcome(True, ""),
        oom_score_adj=Outcome(False, "EIO (Input/output error)"),
        bpf_syscall=Outcome(True, "map created"),
        lsm=Outcome(True, "lockdown,capability,landlock,bpf"),
        bcc=BccOutcome(True, "0.26.0", compile_ms=251.4, attach_ms=0.4, events=1),
    )
    values.update(changes)
    return Probes(**values)


def run_checks(root: Path, probe_outcomes: Probes | None = None) -> dict:
    checks = report.collect(root, probe_outcomes or healthy_probes(), "x86_64", env={})
    return {c.name: c for c in checks} | {"_exit": exit_code(checks)}


@pytest.fixture
def host(tmp_path):
    return make_host(tmp_path / "root")


def test_this_machine_shape_exits_zero(host):
    checks = run_checks(host)

    assert checks["_exit"] == 0
    assert checks["kernel"].status is Status.OK
    assert checks["cgroup mode"].detail.startswith("hybrid: ")
    assert "/sys/fs/cgroup/unified (controllers: hugetlb)" in checks["cgroup mode"].detail
    assert checks["cgroup controllers"].status is Status.OK
    assert checks["kprobes"].status is Status.WARN
    assert checks["kprobes"].fix == "none needed: observe-rt probes use tracepoints only"
    assert checks["bcc compile+attach"].status is Status.OK
    assert checks["bcc compile+attach"].detail.startswith("252 ms: compiled")
    assert checks["kernel headers"].status is Status.WARN
    assert checks["kernel headers"].detail == (
        f"kernel {RELEASE} has no headers; bcc uses Debian 6.1.0-56-amd64 headers via "
        f"/lib/modules/{RELEASE}/build and source symlinks"
    )
    assert checks["oom_score_adj"].status is Status.WARN
    assert "EIO" in checks["oom_score_adj"].detail
    assert all(checks[f"tracepoint {tp}"].status is Status.OK for tp in TRACEPOINTS)


def test_every_warning_and_failure_has_a_fix(host):
    probes_ = healthy_probes(bcc=BccOutcome(False, error="ModuleNotFoundError: bcc"))
    for check in report.collect(host, probes_, "x86_64", env={}):
        assert (check.status is Status.OK) == (check.fix == ""), check
        assert "\n" not in check.fix and "\n" not in check.detail


def test_no_overlay_fails_and_exits_nonzero(tmp_path):
    checks = run_checks(make_host(tmp_path, overlay=False))
    assert checks["overlayfs"].status is Status.FAIL
    assert checks["overlayfs"].fix.startswith("modprobe overlay")
    assert checks["_exit"] == 1


def test_no_cgroup_mounted_fails(tmp_path):
    checks = run_checks(make_host(tmp_path, cgroups="none"))
    assert checks["cgroup mode"].status is Status.FAIL
    assert checks["cgroup mode"].detail.startswith("none:")
    assert checks["cgroup controllers"].status is Status.FAIL
    assert checks["_exit"] == 1


def test_pure_v2_host(tmp_path):
    checks = run_checks(make_host(tmp_path, cgroups="v2"))
    assert checks["cgroup mode"].detail.startswith("v2: cgroup2 at /sys/fs/cgroup")
    assert checks["cgroup controllers"].status is Status.OK
    assert checks["cgroup controllers"].detail == "v2: cpu cpuset hugetlb io memory pids"
    assert checks["_exit"] == 0


def test_v1_only_warns_about_probe_identity(tmp_path):
    checks = run_checks(make_host(tmp_path, cgroups="v1"))
    assert checks["cgroup mode"].status is Status.WARN
    assert "cgroup2" in checks["cgroup mode"].fix
    assert checks["_exit"] == 0


def test_missing_memory_controller_fails(host):
    write(host, "proc/cgroups", CGROUPS.replace("memory\t4\t9\t1", "memory\t4\t9\t0"))
    checks = run_checks(host)
    assert checks["cgroup controllers"].status is Status.FAIL
    assert checks["cgroup controllers"].detail.startswith("missing memory")
    assert checks["_exit"] == 1


def test_cgroup_layout_falls_back_to_proc_mounts(host):
    (host / "proc/self/mountinfo").unlink()
    write(host, "proc/mounts", "cgroup2 /sys/fs/cgroup cgroup2 rw,nsdelegate 0 0\n")
    write(host, "sys/fs/cgroup/cgroup.controllers", "cpu memory pids\n")
    layout = cgroup_layout.detect(Tree(host))
    assert layout.mode == "v2" and layout.v2_controllers == ("cpu", "memory", "pids")


@pytest.mark.parametrize("mode", ["v1", "hybrid", "v2"])
def test_cgroup_mode_is_the_runtimes(tmp_path, mode):
    root = make_host(tmp_path, cgroups=mode)
    runtime = detect_layout(str(root / "proc/self/mountinfo"), str(root))
    view = cgroup_layout.detect(Tree(root))
    assert view.mode == runtime.mode == mode
    assert view.v2_controllers == tuple(sorted(runtime.v2_controllers))
    assert view.v2_mount == (None if mode == "v1" else runtime.unified[len(str(root)) :])


def test_cgroup_proc_mounts_fallback_unescapes(host):
    (host / "proc/self/mountinfo").unlink()
    write(host, "proc/mounts", "cgroup2 /my\\040cg cgroup2 rw 0 0\n")
    view = cgroup_layout.detect(Tree(host))
    assert view.mode == "v2" and view.v2_mount == "/my cg" and view.v2_controllers == ()


def test_namespace_decisions(host):
    outcomes = healthy_probes().namespaces | {
        "pid": Outcome(False, "EPERM (Operation not permitted)"),
        "user": Outcome(False, "ENOSPC (No space left on device)"),
    }
    checks = run_checks(host, healthy_probes(namespaces=outcomes))
    assert checks["namespace pid"].status is Status.FAIL
    assert checks["namespace pid"].detail == (
        "unshare(CLONE_NEWPID) failed: EPERM (Operation not permitted)"
    )
    assert checks["namespace user"].status is Status.WARN  # userns is optional
    assert "max_user_namespaces" in checks["namespace user"].fix
    assert checks["namespace net"].status is Status.OK
    assert checks["_exit"] == 1


def test_namespace_missing_in_kernel_fails_without_probing(host):
    (host / "proc/self/ns/ipc").unlink()
    checks = run_checks(host, Probes())
    assert checks["namespace ipc"].status is Status.FAIL
    assert checks["namespace ipc"].fix == "enable CONFIG_IPC_NS"
    assert checks["namespace pid"].detail.endswith("(unshare not probed)")


@pytest.mark.parametrize("broken", ["status", "actions_avail", "probe"])
def test_seccomp_is_required(host, broken):
    outcome = Outcome(True, "")
    if broken == "status":
        write(host, "proc/self/status", "Name:\tpython\n")
    elif broken == "actions_avail":
        (host / "proc/sys/kernel/seccomp/actions_avail").unlink()
    else:
        outcome = Outcome(False, "EINVAL (Invalid argument)")
    checks = run_checks(host, healthy_probes(seccomp=outcome))
    assert checks["seccomp"].status is Status.FAIL
    assert checks["_exit"] == 1


def test_old_kernel_fails_and_pre_ringbuf_kernel_warns(host):
    write(host, "proc/sys/kernel/osrelease", "4.19.0-20-amd64\n")
    assert run_checks(host)["kernel"].status is Status.FAIL
    write(host, "proc/sys/kernel/osrelease", "5.7.1\n")
    checks = run_checks(host)
    assert checks["kernel"].status is Status.WARN and checks["_exit"] == 0


def test_bcc_not_importable_is_a_warning(host):
    checks = run_checks(host, healthy_probes(bcc=BccOutcome(False, error="ImportError: bcc")))
    assert checks["bcc"].status is Status.WARN
    assert checks["bcc"].fix == "apt-get install python3-bpfcc; run deploy/setup.sh"
    assert checks["bcc compile+attach"].status is Status.WARN
    assert checks["_exit"] == 0


def test_bcc_compile_failure_points_at_headers(host):
    failed = BccOutcome(True, "0.26.0", error="Failed to compile BPF module")
    checks = run_checks(host, healthy_probes(bcc=failed))
    assert checks["bcc compile+attach"].status is Status.WARN
    assert "setup.sh" in checks["bcc compile+attach"].fix
    assert checks["_exit"] == 0


def test_bcc_compile_failure_when_bpf_refused_points_at_root(host):
    failed = BccOutcome(True, "0.26.0", error="Failed to compile BPF module")
    refused = Outcome(False, "EPERM (Operation not permitted)")
    checks = run_checks(host, healthy_probes(bcc=failed, bpf_syscall=refused))
    assert checks["bcc compile+attach"].fix == "run as root (bpf() is refused)"
    assert checks["bpf syscall"].status is Status.WARN and checks["_exit"] == 0


def test_unreadable_tracefs_says_run_as_root(host, monkeypatch):
    monkeypatch.setattr(Tree, "is_dir", lambda self, rel: False)
    monkeypatch.setattr(Tree, "readable_dir", lambda self, rel: False)
    checks = run_checks(host)
    assert checks["tracefs"].detail == "/sys/kernel/tracing not readable"
    assert checks["tracepoint oom:mark_victim"].fix == "run observe-rt doctor as root"


def test_bcc_attached_but_saw_nothing(host):
    quiet = BccOutcome(True, "0.26.0", compile_ms=200.0, attach_ms=1.0, events=0)
    checks = run_checks(host, healthy_probes(bcc=quiet))
    assert checks["bcc compile+attach"].status is Status.WARN


def test_probes_skipped_under_root_option(host):
    checks = run_checks(host, Probes(skipped_because="--root given"))
    assert checks["bcc"].detail == "not probed (--root given)"
    assert checks["oom_score_adj"].status is Status.WARN
    assert checks["bpf syscall"].status is Status.OK  # decided from the sysctl file
    assert checks["_exit"] == 0


def test_no_tracefs_warns_every_tracepoint(host):
    import shutil

    shutil.rmtree(host / "sys/kernel/tracing")
    checks = run_checks(host)
    assert checks["tracefs"].status is Status.WARN
    assert checks["tracefs"].fix == "mount -t tracefs tracefs /sys/kernel/tracing"
    assert checks["tracepoint oom:mark_victim"].detail == "unknown: tracefs not mounted"
    assert checks["_exit"] == 0


def test_one_missing_tracepoint(host):
    import shutil

    shutil.rmtree(host / "sys/kernel/tracing/events/tcp/tcp_receive_reset")
    checks = run_checks(host)
    assert checks["tracepoint tcp:tcp_receive_reset"].status is Status.WARN
    assert checks["tracepoint tcp:tcp_send_reset"].status is Status.OK


def test_kprobes_present(tmp_path):
    assert run_checks(make_host(tmp_path, kprobes=True))["kprobes"].status is Status.OK


def test_no_headers_at_all(host):
    import shutil

    shutil.rmtree(host / "usr/src")
    checks = run_checks(host)
    assert checks["kernel headers"].status is Status.WARN
    assert checks["kernel headers"].fix.startswith("apt-get install linux-headers-amd64")


def test_cni_plugins(host):
    (host / "usr/lib/cni/loopback").unlink()
    checks = run_checks(host)
    assert checks["cni plugins"].status is Status.WARN
    assert checks["cni plugins"].detail == "missing loopback in /opt/cni/bin and /usr/lib/cni"
    write(host, "opt/cni/bin/loopback", "#!/bin/sh\n", 0o755)
    checks = run_checks(host)
    assert checks["cni plugins"].status is Status.OK
    assert checks["cni plugins"].detail.endswith("in /opt/cni/bin, /usr/lib/cni")


def test_cni_plugin_must_be_executable(host):
    (host / "usr/lib/cni/bridge").chmod(0o644)
    assert run_checks(host)["cni plugins"].status is Status.WARN


def test_ip_forward_off_warns(host):
    write(host, "proc/sys/net/ipv4/ip_forward", "0\n")
    checks = run_checks(host)
    assert checks["ip_forward"].status is Status.WARN and checks["_exit"] == 0


def test_lsm_sources(host):
    write(host, "sys/kernel/security/lsm", "capability,selinux")
    assert run_checks(host)["lsm"].detail.startswith("capability,selinux")
    (host / "sys/kernel/security/lsm").unlink()
    checks = run_checks(host)
    assert checks["lsm"].detail.startswith("lockdown,capability,landlock,bpf (securityfs")
    failed = healthy_probes(lsm=Outcome(False, "mount securityfs: EPERM"))
    assert "EPERM" in run_checks(host, failed)["lsm"].detail
    (host / "proc/config.gz").write_bytes(gzip.compress(b'CONFIG_LSM="landlock,bpf"\n'))
    checks = run_checks(host, failed)
    assert checks["lsm"].status is Status.WARN
    assert checks["lsm"].detail == "configured landlock,bpf (active list unknown)"


def test_json_shape(host):
    checks = report.collect(host, healthy_probes(), "x86_64", env={})
    data = json.loads(report.to_json(checks))
    assert {tuple(sorted(item)) for item in data} == {
        ("detail", "fix", "name", "required", "status")
    }
    statuses = {item["name"]: (item["status"], item["required"]) for item in data}
    assert statuses["overlayfs"] == ("OK", True)
    assert statuses["kprobes"] == ("WARN", False)


def test_table_rendering(host):
    console = Console(record=True, width=200)
    report.render_table(report.collect(host, healthy_probes(), "x86_64", env={}), console)
    text = console.export_text()
    for heading in ("check", "status", "detail", "fix"):
        assert heading in text
    assert "hybrid: v1 controllers" in text
    assert "0 FAIL: containers can run; eBPF probes usable (tracepoints only, no kprobes)" in text


def test_cli_root_option_exit_codes(tmp_path, capsys):
    good = make_host(tmp_path / "good")
    assert main(["doctor", "--root", str(good), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)[0]["name"] == "kernel"
    broken = make_host(tmp_path / "broken", overlay=False)
    assert main(["doctor", "--root", str(broken), "--json"]) == 1
    failed = [c["name"] for c in json.loads(capsys.readouterr().out) if c["status"] == "FAIL"]
    assert failed == ["overlayfs"]


def test_bcc_import_failure_is_reported(monkeypatch):
    monkeypatch.setitem(sys.modules, "bcc", None)  # makes `import bcc` raise ImportError
    outcome = probes.probe_bcc()
    assert not outcome.imported and "ModuleNotFoundError" in outcome.error
