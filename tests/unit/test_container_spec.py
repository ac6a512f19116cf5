"""CreateContainer's OCI spec from CRI messages, on a fixture rootfs (no root needed)."""

from __future__ import annotations

import json
import os
import signal

import pytest

from observe_rt.cri import container_spec as cs
from observe_rt.cri.passwd import ImageUsers, parse_group, parse_passwd, resolve_user
from observe_rt.cri.v1 import api_pb2 as pb
from observe_rt.errors import InvalidArgument
from observe_rt.runtime import capabilities
from observe_rt.runtime import spec as runtime_spec
from observe_rt.runtime.capabilities import CAPABILITIES, DEFAULT_CAPABILITIES
from observe_rt.runtime.seccomp_default import runtime_default_profile
from observe_rt.runtime.spec_default import MASKED_PATHS, READONLY_PATHS

SC = pb.LinuxContainerSecurityContext
IMAGE = {"config": {"Entrypoint": ["/entry"], "Cmd": ["cmd-arg"], "Env": ["IMG=1", "SHARED=image"],
                    "WorkingDir": "/srv", "User": ""}}  # fmt: skip
PASSWD = """root:x:0:0:root:/root:/bin/sh
# a comment
user:x:1000:1000:user:/home/user:/bin/sh
broken line
app:x:1001:3000::/app:/bin/sh
"""
GROUP = """root:x:0:
user:x:1000:
wheel:x:10:user,app
extra:x:2000:
appgrp:x:3000:
"""


@pytest.fixture
def rootfs(tmp_path):
    root = tmp_path / "rootfs"
    (root / "etc").mkdir(parents=True)
    (root / "etc" / "passwd").write_text(PASSWD)
    (root / "etc" / "group").write_text(GROUP)
    return root


def container(**kw) -> pb.ContainerConfig:
    sc = kw.pop("sc", None)
    resources = kw.pop("resources", None)
    linux = pb.LinuxContainerConfig()
    if sc is not None:
        linux.security_context.CopyFrom(sc)
    if resources is not None:
        linux.resources.CopyFrom(resources)
    kw.setdefault("metadata", pb.ContainerMetadata(name="app"))
    kw.setdefault("image", pb.ImageSpec(image="registry.local/busybox:1"))
    return pb.ContainerConfig(linux=linux, **kw)


def sandbox(privileged=False, sysctls=None, ns=None, hostname="pod-host") -> pb.PodSandboxConfig:
    linux = pb.LinuxPodSandboxConfig(sysctls=sysctls or {})
    linux.security_context.privileged = privileged
    if ns is not None:
        linux.security_context.namespace_options.CopyFrom(ns)
    meta = pb.PodSandboxMetadata(name="web", namespace="default", uid="uid-1")
    return pb.PodSandboxConfig(metadata=meta, hostname=hostname, linux=linux)


def build(rootfs, config=None, sb=None, image=IMAGE, **kw):
    args = {"rootfs": str(rootfs), "namespaces": {}, "cgroup_parent": "/kubepods/pod1",
            "container_id": "c1", "sandbox_id": "s1", "hosts_files": {}, "lsms": set()}  # fmt: skip
    args.update(kw)
    return cs.build_container_spec(config or container(), sb or sandbox(), image, **args)


def error(rootfs, *a, **kw) -> str:
    with pytest.raises(InvalidArgument) as info:
        build(rootfs, *a, **kw)
    return str(info.value)


def mount_at(spec, dest):
    return next(m for m in spec["mounts"] if m["destination"] == dest)


# --- the whole spec --------------------------------------------------------------------------


def test_default_spec_passes_executor_validation(rootfs, tmp_path):
    spec = build(rootfs, namespaces={"network": "/proc/self/ns/net", "ipc": "/proc/self/ns/ipc"})
    plan = runtime_spec.build_plan(spec, str(tmp_path), "c1")
    assert plan["process"]["uid"] == 0 and plan["process"]["args"] == ["/entry", "cmd-arg"]
    assert [ns["type"] for ns in spec["linux"]["namespaces"]] == [
        "pid", "network", "ipc", "uts", "mount", "cgroup"]  # fmt: skip
    assert spec["linux"]["cgroupsPath"] == "/kubepods/pod1/c1"
    assert spec["process"]["capabilities"]["bounding"] == sorted(
        DEFAULT_CAPABILITIES, key=CAPABILITIES.index
    )
    assert spec["process"]["capabilities"]["inheritable"] == []
    assert spec["linux"]["maskedPaths"] == list(MASKED_PATHS)
    assert spec["linux"]["readonlyPaths"] == list(READONLY_PATHS)
    assert spec["linux"]["seccomp"] == runtime_default_profile(
        spec["process"]["capabilities"]["bounding"]
    )
    assert spec["process"]["noNewPrivileges"] is False
    assert spec["root"] == {"path": str(rootfs), "readonly": False}
    assert "apparmorProfile" not in spec["process"] and "oomScoreAdj" not in spec["process"]


