"""Same bundle, same behaviour: each scenario runs under observe-rt and under runc, and what
the workload observes from inside must match."""

from __future__ import annotations

import pytest

from observe_rt.runtime.seccomp_default import runtime_default_profile

# What a workload can see of its own confinement, one fact per line.
OBSERVE = r"""
id
hostname
grep -E '^(Cap(Inh|Prm|Eff|Bnd|Amb)|NoNewPrivs|Seccomp):' /proc/self/status
(ls /proc/1/fd) > /dev/shm/fds; echo "fds: $(tr '\n' ' ' < /dev/shm/fds)"
for p in /proc/kcore /proc/keys /proc/timer_list /proc/sched_debug /sys/firmware /proc/acpi \
         /proc/scsi /proc/bus /proc/fs /proc/irq /proc/sys/kernel/domainname /proc/sysrq-trigger; do
  if [ -d "$p" ]; then echo "$p dir entries=$(ls -A $p 2>/dev/null | wc -l)";
  elif [ -e "$p" ]; then echo "$p file bytes=$(head -c 16 $p 2>/dev/null | wc -c)";
  else echo "$p absent"; fi
done
(echo test > /proc/sys/kernel/domainname) 2>&1 | sed 's/.*: //'
(touch /proc/fs/x) 2>&1 | sed 's/.*: //'
echo "umask $(umask) nofile $(ulimit -n)"
ls -l /dev | awk '{print $1, $3, $4, $5, $6, $NF}'
(echo x > /etc/observe-rt-probe && echo rootfs-writable && rm /etc/observe-rt-probe) 2>&1 \
  | sed 's/.*: //'
"""

# The mount table as (mount point, fs type, ro|rw), sorted.
MOUNTS = r"""awk '{ split($6, o, ","); for (i = 1; i <= NF; i++) if ($i == "-") t = $(i+1);
  print $5, t, o[1] }' /proc/self/mountinfo | sort"""

LIMITS = r"""
for f in memory/memory.limit_in_bytes memory.max cpu/cpu.cfs_quota_us cpu/cpu.cfs_period_us \
         cpu.max pids/pids.max pids.max cpu/cpu.shares cpu.weight; do
  [ -f /sys/fs/cgroup/$f ] && echo "$f $(cat /sys/fs/cgroup/$f)"
done
cat /proc/self/cgroup
"""


def run_both(ort, runc, bundles, spec) -> tuple:
    container_id, bundle = bundles.write(spec)
    ours = ort("run", container_id, "--bundle", str(bundle))
    runc_id, runc_bundle = bundles.write(spec)
    theirs = runc("run", runc_id, cwd=str(runc_bundle))
    return ours, theirs


def assert_same(ours, theirs) -> None:
    assert theirs.returncode == ours.returncode, (ours.stderr, theirs.stderr)
    assert ours.stdout == theirs.stdout, f"observe-rt:\n{ours.stdout}\nrunc:\n{theirs.stdout}"


@pytest.mark.root
def test_default_spec_confinement_matches_runc(ort, runc, bundles):
    spec = bundles.spec(["sh", "-c", OBSERVE], seccomp=runtime_default_profile())
    ours, theirs = run_both(ort, runc, bundles, spec)
    assert_same(ours, theirs)
    assert "NoNewPrivs:\t1" in ours.stdout and "Seccomp:\t2" in ours.stdout
    assert "CapEff:\t00000000a80425fb" in ours.stdout  # the 14 default capabilities
    assert "/proc/keys file bytes=0" in ours.stdout  # masked with /dev/null
    assert "Read-only file system" in ours.stdout
    assert "fds: 0 1 2 \n" in ours.stdout  # no leaked descriptors


@pytest.mark.root
def test_mount_table_matches_runc(ort, runc, bundles):
    ours, theirs = run_both(ort, runc, bundles, bundles.spec(["sh", "-c", MOUNTS]))
    # One deliberate difference: runc 1.1 leaves the /sys/fs/cgroup tmpfs writable although
    # the mount says "ro"; observe-rt honours the option.
    theirs.stdout = theirs.stdout.replace("/sys/fs/cgroup tmpfs rw", "/sys/fs/cgroup tmpfs ro")
    assert_same(ours, theirs)
    assert (
        "/sys/fs/cgroup/memory cgroup ro" in ours.stdout or "/sys/fs/cgroup cgroup2" in ours.stdout
    )
    assert "/ overlay" not in ours.stdout  # the rootfs is a bind mount of a plain directory
    assert "/proc proc rw" in ours.stdout


