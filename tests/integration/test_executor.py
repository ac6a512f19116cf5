"""The executor's lifecycle, process model, limits and failure clean-up on the real kernel."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time

import pytest

from observe_rt.runtime.cgroups import CgroupManager
from tests.support.bundles import cgroup_dirs

pytestmark = pytest.mark.root


def create(ort, bundles, spec, *extra):
    container_id, bundle = bundles.write(spec)
    ort("create", container_id, "--bundle", str(bundle), *extra, check=True)
    return container_id, bundle


def state(ort, container_id) -> dict:
    return json.loads(ort("state", container_id, check=True).stdout)


def wait_status(ort, container_id, wanted, timeout=10.0) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        current = state(ort, container_id)
        if current["status"] == wanted or time.monotonic() > deadline:
            return current
        time.sleep(0.05)


def test_lifecycle_create_start_kill_delete(ort, bundles, tmp_path):
    pid_file = tmp_path / "pid"
    spec = bundles.spec(["sleep", "300"])
    spec["annotations"] = {"io.example/owner": "tests"}
    container_id, bundle = create(ort, bundles, spec, "--pid-file", str(pid_file))

    created = state(ort, container_id)
    assert created["status"] == "created"
    assert created["pid"] == int(pid_file.read_text()) > 0
    assert created["bundle"] == str(bundle)
    assert created["annotations"] == {"io.example/owner": "tests"}
    assert created["ociVersion"] and created["id"] == container_id
    # Blocked before exec: the init is still the (non-dumpable) Python helper.
    assert "python" in os.readlink(f"/proc/{created['pid']}/exe")

    ort("start", container_id, check=True)
    running = state(ort, container_id)
    assert running["status"] == "running" and running["pid"] == created["pid"]
    assert os.readlink(f"/proc/{created['pid']}/exe").endswith("busybox")
    assert ort("start", container_id).returncode != 0  # only a created container starts
    refused = ort("delete", container_id)
    assert refused.returncode != 0 and "running" in refused.stderr

    listing = json.loads(ort("list", "--format", "json", check=True).stdout)
    assert [c["id"] for c in listing] == [container_id]

    ort("kill", container_id, "KILL", check=True)
    assert wait_status(ort, container_id, "stopped")["status"] == "stopped"
    assert ort("kill", container_id).returncode != 0
    ort("delete", container_id, check=True)
    assert ort("state", container_id).returncode != 0
    assert cgroup_dirs(f"{bundles.cgroup_parent}/{container_id}") == []


def test_create_is_non_dumpable_until_exec(ort, bundles):
    """Until exec the helper is non-dumpable, so its /proc files belong to root, not the user."""
    spec = bundles.spec(["sleep", "300"])
    spec["process"]["user"] = {"uid": 1000, "gid": 1000}
    container_id, _ = create(ort, bundles, spec)
    pid = state(ort, container_id)["pid"]
    assert os.stat(f"/proc/{pid}/status").st_uid == 0
    ort("start", container_id, check=True)
    deadline = time.monotonic() + 5
    while os.stat(f"/proc/{pid}/status").st_uid != 1000 and time.monotonic() < deadline:
        time.sleep(0.02)
    assert os.stat(f"/proc/{pid}/status").st_uid == 1000  # dumpable again after exec, as runc


def test_delete_force_of_created_and_running(ort, bundles):
    for start in (False, True):
        container_id, _ = create(ort, bundles, bundles.spec(["sleep", "300"]))
        pid = state(ort, container_id)["pid"]
        if start:
            ort("start", container_id, check=True)
        ort("delete", "--force", container_id, check=True)
        assert not os.path.exists(f"/proc/{pid}") or _is_zombie(pid)
        assert cgroup_dirs(f"{bundles.cgroup_parent}/{container_id}") == []


def _is_zombie(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] == "Z"
    except FileNotFoundError:
        return True


def test_workload_is_reparented_to_callers_subreaper(ort, bundles, tmp_path):
    """A supervisor that is a subreaper gets the workload as its child and can reap it."""
    container_id, bundle = bundles.write(bundles.spec(["sh", "-c", "exit 42"]))
    script = f"""