def test_annotations_and_cgroups_path(rootfs):
    spec = build(rootfs, cgroup_parent="")
    assert spec["linux"]["cgroupsPath"] == "/observe-rt/c1"
    assert spec["annotations"] == {
        "io.kubernetes.cri.container-type": "container",
        "io.kubernetes.cri.sandbox-id": "s1",
        "io.kubernetes.cri.sandbox-name": "web",
        "io.kubernetes.cri.sandbox-namespace": "default",
        "io.kubernetes.cri.sandbox-uid": "uid-1",
        "io.kubernetes.cri.container-name": "app",
        "io.kubernetes.cri.image-name": "registry.local/busybox:1",
    }
    assert "'..'" in error(rootfs, cgroup_parent="/a/../b")
    assert "container id" in error(rootfs, container_id="a/b")


# --- command, env, cwd -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("command", "args", "expected"),
    [
        ([], [], ["/entry", "cmd-arg"]),
        ([], ["x", "y"], ["/entry", "x", "y"]),  # args alone: Entrypoint + args
        (["/bin/sh"], [], ["/bin/sh"]),  # command alone drops the image Cmd
        (["/bin/sh"], ["-c", "true"], ["/bin/sh", "-c", "true"]),
    ],
)
def test_command_and_args_merge_with_image(rootfs, command, args, expected):
    spec = build(rootfs, container(command=command, args=args))
    assert spec["process"]["args"] == expected


def test_image_entrypoint_of_one_empty_string_is_no_entrypoint(rootfs):
    image = {"config": {"Entrypoint": [""], "Cmd": ["/bin/true"]}}
    assert build(rootfs, image=image)["process"]["args"] == ["/bin/true"]


def test_no_command_anywhere_is_invalid(rootfs):
    assert error(rootfs, image={"config": {}}).startswith("command: no command given")
    assert "image config Cmd: must be a list" in error(rootfs, image={"config": {"Cmd": "x"}})


def test_env_image_then_cri_overrides_by_key(rootfs):
    envs = [pb.KeyValue(key="SHARED", value="cri"), pb.KeyValue(key="NEW", value="a=b")]
    env = build(rootfs, container(envs=envs))["process"]["env"]
    assert env == [
        "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
        "HOSTNAME=pod-host", "IMG=1", "SHARED=cri", "NEW=a=b", "HOME=/root",
    ]  # fmt: skip
    image = {"config": {"Env": ["PATH=/custom", "HOME=/img"], "Cmd": ["x"]}}
    env = build(rootfs, image=image)["process"]["env"]
    assert "PATH=/custom" in env and "HOME=/img" in env
    assert "envs[0].key" in error(rootfs, container(envs=[pb.KeyValue(key="A=B", value="1")]))
    assert "envs[0].key" in error(rootfs, container(envs=[pb.KeyValue(key="", value="1")]))


def test_tty_sets_terminal_and_term(rootfs):
    spec = build(rootfs, container(tty=True))
    assert spec["process"]["terminal"] is True and "TERM=xterm" in spec["process"]["env"]


def test_working_dir_cri_then_image_then_root(rootfs):
    assert build(rootfs, container(working_dir="/work/"))["process"]["cwd"] == "/work"
    assert build(rootfs)["process"]["cwd"] == "/srv"
    assert build(rootfs, image={"config": {"Cmd": ["x"]}})["process"]["cwd"] == "/"
    assert error(rootfs, container(working_dir="rel")) == (
        "working_dir: must be absolute, got 'rel'"
    )


def test_image_config_inner_object_is_accepted(rootfs):
    spec = build(rootfs, image={"Cmd": ["/bin/x"], "WorkingDir": "/w"})
    assert spec["process"]["args"] == ["/bin/x"] and spec["process"]["cwd"] == "/w"


# --- users and groups ------------------------------------------------------------------------


def user_of(rootfs, sc=None, image_user="", **kw):
    image = {"config": {"Cmd": ["x"], "User": image_user}}
    spec = build(rootfs, container(sc=sc) if sc else None, image=image, **kw)
    user = spec["process"]["user"]
    home = next(e for e in spec["process"]["env"] if e.startswith("HOME="))
    return user["uid"], user["gid"], user["additionalGids"], home


def test_user_defaults_to_root(rootfs):
    assert user_of(rootfs) == (0, 0, [0], "HOME=/root")