@pytest.mark.root
def test_non_root_user_and_readonly_rootfs_match_runc(ort, runc, bundles):
    spec = bundles.spec(["sh", "-c", OBSERVE])
    spec["process"]["user"] = {"uid": 1000, "gid": 1000, "additionalGids": [2000], "umask": 0o077}
    spec["process"]["capabilities"]["ambient"] = ["CAP_NET_BIND_SERVICE"]
    spec["process"]["capabilities"]["inheritable"] = ["CAP_NET_BIND_SERVICE"]
    spec["root"]["readonly"] = True
    spec["hostname"] = "parity-host"
    ours, theirs = run_both(ort, runc, bundles, spec)
    assert_same(ours, theirs)
    assert "uid=1000(user) gid=1000(user) groups=2000(extra)" in ours.stdout
    assert "CapAmb:\t0000000000000400" in ours.stdout
    assert "parity-host" in ours.stdout


@pytest.mark.root
def test_cgroup_limits_match_runc(ort, runc, bundles):
    spec = bundles.spec(["sh", "-c", LIMITS])
    spec["linux"]["resources"] = {
        "memory": {"limit": 64 * 1024 * 1024},
        "cpu": {"shares": 512, "quota": 50000, "period": 100000},
        "pids": {"limit": 64},
    }
    ours, theirs = run_both(ort, runc, bundles, spec)
    assert_same(ours, theirs)
    assert "pids" in ours.stdout and " 64" in ours.stdout
    assert str(64 * 1024 * 1024) in ours.stdout


@pytest.mark.root
@pytest.mark.parametrize("code", [0, 3, 255])
def test_exit_codes_match_runc(ort, runc, bundles, code):
    ours, theirs = run_both(ort, runc, bundles, bundles.spec(["sh", "-c", f"exit {code}"]))
    assert ours.returncode == theirs.returncode == code


@pytest.mark.root
def test_sysctl_and_seccomp_block_match_runc(ort, runc, bundles):
    # CAP_SYS_ADMIN is granted, so only the seccomp profile can refuse mount and unshare.
    spec = bundles.spec(
        ["sh", "-c", "cat /proc/sys/kernel/shm_rmid_forced; mount -t tmpfs t /mnt; unshare -u true;"
         " echo done"],
        seccomp=runtime_default_profile(),
    )  # fmt: skip
    spec["process"]["capabilities"]["bounding"].append("CAP_SYS_ADMIN")
    spec["process"]["capabilities"]["effective"].append("CAP_SYS_ADMIN")
    spec["process"]["capabilities"]["permitted"].append("CAP_SYS_ADMIN")
    spec["linux"]["sysctl"] = {"kernel.shm_rmid_forced": "1"}
    ours, theirs = run_both(ort, runc, bundles, spec)
    assert_same(ours, theirs)
    assert ours.stdout.splitlines()[0] == "1"
    assert "mount: permission denied" in ours.stderr  # busybox words EPERM from mount(2) so
    assert "unshare(0x4000000): Operation not permitted" in ours.stderr


@pytest.mark.root
def test_bind_mounts_with_flags_match_runc(ort, runc, bundles, tmp_path):
    shared = tmp_path / "shared"
    shared.mkdir()
    (shared / "data").write_text("from the host\n")
    spec = bundles.spec(["sh", "-c", "cat /ro/data; (echo x > /ro/new) 2>&1 | sed 's/.*: //';"
                         " grep -E ' /(ro|rw) ' /proc/self/mountinfo | awk '{print $5, $6}';"
                         " echo y > /rw/new && echo wrote"])  # fmt: skip
    spec["mounts"] += [
        {"destination": "/ro", "type": "bind", "source": str(shared),
         "options": ["rbind", "ro", "nosuid", "nodev", "noexec", "rprivate"]},
        {"destination": "/rw", "type": "none", "source": str(shared),
         "options": ["bind", "rw", "rslave"]},
    ]  # fmt: skip
    ours, theirs = run_both(ort, runc, bundles, spec)
    assert_same(ours, theirs)
    assert ours.stdout.splitlines()[:2] == ["from the host", "Read-only file system"]
    assert "/ro ro,nosuid,nodev,noexec" in ours.stdout and "wrote" in ours.stdout


@pytest.mark.root
def test_device_cgroup_matches_runc(ort, runc, bundles):
    """Deny every device but /dev/null: creating and opening a disk node fails under both."""
    script = ("rm -f /tmp/sda; mknod /tmp/sda b 8 0 && (head -c1 /tmp/sda >/dev/null 2>&1"
              " && echo disk-read || echo disk-denied); rm -f /tmp/sda;"
              " echo ok > /dev/null && echo null-ok")  # fmt: skip
    spec = bundles.spec(["sh", "-c", script])
    spec["linux"]["resources"] = {"devices": [
        {"allow": False, "access": "rwm"},
        {"allow": True, "type": "c", "major": 1, "minor": 3, "access": "rwm"},
    ]}  # fmt: skip
    ours, theirs = run_both(ort, runc, bundles, spec)
    assert_same(ours, theirs)
    assert "disk-read" not in ours.stdout and "null-ok" in ours.stdout