import json, os, subprocess, sys
from observe_rt.host import libc
libc.prctl(libc.PR_SET_CHILD_SUBREAPER, 1)
cli = [{sys.executable!r}, "-m", "observe_rt", "oci", "--root", {str(ort.root)!r}]
subprocess.run(cli + ["create", {container_id!r}, "--bundle", {str(bundle)!r}], check=True)
pid = json.loads(subprocess.run(cli + ["state", {container_id!r}], capture_output=True,
                                check=True).stdout)["pid"]
ppid = int(open(f"/proc/{{pid}}/status").read().split("PPid:")[1].split()[0])
subprocess.run(cli + ["start", {container_id!r}], check=True)
_, status = os.waitpid(pid, 0)
print(ppid == os.getpid(), os.waitstatus_to_exitcode(status))
"""
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60
    )
    assert result.stdout.split() == ["True", "42"], result.stderr


def test_join_network_namespace_by_path(ort, bundles):
    name = f"ort-test-{os.getpid()}"
    subprocess.run(["ip", "netns", "add", name], check=True)
    try:
        path = f"/run/netns/{name}"
        spec = bundles.spec(["readlink", "/proc/self/ns/net"])
        spec["linux"]["namespaces"] = [
            {"type": t} for t in ("pid", "ipc", "uts", "mount")
        ] + [{"type": "network", "path": path}]  # fmt: skip
        container_id, bundle = bundles.write(spec)
        result = ort("run", container_id, "--bundle", str(bundle), check=True)
        assert result.stdout.strip() == f"net:[{os.stat(path).st_ino}]"
    finally:
        subprocess.run(["ip", "netns", "del", name], check=False)


def test_user_namespace_with_id_mappings(ort, bundles, busybox_rootfs):
    # The mapped root (host uid 100000) must be able to reach the rootfs, as with runc.
    shared = tempfile.mkdtemp(prefix="observe-rt-userns-", dir="/var/tmp")
    os.chmod(shared, 0o755)
    rootfs = os.path.join(shared, "rootfs")
    shutil.copytree(busybox_rootfs, rootfs, symlinks=True)
    try:
        _run_in_user_namespace(ort, bundles, rootfs)
    finally:
        shutil.rmtree(shared)


def _run_in_user_namespace(ort, bundles, rootfs):
    spec = bundles.spec(["sh", "-c", "id -u; cat /proc/self/uid_map"])
    spec["root"]["path"] = rootfs
    spec["linux"]["namespaces"].append({"type": "user"})
    mapping = [{"containerID": 0, "hostID": 100000, "size": 65536}]
    spec["linux"]["uidMappings"] = mapping
    spec["linux"]["gidMappings"] = mapping
    # sysfs and cgroupfs need a network namespace and privileges owned by the user namespace.
    spec["mounts"] = [m for m in spec["mounts"] if m["type"] not in ("sysfs", "cgroup")]
    container_id, bundle = bundles.write(spec)
    result = ort("run", container_id, "--bundle", str(bundle))
    assert result.returncode == 0, result.stderr
    lines = result.stdout.split()
    assert lines[0] == "0" and lines[1:] == ["0", "100000", "65536"]


# --- limits bite ------------------------------------------------------------------------------


def test_memory_limit_oom_kills_with_137(ort, bundles):
    spec = bundles.spec(["tail", "/dev/zero"])  # buffers an endless line: grows until killed
    spec["linux"]["resources"] = {"memory": {"limit": 32 * 1024 * 1024}}
    container_id, _ = create(ort, bundles, spec)
    manager = CgroupManager.from_state(_saved_cgroup(ort, container_id))
    pid = state(ort, container_id)["pid"]
    ort("start", container_id, check=True)
    assert wait_status(ort, container_id, "stopped", timeout=60)["status"] == "stopped"
    assert manager.oom_kill_count() >= 1
    # The exit code a supervisor sees: `run` reaps it as a subreaper.
    container_id2, bundle2 = bundles.write(spec)
    assert ort("run", container_id2, "--bundle", str(bundle2), timeout=120).returncode == 137
    assert pid > 0


def _saved_cgroup(ort, container_id) -> dict:
    with open(ort.root / container_id / "state.json") as f:
        return json.load(f)["cgroup"]


def test_cpu_quota_holds_busy_loop_near_limit(ort, bundles):
    spec = bundles.spec(["sh", "-c", "while :; do :; done"])
    spec["linux"]["resources"] = {"cpu": {"quota": 20000, "period": 100000}}
    container_id, _ = create(ort, bundles, spec)
    manager = CgroupManager.from_state(_saved_cgroup(ort, container_id))
    ort("start", container_id, check=True)
    before, started = manager.cpu_stat(), time.monotonic()
    time.sleep(2.0)
    after, elapsed = manager.cpu_stat(), time.monotonic() - started
    share = (after["usage_usec"] - before["usage_usec"]) / 1e6 / elapsed
    assert 0.1 < share < 0.3, share  # the kernel's limit, not our speed
    assert after["nr_throttled"] > before["nr_throttled"]


def test_pids_limit_stops_fork_bomb(ort, bundles):
    spec = bundles.spec(["sh", "-c", "for i in $(seq 40); do sleep 30 & done; echo forked"])
    spec["linux"]["resources"] = {"pids": {"limit": 10}}
    container_id, bundle = bundles.write(spec)
    result = ort("run", container_id, "--bundle", str(bundle))
    assert "can't fork" in result.stderr.lower() or "resource temporarily" in result.stderr.lower()


def test_generated_default_spec_runs(ort, bundles, tmp_path):
    bundle = tmp_path / "generated"
    bundle.mkdir()
    ort("spec", "--bundle", str(bundle), check=True)
    config = json.loads((bundle / "config.json").read_text())
    assert config["linux"]["seccomp"]["defaultAction"] == "SCMP_ACT_ERRNO"
    config["root"]["path"] = str(bundles.rootfs)
    config["process"]["args"] = ["sh", "-c", "grep Seccomp: /proc/self/status"]
    config["linux"]["cgroupsPath"] = f"{bundles.cgroup_parent}/generated"
    (bundle / "config.json").write_text(json.dumps(config))
    result = ort("run", "generated", "--bundle", str(bundle), check=True)
    assert result.stdout.split() == ["Seccomp:", "2"]


def test_oom_score_adj_applied_and_refusal_is_only_a_warning(ort, bundles):
    spec = bundles.spec(["cat", "/proc/self/oom_score_adj"])
    spec["process"]["oomScoreAdj"] = 500
    container_id, bundle = bundles.write(spec)
    assert ort("run", container_id, "--bundle", str(bundle), check=True).stdout.strip() == "500"
    # Lowering the score needs CAP_SYS_RESOURCE; some kernels refuse it (EIO on Firecracker).
    spec["process"]["oomScoreAdj"] = -500
    container_id, bundle = bundles.write(spec)
    result = ort("run", container_id, "--bundle", str(bundle))
    assert result.returncode == 0, result.stderr
    if result.stdout.strip() != "-500":
        assert "warning: oom_score_adj -500" in result.stderr


def test_mount_destination_symlink_cannot_escape_rootfs(ort, bundles, busybox_rootfs, tmp_path):
    """An image symlink aimed at the host redirects the mount inside the rootfs instead."""
    escape = f"/tmp/observe-rt-escape-{os.getpid()}"
    rootfs = tmp_path / "evil-rootfs"
    shutil.copytree(busybox_rootfs, rootfs, symlinks=True)
    os.symlink(f"../../../../../../..{escape}", rootfs / "evil")
    spec = bundles.spec(["sh", "-c", f"ls -d {escape}/inside && echo contained"])
    spec["root"]["path"] = str(rootfs)
    spec["mounts"].append({"destination": "/evil/inside", "type": "tmpfs", "source": "tmpfs",
                           "options": ["nosuid"]})  # fmt: skip
    container_id, bundle = bundles.write(spec)
    result = ort("run", container_id, "--bundle", str(bundle))
    assert result.returncode == 0, result.stderr
    assert "contained" in result.stdout
    assert not os.path.exists(escape)  # nothing was created on the host
    assert (rootfs / escape.lstrip("/") / "inside").is_dir()