def test_run_as_user_resolves_gid_and_groups(rootfs):
    sc = SC(run_as_user=pb.Int64Value(value=1000))
    assert user_of(rootfs, sc) == (1000, 1000, [10, 1000], "HOME=/home/user")


def test_unknown_uid_runs_with_gid_0(rootfs):
    sc = SC(run_as_user=pb.Int64Value(value=4242))
    assert user_of(rootfs, sc) == (4242, 0, [0], "HOME=/")


def test_run_as_username_and_group(rootfs):
    assert user_of(rootfs, SC(run_as_username="app"))[:3] == (1001, 3000, [10, 3000])
    sc = SC(run_as_username="app", run_as_group=pb.Int64Value(value=2000))
    assert user_of(rootfs, sc)[:3] == (1001, 2000, [10, 2000])
    sc = SC(run_as_user=pb.Int64Value(value=1000), run_as_group=pb.Int64Value(value=0))
    assert user_of(rootfs, sc)[:3] == (1000, 0, [0, 10])


@pytest.mark.parametrize(
    ("image_user", "expected"),
    [("user", (1000, 1000, [10, 1000])), ("1000:2000", (1000, 2000, [10, 2000])),
     ("user:extra", (1000, 2000, [10, 2000])), ("1001:appgrp", (1001, 3000, [10, 3000])),
     ("5000:5000", (5000, 5000, [5000]))],
)  # fmt: skip
def test_image_user_forms(rootfs, image_user, expected):
    assert user_of(rootfs, image_user=image_user)[:3] == expected


def test_supplemental_groups_merge_and_strict(rootfs):
    sc = SC(run_as_user=pb.Int64Value(value=1000), supplemental_groups=[2000, 10])
    assert user_of(rootfs, sc)[2] == [10, 1000, 2000]
    sc.supplemental_groups_policy = pb.Strict
    sc.supplemental_groups[:] = [2000]
    assert user_of(rootfs, sc)[2] == [1000, 2000]


def test_bad_users_name_the_field(rootfs):
    def err(sc=None, image_user=""):
        with pytest.raises(InvalidArgument) as info:
            user_of(rootfs, sc, image_user)
        return str(info.value)

    assert err(SC(run_as_username="ghost")) == (
        f"{cs.SC}.run_as_username: no user 'ghost' in the image's /etc/passwd"
    )
    assert err(image_user="user:nogroup") == (
        "image config User: no group 'nogroup' in the image's /etc/group"
    )
    assert err(SC(run_as_group=pb.Int64Value(value=5))).startswith(f"{cs.SC}.run_as_group:")
    assert err(SC(run_as_user=pb.Int64Value(value=-1))).startswith(f"{cs.SC}.run_as_user:")
    assert err(image_user="a:b:c").startswith("image config User: invalid user")
    sc = SC(run_as_user=pb.Int64Value(value=1), supplemental_groups=[-3])
    assert err(sc).startswith(f"{cs.SC}.supplemental_groups[0]:")


def test_passwd_symlink_cannot_leave_the_rootfs(rootfs, tmp_path):
    host_file = tmp_path / "host-passwd"
    host_file.write_text("evil:x:0:0::/:/bin/sh\n")
    (rootfs / "etc" / "passwd").unlink()
    (rootfs / "etc" / "passwd").symlink_to(host_file)  # absolute: resolved inside the rootfs
    with pytest.raises(InvalidArgument, match="no user 'evil'"):
        user_of(rootfs, SC(run_as_username="evil"))
    (rootfs / "etc" / "passwd").unlink()
    (rootfs / "etc" / "passwd").symlink_to("../../../../../../host-passwd")
    with pytest.raises(InvalidArgument, match="no user 'evil'"):
        user_of(rootfs, SC(run_as_username="evil"))


def test_passwd_fifo_is_refused_without_blocking(rootfs):
    (rootfs / "etc" / "group").unlink()
    os.mkfifo(rootfs / "etc" / "group")
    with pytest.raises(InvalidArgument, match="/etc/group is not a regular file"):
        user_of(rootfs, SC(run_as_user=pb.Int64Value(value=1000)))


def test_missing_passwd_allows_numeric_users_only(tmp_path):
    root = tmp_path / "empty"
    root.mkdir()
    assert resolve_user(ImageUsers(str(root)), "7", "u").gid == 0
    with pytest.raises(ValueError, match="no user 'bob'"):
        resolve_user(ImageUsers(str(root)), "bob", "u")


def test_parsers_skip_malformed_lines():
    assert [e.name for e in parse_passwd(PASSWD + "x:x:notanumber:0::/:/bin/sh\n")] == [
        "root", "user", "app"]  # fmt: skip
    assert parse_group("wheel:x:10: a , b\n")[0].members == ("a", "b")


