"""Malformed bundles fail `create` with a message naming the field, and leave nothing behind:
no state, cgroup, process or mount."""

from __future__ import annotations

import os

import pytest

from observe_rt.runtime.executor import INIT_SCRIPT
from tests.support.bundles import cgroup_dirs

pytestmark = pytest.mark.root


def _set(path: list, value):
    def mutate(spec):
        target = spec
        for key in path[:-1]:
            target = target[key]
        target[path[-1]] = value

    return mutate


def _init_processes() -> set[int]:
    found = set()
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/cmdline", "rb") as f:
                    if INIT_SCRIPT.encode() in f.read():
                        found.add(int(entry))
            except OSError:
                pass
    return found


# (what is wrong, how to break the spec, what the message must name)
VALIDATION_CASES = [
    ("unknown namespace", _set(["linux", "namespaces", 0], {"type": "foo"}),
     "linux.namespaces[0].type: unknown namespace type 'foo'"),
    ("relative mount destination", _set(["mounts", 0, "destination"], "proc"),
     "mounts[0].destination: must be an absolute path"),
    ("missing rootfs", _set(["root", "path"], "/nonexistent/rootfs"), "root.path"),
    ("bad capability", _set(["process", "capabilities", "bounding"], ["CAP_FLY"]),
     "process.capabilities.bounding[0]: unknown capability 'CAP_FLY'"),
    ("host sysctl", _set(["linux", "sysctl"], {"kernel.core_pattern": "|/bin/x"}),
     "linux.sysctl['kernel.core_pattern']: not a namespaced sysctl"),
    ("sysctl injection", _set(["linux", "sysctl"],
                              {"kernel.shm_rmid_forced": "1+kernel.core_pattern=|/x"}),
     "contains a separator"),
    ("negative memory", _set(["linux", "resources"], {"memory": {"limit": -5}}),
     "linux.resources.memory.limit"),
    ("bad seccomp action", _set(["linux", "seccomp"], {"defaultAction": "SCMP_ACT_FLY"}),
     "linux.seccomp.defaultAction"),
    ("empty args", _set(["process", "args"], []), "process.args"),
    ("relative cwd", _set(["process", "cwd"], "tmp"), "process.cwd"),
    ("apparmor absent", _set(["process", "apparmorProfile"], "runtime-default"),
     "process.apparmorProfile: AppArmor is not enabled"),
    ("selinux absent", _set(["process", "selinuxLabel"], "system_u:system_r:container_t:s0"),
     "process.selinuxLabel: SELinux is not enabled"),
    ("dotdot cgroup path", _set(["linux", "cgroupsPath"], "/a/../../etc"), "cgroupsPath"),
]  # fmt: skip

# Failures only the init helper can discover, after cgroups and processes exist.
INIT_CASES = [
    ("missing executable", _set(["process", "args"], ["/bin/nonexistent"]),
     'exec: "/bin/nonexistent": executable file not found'),
    ("unknown filesystem", lambda s: s["mounts"].append(
        {"destination": "/mnt", "type": "nosuchfs", "source": "x", "options": []}),
     "mount x on"),
    ("missing cwd", _set(["process", "cwd"], "/does/not/exist"), "/does/not/exist"),
]  # fmt: skip


@pytest.mark.parametrize(
    "mutate,expected", [c[1:] for c in VALIDATION_CASES + INIT_CASES],
    ids=[c[0] for c in VALIDATION_CASES + INIT_CASES],
)  # fmt: skip
def test_bad_config_fails_create_and_leaves_nothing(ort, bundles, mutate, expected):
    before = _init_processes()
    spec = bundles.spec(["true"])
    mutate(spec)
    container_id, bundle = bundles.write(spec)
    result = ort("create", container_id, "--bundle", str(bundle))
    assert result.returncode != 0
    assert expected in result.stderr, result.stderr
    assert not (ort.root / container_id).exists()
    assert ort("list").stdout.count("\n") == 1  # only the header
    assert cgroup_dirs(f"{bundles.cgroup_parent}/{container_id}") == []
    assert _init_processes() <= before


def test_missing_config_json(ort, tmp_path):
    result = ort("create", "c1", "--bundle", str(tmp_path))
    assert result.returncode != 0 and "no config.json" in result.stderr


def test_duplicate_id_is_refused_and_keeps_the_first(ort, bundles):
    spec = bundles.spec(["sleep", "60"])
    container_id, bundle = bundles.write(spec)
    ort("create", container_id, "--bundle", str(bundle), check=True)
    again = ort("create", container_id, "--bundle", str(bundle))
    assert again.returncode != 0 and "already exists" in again.stderr
    assert '"status": "created"' in ort("state", container_id, check=True).stdout


def test_bad_id_and_unknown_container(ort):
    assert "container id" in ort("create", "../escape", "--bundle", "/").stderr
    missing = ort("state", "nope")
    assert missing.returncode != 0 and "does not exist" in missing.stderr
