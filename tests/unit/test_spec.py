"""config.json validation and the init plan, on fixture bundles (no root)."""

from __future__ import annotations

import json

import pytest

from observe_rt.errors import InvalidArgument
from observe_rt.host import libc
from observe_rt.runtime import mountopts, spec, sysctl
from observe_rt.runtime.capabilities import CAP_NUMBER, DEFAULT_CAPABILITIES
from observe_rt.runtime.spec_default import default_spec
from observe_rt.runtime.state import StateRoot, check_id, process_alive, process_start_time


@pytest.fixture
def bundle(tmp_path):
    (tmp_path / "rootfs").mkdir()
    return tmp_path


def plan_of(bundle, mutate=None):
    config = default_spec(["sh"])
    if mutate:
        mutate(config)
    return spec.build_plan(config, str(bundle), "c1")


def test_default_spec_plan(bundle):
    plan = plan_of(bundle)
    assert plan["rootfs"]["path"] == str(bundle / "rootfs")
    assert {ns["type"] for ns in plan["namespaces"]} == {
        "pid", "network", "ipc", "uts", "mount", "cgroup"}  # fmt: skip
    caps = plan["process"]["capabilities"]
    assert caps["bounding"] == sum(1 << CAP_NUMBER[c] for c in DEFAULT_CAPABILITIES)
    assert caps["ambient"] == 0
    proc = next(m for m in plan["mounts"] if m["destination"] == "/proc")
    assert proc["flags"] == libc.MS_NOSUID | libc.MS_NOEXEC | libc.MS_NODEV
    assert plan["process"]["no_new_privileges"] is True
    assert "/proc/keys" in plan["masked_paths"] and "/proc/sys" in plan["readonly_paths"]
    json.dumps(plan)  # the plan crosses a socket as JSON


@pytest.mark.parametrize(
    "mutate,field",
    [
        (lambda s: s["linux"]["namespaces"].append({"type": "time"}), "linux.namespaces[6].type"),
        (lambda s: s["linux"]["namespaces"].append({"type": "pid"}), "listed twice"),
        (lambda s: s["linux"]["namespaces"].__setitem__(0, {"type": "pid", "path": "rel"}),
         "linux.namespaces[0].path: must be absolute"),
        (lambda s: s["mounts"].append({"destination": "/x", "type": "bind", "source": "rel",
                                        "options": ["rbind"]}), "mounts[7].source"),
        (lambda s: s["process"]["user"].__setitem__("uid", -1), "process.user.uid"),
        (lambda s: s["process"].__setitem__("env", ["NOEQUALS"]), "process.env[0]"),
        (lambda s: s["process"].__setitem__("rlimits", [{"type": "RLIMIT_FLY", "soft": 1,
                                                         "hard": 1}]), "process.rlimits[0].type"),
        (lambda s: s["process"].__setitem__("rlimits", [{"type": "RLIMIT_NOFILE", "soft": 9,
                                                         "hard": 1}]), "above hard limit"),
        (lambda s: s["linux"].__setitem__("namespaces", [{"type": "mount"}]), "hostname"),
        (lambda s: s["linux"]["namespaces"].append({"type": "user"}), "linux.uidMappings"),
        (lambda s: s["linux"].__setitem__("rootfsPropagation", "sideways"), "rootfsPropagation"),
        (lambda s: s.pop("process"), "process: required"),
    ],
)  # fmt: skip
def test_invalid_specs_name_the_field(bundle, mutate, field):
    with pytest.raises(InvalidArgument, match=None) as err:
        plan_of(bundle, mutate)
    assert field in str(err.value)


def test_load_bundle_errors(tmp_path):
    with pytest.raises(InvalidArgument, match="no config.json"):
        spec.load_bundle(str(tmp_path))
    (tmp_path / "config.json").write_text("{nope")
    with pytest.raises(InvalidArgument, match="not valid JSON"):
        spec.load_bundle(str(tmp_path))


def test_mount_options():
    flags, propagation, data = mountopts.parse(
        ["nosuid", "ro", "rw", "rbind", "rprivate", "mode=755", "size=1k", "tmpcopyup"]
    )
    assert flags == libc.MS_NOSUID | libc.MS_BIND | libc.MS_REC  # rw cleared ro
    assert propagation == [libc.MS_PRIVATE | libc.MS_REC]
    assert data == "mode=755,size=1k"


@pytest.mark.parametrize(
    "key,value,namespaces,message",
    [
        ("kernel.core_pattern", "x", {"ipc"}, "not a namespaced sysctl"),
        ("kernel.shmmax", "1", set(), "needs a new ipc namespace"),
        ("net.ipv4.ip_forward", "1", {"ipc"}, "needs a new network namespace"),
        ("kernel.shm_rmid_forced", "1\nkernel.core_pattern=x", {"ipc"}, "separator"),
        ("net.ipv4.conf.all.forwarding", "1+x", {"network"}, "separator"),
        ("net/../../kernel/core_pattern", "x", {"network"}, "malformed key"),
    ],
)  # fmt: skip
def test_sysctl_rejections(key, value, namespaces, message):
    with pytest.raises(ValueError, match=message):
        sysctl.validate({key: value}, namespaces)


def test_sysctl_paths():
    sysctl.validate({"net.ipv4.ip_unprivileged_port_start": "0", "fs.mqueue.msg_max": "20",
                     "net/ipv4/conf/eth0.100/rp_filter": "1"}, {"network", "ipc"})  # fmt: skip
    assert sysctl.proc_path("kernel.shm_rmid_forced") == "kernel/shm_rmid_forced"
    assert (
        sysctl.proc_path("net/ipv4/conf/eth0.100/rp_filter") == "net/ipv4/conf/eth0.100/rp_filter"
    )


def test_ids():
    check_id("abc-1.2_x")
    for bad in ("", "../x", "a/b", "-a", "x" * 200):
        with pytest.raises(InvalidArgument):
            check_id(bad)


def _fake_proc(tmp_path, pid, state_char, start):
    d = tmp_path / str(pid)
    d.mkdir()
    fields = [state_char] + ["0"] * 18 + [str(start)] + ["0"] * 20
    (d / "stat").write_text(f"{pid} (odd) name) {' '.join(fields)}\n")


def test_process_identity_from_proc(tmp_path):
    _fake_proc(tmp_path, 10, "S", 555)
    _fake_proc(tmp_path, 11, "Z", 556)
    assert process_start_time(10, str(tmp_path)) == 555
    assert process_alive(10, 555, str(tmp_path))
    assert not process_alive(10, 554, str(tmp_path))  # pid reused by another process
    assert not process_alive(11, 556, str(tmp_path))  # zombie: exited
    assert not process_alive(12, 1, str(tmp_path))


def test_state_root_missing_container(tmp_path):
    from observe_rt.errors import NotFound

    with pytest.raises(NotFound, match="does not exist"):
        StateRoot(str(tmp_path)).load("nope")
    assert StateRoot(str(tmp_path / "absent")).ids() == []