# --- mounts ----------------------------------------------------------------------------------


def bind(container_path, host_path, **kw) -> pb.Mount:
    return pb.Mount(container_path=container_path, host_path=str(host_path), **kw)


def test_mounts_readonly_sorted_and_overriding_defaults(rootfs, tmp_path):
    (tmp_path / "data").mkdir()
    mounts = [bind("/data/sub", tmp_path / "data"), bind("/data", tmp_path / "data", readonly=True),
              bind("/dev/shm", tmp_path / "data")]  # fmt: skip
    spec = build(rootfs, container(mounts=mounts))
    dests = [m["destination"] for m in spec["mounts"]]
    assert dests.index("/data") < dests.index("/data/sub") and dests.count("/dev/shm") == 1
    assert mount_at(spec, "/data") == {"destination": "/data", "type": "bind",
                                       "source": str(tmp_path / "data"),
                                       "options": ["rbind", "rprivate", "ro"]}  # fmt: skip
    assert mount_at(spec, "/data/sub")["options"][-1] == "rw"
    assert mount_at(spec, "/dev/shm")["type"] == "bind"
    assert "rootfsPropagation" not in spec["linux"]


def test_dev_mount_drops_default_dev_mounts(rootfs):
    spec = build(rootfs, container(mounts=[bind("/dev", "/dev")]))
    assert [m["destination"] for m in spec["mounts"] if m["destination"].startswith("/dev")] == [
        "/dev"]  # fmt: skip


def test_hosts_files_are_bound_and_cri_mounts_win(rootfs, tmp_path):
    files = {}
    for name in ("hosts", "resolv.conf", "hostname"):
        (tmp_path / name).write_text("x\n")
        files[f"/etc/{name}"] = str(tmp_path / name)
    files["/dev/shm"] = str(tmp_path)
    sc = SC(readonly_rootfs=True)
    mounts = [bind("/etc/hosts", tmp_path / "hostname")]
    spec = build(rootfs, container(sc=sc, mounts=mounts), hosts_files=files)
    assert mount_at(spec, "/etc/hosts")["source"] == str(tmp_path / "hostname")
    assert mount_at(spec, "/etc/resolv.conf")["options"] == [
        "rbind", "rprivate", "nosuid", "nodev", "noexec", "ro"]  # fmt: skip
    assert mount_at(spec, "/dev/shm")["options"][-1] == "rw"
    assert spec["root"]["readonly"] is True


@pytest.mark.parametrize(
    ("mount", "message"),
    [
        (bind("data", "/tmp"), "mounts[0].container_path: must be absolute, got 'data'"),
        (bind("/data", "tmp"), "mounts[0].host_path: must be absolute, got 'tmp'"),
        (bind("/data", "/no/such/dir"), "mounts[0].host_path: /no/such/dir does not exist"),
        (bind("/proc", "/tmp"), "mounts[0].container_path: mounting over /proc is not allowed"),
        (bind("/proc/sys/kernel", "/tmp"), "mounting over /proc/sys/kernel is not allowed"),
        (bind("/a/../proc", "/tmp"), "mounting over /proc is not allowed"),
        (bind("/", "/tmp"), "mounting over / is not allowed"),
        (bind("/sys/fs/cgroup", "/tmp"), "/sys/fs/cgroup needs a privileged container"),
        (bind("/x", "/tmp", recursive_read_only=True), "recursive_read_only: not supported"),
    ],
)
def test_bad_mounts_name_the_field(rootfs, mount, message):
    assert message in error(rootfs, container(mounts=[mount]))


def test_image_symlinks_cannot_aim_mounts_at_proc_or_sys(rootfs):
    (rootfs / "proc").mkdir()
    (rootfs / "etc" / "data").symlink_to("/proc")
    (rootfs / "rel").symlink_to("../../../etc/../proc/sys")  # '..' stops at the rootfs
    (rootfs / "dangling").symlink_to("/sys/fs/cgroup")  # missing in the image, mounted later
    (rootfs / "loop").symlink_to("loop")
    for dest, real in (("/etc/data/x", "/proc/x"), ("/rel", "/proc/sys"),
                       ("/dangling", "/sys/fs/cgroup")):  # fmt: skip
        message = error(rootfs, container(mounts=[bind(dest, "/tmp")]))
        assert f"({dest} is {real} in the image): mounting over {real}" in message
    assert "too many symlinks" in error(rootfs, container(mounts=[bind("/loop/x", "/tmp")]))
    (rootfs / "ok").symlink_to("etc")
    spec = build(rootfs, container(mounts=[bind("/ok/sub", "/tmp")]))
    assert mount_at(spec, "/ok/sub")["source"] == os.path.realpath("/tmp")


def test_lxcfs_proc_files_and_privileged_sys_are_allowed(rootfs):
    spec = build(rootfs, container(mounts=[bind("/proc/meminfo", "/proc/meminfo")]))
    assert mount_at(spec, "/proc/meminfo")["source"] == "/proc/meminfo"
    config = container(sc=SC(privileged=True), mounts=[bind("/sys", "/sys")])
    assert mount_at(build(rootfs, config, sandbox(privileged=True)), "/sys")["type"] == "bind"


def test_propagation_modes_and_host_mount_checks(rootfs, tmp_path):
    for name in ("shared", "slave", "private"):
        (tmp_path / name).mkdir()
    info = tmp_path / "mountinfo"
    info.write_text(
        f"22 1 8:1 / / rw shared:1 - ext4 /dev/sda1 rw\n"
        f"30 22 0:5 / {tmp_path}/shared rw shared:7 - tmpfs tmpfs rw\n"
        f"31 22 0:6 / {tmp_path}/slave rw master:7 - tmpfs tmpfs rw\n"
        f"32 22 0:7 / {tmp_path}/private rw - tmpfs tmpfs rw\n"
    )
    h2c, bidi = pb.PROPAGATION_HOST_TO_CONTAINER, pb.PROPAGATION_BIDIRECTIONAL
    mounts = [bind("/a", tmp_path / "slave", propagation=h2c)]
    spec = build(rootfs, container(mounts=mounts), mountinfo=str(info))
    assert mount_at(spec, "/a")["options"] == ["rbind", "rslave", "rw"]
    assert spec["linux"]["rootfsPropagation"] == "rslave"
    mounts.append(bind("/b", tmp_path / "shared", propagation=bidi))
    spec = build(rootfs, container(mounts=mounts), mountinfo=str(info))
    assert mount_at(spec, "/b")["options"][1] == "rshared"
    assert spec["linux"]["rootfsPropagation"] == "rshared"
    bad = [bind("/c", tmp_path / "private", propagation=h2c)]
    assert "mounts[0].propagation" in error(rootfs, container(mounts=bad), mountinfo=str(info))
    bad = [bind("/c", tmp_path / "slave", propagation=bidi)]
    assert "is not shared" in error(rootfs, container(mounts=bad), mountinfo=str(info))


# --- devices ---------------------------------------------------------------------------------


def test_device_from_host_node(rootfs):
    dev = pb.Device(container_path="/dev/mynull", host_path="/dev/null", permissions="rw")
    spec = build(rootfs, container(devices=[dev]))
    node = spec["linux"]["devices"][0]
    assert {k: node[k] for k in ("path", "type", "major", "minor")} == {
        "path": "/dev/mynull", "type": "c", "major": 1, "minor": 3}  # fmt: skip
    rules = spec["linux"]["resources"]["devices"]
    assert rules[0] == {"allow": False, "access": "rwm"}
    assert rules[-1] == {"allow": True, "type": "c", "major": 1, "minor": 3, "access": "rw"}


def test_device_directory_skips_symlinks_and_files(rootfs, tmp_path):
    (tmp_path / "devdir").mkdir()
    (tmp_path / "devdir" / "file").write_text("")
    (tmp_path / "devdir" / "link").symlink_to("/dev/null")
    dev = pb.Device(container_path="/dev/d", host_path=str(tmp_path / "devdir"))
    assert build(rootfs, container(devices=[dev]))["linux"]["devices"] == []


@pytest.mark.parametrize(
    ("device", "message"),
    [
        (pb.Device(container_path="x", host_path="/dev/null"), "devices[0].container_path"),
        (pb.Device(container_path="/x", host_path="/dev/nope"), "/dev/nope does not exist"),
        (pb.Device(container_path="/x", host_path="/etc/hostname"), "is not a device node"),
        (pb.Device(container_path="/x", host_path="/dev/null", permissions="rwx"),
         "devices[0].permissions"),
    ],
)  # fmt: skip
def test_bad_devices(rootfs, device, message):
    assert message in error(rootfs, container(devices=[device]))


# --- privileged, capabilities, paths, seccomp, AppArmor --------------------------------------


def test_privileged_gets_the_capabilities_the_runtime_holds(tmp_path):
    (tmp_path / "self").mkdir()
    (tmp_path / "self" / "status").write_text("Name:\tx\nCapEff:\t000001fffeffffff\n")
    held = capabilities.held(str(tmp_path))
    assert "CAP_SYS_RESOURCE" not in held and "CAP_CHOWN" in held and "CAP_BPF" in held
    assert len(held) == len(CAPABILITIES) - 1


def test_privileged_container(rootfs):
    sc = SC(privileged=True, capabilities=pb.Capability(drop_capabilities=["ALL"]))
    spec = build(rootfs, container(sc=sc), sandbox(privileged=True))
    assert spec["process"]["capabilities"]["bounding"] == list(capabilities.held())
    assert "seccomp" not in spec["linux"]
    assert spec["linux"]["maskedPaths"] == [] and spec["linux"]["readonlyPaths"] == []
    assert "ro" not in mount_at(spec, "/sys")["options"]
    assert "ro" not in mount_at(spec, "/sys/fs/cgroup")["options"]
    assert spec["linux"]["resources"]["devices"] == [{"allow": True, "access": "rwm"}]
    assert any(d["path"] == "/dev/null" for d in spec["linux"]["devices"])
    assert not any(d["path"].startswith("/dev/pts/") for d in spec["linux"]["devices"])
    assert "cgroup" not in [ns["type"] for ns in spec["linux"]["namespaces"]]
    assert error(rootfs, container(sc=sc)) == (
        f"{cs.SC}.privileged: the pod sandbox is not privileged"
    )


def caps_of(rootfs, **kw):
    spec = build(rootfs, container(sc=SC(capabilities=pb.Capability(**kw))))
    return spec["process"]["capabilities"]


def test_capabilities_add_drop(rootfs):
    caps = caps_of(rootfs, add_capabilities=["sys_admin", "CAP_NET_ADMIN"],
                   drop_capabilities=["KILL", "cap_chown"])  # fmt: skip
    assert {"CAP_SYS_ADMIN", "CAP_NET_ADMIN"} <= set(caps["effective"])
    assert not {"CAP_KILL", "CAP_CHOWN"} & set(caps["bounding"])
    assert caps_of(rootfs, add_capabilities=["ALL"], drop_capabilities=["MKNOD"])["bounding"] == [
        c for c in CAPABILITIES if c != "CAP_MKNOD"]  # fmt: skip
    assert caps_of(rootfs, drop_capabilities=["ALL"], add_capabilities=["KILL"])["permitted"] == [
        "CAP_KILL"]  # fmt: skip
    caps = caps_of(rootfs, drop_capabilities=["all"], add_ambient_capabilities=["NET_BIND_SERVICE"])
    assert caps["ambient"] == caps["inheritable"] == caps["bounding"] == ["CAP_NET_BIND_SERVICE"]
    assert error(rootfs, container(sc=SC(capabilities=pb.Capability(
        add_capabilities=["KILL", "FLY"])))) == (
        f"{cs.SC}.capabilities.add_capabilities[1]: unknown capability 'FLY'")  # fmt: skip


def test_seccomp_follows_the_bounding_set(rootfs):
    spec = build(rootfs, container(sc=SC(capabilities=pb.Capability(add_capabilities=["ALL"]))))
    assert spec["linux"]["seccomp"] == runtime_default_profile(list(CAPABILITIES))
    assert spec["linux"]["seccomp"] != runtime_default_profile(list(DEFAULT_CAPABILITIES))


def test_masked_and_readonly_paths_from_cri(rootfs):
    sc = SC(masked_paths=["/proc/foo"], readonly_paths=["/proc/bar/"])
    spec = build(rootfs, container(sc=sc))
    assert spec["linux"]["maskedPaths"] == ["/proc/foo"]
    assert spec["linux"]["readonlyPaths"] == ["/proc/bar"]
    assert error(rootfs, container(sc=SC(masked_paths=["proc"]))) == (
        f"{cs.SC}.masked_paths[0]: must be an absolute path, got 'proc'"
    )


def test_readonly_rootfs_and_no_new_privs(rootfs):
    spec = build(rootfs, container(sc=SC(readonly_rootfs=True, no_new_privs=True)))
    assert spec["root"]["readonly"] is True and spec["process"]["noNewPrivileges"] is True


def seccomp_of(rootfs, **sc):
    return build(rootfs, container(sc=SC(**sc)))["linux"].get("seccomp")


def test_seccomp_profiles(rootfs, tmp_path):
    profile = {"defaultAction": "SCMP_ACT_ALLOW", "archMap": [
        {"architecture": "SCMP_ARCH_X86_64", "subArchitectures": ["SCMP_ARCH_X86"]}],
        "syscalls": [{"names": ["mkdir"], "action": "SCMP_ACT_ERRNO", "comment": "x"}]}  # fmt: skip
    path = tmp_path / "profile.json"
    path.write_text(json.dumps(profile))
    localhost = pb.SecurityProfile(profile_type=pb.SecurityProfile.Localhost,
                                   localhost_ref=str(path))  # fmt: skip
    assert seccomp_of(rootfs, seccomp=localhost) == {
        "defaultAction": "SCMP_ACT_ALLOW",
        "architectures": ["SCMP_ARCH_X86_64", "SCMP_ARCH_X86"],
        "syscalls": [{"names": ["mkdir"], "action": "SCMP_ACT_ERRNO"}],
    }
    unconfined = pb.SecurityProfile(profile_type=pb.SecurityProfile.Unconfined)
    assert seccomp_of(rootfs, seccomp=unconfined) is None
    default = pb.SecurityProfile(profile_type=pb.SecurityProfile.RuntimeDefault)
    assert seccomp_of(rootfs, seccomp=default)["defaultAction"] == "SCMP_ACT_ERRNO"
    assert seccomp_of(rootfs, seccomp_profile_path="unconfined") is None
    assert seccomp_of(rootfs, seccomp_profile_path=f"localhost/{path}")["syscalls"]
    assert seccomp_of(rootfs, seccomp_profile_path="runtime/default")["defaultAction"]


def test_bad_seccomp_profiles(rootfs, tmp_path):
    where = f"{cs.SC}.seccomp.localhost_ref"

    def err(ref):
        sp = pb.SecurityProfile(profile_type=pb.SecurityProfile.Localhost, localhost_ref=ref)
        return error(rootfs, container(sc=SC(seccomp=sp)))

    assert (
        err("rel.json") == f"{where}: must be an absolute path to a seccomp profile, got 'rel.json'"
    )
    assert err(str(tmp_path / "none.json")) == (
        f"{where}: seccomp profile {tmp_path}/none.json does not exist"
    )
    (tmp_path / "bad.json").write_text("{nope")
    assert "is not valid JSON" in err(str(tmp_path / "bad.json"))
    (tmp_path / "wrong.json").write_text('{"defaultAction": "SCMP_ACT_FLY"}')
    assert "linux.seccomp.defaultAction: unknown action" in err(str(tmp_path / "wrong.json"))
    assert error(rootfs, container(sc=SC(seccomp_profile_path="docker/weird"))).startswith(
        f"{cs.SC}.seccomp_profile_path: unknown profile"
    )


def test_apparmor(rootfs):
    local = pb.SecurityProfile(profile_type=pb.SecurityProfile.Localhost, localhost_ref="my-prof")
    spec = build(rootfs, container(sc=SC(apparmor=local)), lsms={"apparmor"})
    assert spec["process"]["apparmorProfile"] == "my-prof"
    spec = build(rootfs, container(sc=SC(apparmor_profile="localhost/other")), lsms={"apparmor"})
    assert spec["process"]["apparmorProfile"] == "other"
    default = pb.SecurityProfile(profile_type=pb.SecurityProfile.RuntimeDefault)
    assert "apparmorProfile" not in build(rootfs, container(sc=SC(apparmor=default)))["process"]
    assert "AppArmor is not enabled" in error(rootfs, container(sc=SC(apparmor=local)))
    assert "unknown profile" in error(rootfs, container(sc=SC(apparmor_profile="x")))


# --- resources -------------------------------------------------------------------------------


def test_resources_map_to_oci(rootfs):
    res = pb.LinuxContainerResources(
        cpu_period=100000, cpu_quota=50000, cpu_shares=512, memory_limit_in_bytes=1 << 26,
        cpuset_cpus="0-1", cpuset_mems="0", oom_score_adj=500, unified={"memory.high": "max"},
        hugepage_limits=[pb.HugepageLimit(page_size="2MB", limit=1 << 21)],
    )  # fmt: skip
    spec = build(rootfs, container(resources=res))
    resources = spec["linux"]["resources"]
    assert resources["cpu"] == {"period": 100000, "quota": 50000, "shares": 512,
                                "cpus": "0-1", "mems": "0"}  # fmt: skip
    assert resources["memory"] == {"limit": 1 << 26, "swap": 1 << 26}
    assert resources["unified"] == {"memory.high": "max"} and "hugepageLimits" not in resources
    assert spec["process"]["oomScoreAdj"] == 500
    res = pb.LinuxContainerResources(memory_limit_in_bytes=1 << 26, memory_swap_limit_in_bytes=-1)
    assert build(rootfs, container(resources=res))["linux"]["resources"]["memory"]["swap"] == -1


@pytest.mark.parametrize(
    ("res", "message"),
    [
        (pb.LinuxContainerResources(cpu_shares=-2), "linux.resources.cpu_shares: must be"),
        (pb.LinuxContainerResources(cpu_quota=500), "linux.resources.cpu_quota: must be at least"),
        (pb.LinuxContainerResources(cpuset_cpus="a-b"), "linux.resources.cpuset_cpus: must be"),
        (pb.LinuxContainerResources(memory_limit_in_bytes=1 << 26,
                                    memory_swap_limit_in_bytes=1 << 20),
         "linux.resources.memory_swap_limit_in_bytes: memory+swap"),
        (pb.LinuxContainerResources(oom_score_adj=2000), "linux.resources.oom_score_adj"),
    ],
)  # fmt: skip
def test_bad_resources(rootfs, res, message):
    assert message in error(rootfs, container(resources=res))


# --- namespaces, hostname, sysctls -----------------------------------------------------------


def ns_of(spec) -> dict[str, str]:
    return {ns["type"]: ns.get("path", "") for ns in spec["linux"]["namespaces"]}


def test_namespace_modes(rootfs):
    paths = {t: f"/proc/self/ns/{t[:3]}" for t in ("network", "ipc", "uts", "pid")}
    opts = pb.NamespaceOption(network=pb.NODE, pid=pb.POD, ipc=pb.CONTAINER)
    spec = build(rootfs, container(sc=SC(namespace_options=opts)), namespaces=paths)
    assert ns_of(spec) == {"pid": paths["pid"], "ipc": "", "mount": "", "cgroup": ""}
    assert "hostname" not in spec  # the node's uts
    # The container has no options of its own: the pod's apply.
    spec = build(rootfs, sb=sandbox(ns=pb.NamespaceOption(pid=pb.CONTAINER)), namespaces=paths)
    assert ns_of(spec)["pid"] == "" and ns_of(spec)["network"] == paths["network"]
    assert "hostname" not in spec  # the pod's uts already has it
    spec = build(rootfs, namespaces={"network": paths["network"]})
    assert spec["hostname"] == "pod-host" and ns_of(spec)["uts"] == ""
    opts = pb.NamespaceOption(pid=pb.TARGET, target_id="other")
    spec = build(rootfs, container(sc=SC(namespace_options=opts)), namespaces={"pid": "/x/pid"})
    assert ns_of(spec)["pid"] == "/x/pid"
    assert "target_id: no pid namespace for 'other'" in error(
        rootfs, container(sc=SC(namespace_options=opts))
    )
    opts = pb.NamespaceOption(network=pb.TARGET)
    assert "TARGET is only valid" in error(rootfs, container(sc=SC(namespace_options=opts)))
    userns = pb.UserNamespace(mode=pb.POD, uids=[pb.IDMapping(host_id=1, length=1)])
    opts = pb.NamespaceOption(userns_options=userns)
    assert "user namespaces" in error(rootfs, container(sc=SC(namespace_options=opts)))
    assert "must be an absolute path" in error(rootfs, namespaces={"ipc": "ns/ipc"})


def test_sysctls_only_for_namespaces_the_container_makes(rootfs):
    sysctls = {"kernel.shm_rmid_forced": "1", "net.ipv4.ip_forward": "1"}
    spec = build(rootfs, sb=sandbox(sysctls=sysctls), namespaces={"network": "/proc/self/ns/net"})
    assert spec["linux"]["sysctl"] == {"kernel.shm_rmid_forced": "1"}  # net: set on the pod
    node_net = sandbox(sysctls=sysctls, ns=pb.NamespaceOption(network=pb.NODE))
    assert "['net.ipv4.ip_forward']: the pod uses the node's network namespace" in error(
        rootfs, sb=node_net
    )
    assert "not a namespaced sysctl" in error(rootfs, sb=sandbox(sysctls={"vm.swappiness": "1"}))
    assert "separator" in error(rootfs, sb=sandbox(sysctls={"kernel.sem": "1+2"}))


# --- stop signal -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [(None, signal.SIGTERM), ("SIGKILL", signal.SIGKILL), ("quit", signal.SIGQUIT), ("9", 9),
     ("SIGRTMIN+3", signal.SIGRTMIN + 3), ("RTMAX-1", signal.SIGRTMAX - 1)],
)  # fmt: skip
def test_stop_signal_from_image(value, expected):
    assert cs.stop_signal({"config": {"StopSignal": value} if value else {}}) == expected


def test_stop_signal_cri_override_and_errors():
    config = pb.ContainerConfig(stop_signal=pb.SIGUSR1)
    assert cs.stop_signal({"config": {"StopSignal": "SIGINT"}}, config) == signal.SIGUSR1
    config.stop_signal = pb.SIGRTMINPLUS1
    assert cs.stop_signal({}, config) == signal.SIGRTMIN + 1
    for bad in ("SIGFLY", "0", "999", "SIGRTMIN+x", "SIG_DFL"):
        with pytest.raises(InvalidArgument, match="image config StopSignal: unknown signal"):
            cs.stop_signal({"config": {"StopSignal": bad}})
