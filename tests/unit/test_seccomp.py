"""Seccomp profile validation, planning and the RuntimeDefault profile (no root, no kernel load)."""

from __future__ import annotations

import copy
import ctypes.util
import errno

import pytest

from observe_rt.runtime import seccomp
from observe_rt.runtime.seccomp_default import (
    BASE_ALLOW,
    DEFAULT_CAPABILITIES,
    runtime_default_profile,
)

X86_64 = {"machine": "x86_64", "kernel_release": "6.18.44"}
CLONE_NEWNS, CLONE_NEWUSER, CLONE_NEWNET = 0x00020000, 0x10000000, 0x40000000
SIGCHLD = 17
CLONE_THREAD_FLAGS = 0x003D0F00  # what glibc's pthread_create passes


def _words(text: str) -> list[str]:
    return text.split()


_COMPARE = {
    "SCMP_CMP_NE": lambda arg, a, _b: arg != a,
    "SCMP_CMP_LT": lambda arg, a, _b: arg < a,
    "SCMP_CMP_LE": lambda arg, a, _b: arg <= a,
    "SCMP_CMP_EQ": lambda arg, a, _b: arg == a,
    "SCMP_CMP_GE": lambda arg, a, _b: arg >= a,
    "SCMP_CMP_GT": lambda arg, a, _b: arg > a,
    "SCMP_CMP_MASKED_EQ": lambda arg, a, b: arg & a == b,
}


def decide(profile: dict, name: str, *args: int) -> tuple[str, int | None]:
    """What the profile does to syscall `name`: the first matching entry wins (enough here)."""
    for entry in profile.get("syscalls", ()):
        if name in entry["names"] and all(_matches(cond, args) for cond in entry.get("args", ())):
            return entry["action"], entry.get("errnoRet")
    return profile["defaultAction"], profile.get("defaultErrnoRet")


def _matches(cond: dict, args: tuple[int, ...]) -> bool:
    arg = args[cond["index"]] if cond["index"] < len(args) else 0
    return _COMPARE[cond["op"]](arg, cond["value"], cond.get("valueTwo", 0))


EPERM = ("SCMP_ACT_ERRNO", errno.EPERM)
ENOSYS = ("SCMP_ACT_ERRNO", errno.ENOSYS)
ALLOW = ("SCMP_ACT_ALLOW", None)


# ---------------------------------------------------------------- validate


@pytest.mark.parametrize("machine", ["x86_64", "aarch64", "riscv64"])
def test_default_profile_validates(machine):
    for caps in (None, [], ["CAP_SYS_ADMIN", "CAP_BPF", "CAP_SYS_PTRACE", "CAP_PERFMON"]):
        seccomp.validate(runtime_default_profile(caps, machine=machine))


def _bad(mutate):
    profile = copy.deepcopy(
        {
            "defaultAction": "SCMP_ACT_ERRNO",
            "architectures": ["SCMP_ARCH_X86_64"],
            "syscalls": [
                {"names": ["read"], "action": "SCMP_ACT_ALLOW"},
                {"names": ["write"], "action": "SCMP_ACT_ALLOW"},
                {"names": ["close"], "action": "SCMP_ACT_ALLOW"},
                {
                    "names": ["personality"],
                    "action": "SCMP_ACT_ALLOW",
                    "args": [{"index": 0, "value": 8, "op": "SCMP_CMP_EQ"}],
                },
            ],
        }
    )
    mutate(profile)
    return profile


def _set(path, value):
    def mutate(profile):
        target = profile
        for key in path[:-1]:
            target = target[key]
        target[path[-1]] = value

    return mutate


def _delete(*path):
    def mutate(profile):
        target = profile
        for key in path[:-1]:
            target = target[key]
        del target[path[-1]]

    return mutate


BAD_CASES = [
    (_delete("defaultAction"), "linux.seccomp.defaultAction: is required"),
    (_set(["defaultAction"], "SCMP_ACT_NOPE"), 'defaultAction: unknown action "SCMP_ACT_NOPE"'),
    (_set(["defaultAction"], "SCMP_ACT_NOTIFY"), "defaultAction: SCMP_ACT_NOTIFY needs a seccomp"),
    (_set(["defaultAction"], ["SCMP_ACT_ALLOW"]), 'defaultAction: unknown action ["SCMP_ACT'),
    (_set(["defaultErrnoRet"], -1), "linux.seccomp.defaultErrnoRet: must be an integer"),
    (_set(["defaultErrnoRet"], True), "linux.seccomp.defaultErrnoRet: must be an integer"),
    (_set(["defaultErrnoRet"], 70000), "linux.seccomp.defaultErrnoRet: must be an integer"),
    (_set(["architectures"], "SCMP_ARCH_X86_64"), "linux.seccomp.architectures: must be a list"),
    (
        _set(["architectures", 0], "SCMP_ARCH_Z80"),
        'architectures[0]: unknown value "SCMP_ARCH_Z80"',
    ),
    (_set(["flags"], ["SECCOMP_FILTER_FLAG_NOPE"]), "linux.seccomp.flags[0]: unknown value"),
    (
        _set(["flags"], ["SECCOMP_FILTER_FLAG_LOG", "SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV"]),
        "linux.seccomp.flags[1]: SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV only applies",
    ),
    (_set(["listenerPath"], "/run/agent.sock"), "linux.seccomp.listenerPath: seccomp agents are"),
    (_set(["listenerMetadata"], "x"), "linux.seccomp.listenerMetadata: seccomp agents are"),
    (_set(["syscalls"], {"names": ["read"]}), "linux.seccomp.syscalls: must be a list"),
    (_set(["syscalls", 2], "close"), "linux.seccomp.syscalls[2]: must be an object"),
    (
        _set(["syscalls", 3, "action"], "SCMP_ACT_FOO"),
        'linux.seccomp.syscalls[3].action: unknown action "SCMP_ACT_FOO"',
    ),
    (
        _set(["syscalls", 1, "action"], "SCMP_ACT_NOTIFY"),
        "linux.seccomp.syscalls[1].action: SCMP_ACT_NOTIFY needs a seccomp agent",
    ),
    (_delete("syscalls", 0, "action"), "linux.seccomp.syscalls[0].action: is required"),
    (_delete("syscalls", 0, "names"), "linux.seccomp.syscalls[0].names: must be a non-empty"),
    (_set(["syscalls", 0, "names"], []), "linux.seccomp.syscalls[0].names: must be a non-empty"),
    (
        _set(["syscalls", 0, "names"], "read"),
        "linux.seccomp.syscalls[0].names: must be a non-empty",
    ),
    (_set(["syscalls", 0, "names"], ["read", 3]), "linux.seccomp.syscalls[0].names[1]: must be"),
    (_set(["syscalls", 0, "errnoRet"], 38), "syscalls[0].errnoRet: not allowed with action"),
    (_set(["syscalls", 3, "args"], {"index": 0}), "linux.seccomp.syscalls[3].args: must be a list"),
    (_set(["syscalls", 3, "args", 0, "index"], 6), "syscalls[3].args[0].index: must be an integer"),
    (_delete("syscalls", 3, "args", 0, "index"), "syscalls[3].args[0].index: is required"),
    (_delete("syscalls", 3, "args", 0, "value"), "syscalls[3].args[0].value: is required"),
    (_set(["syscalls", 3, "args", 0, "value"], -1), "syscalls[3].args[0].value: must be"),
    (_set(["syscalls", 3, "args", 0, "value"], 2**64), "syscalls[3].args[0].value: must be"),
    (_set(["syscalls", 3, "args", 0, "value"], "8"), "syscalls[3].args[0].value: must be"),
    (_set(["syscalls", 3, "args", 0, "valueTwo"], 1.5), "syscalls[3].args[0].valueTwo: must be"),
    (
        _set(["syscalls", 3, "args", 0, "op"], "SCMP_CMP_LIKE"),
        'syscalls[3].args[0].op: unknown operator "SCMP_CMP_LIKE"',
    ),
    (_set(["syscalls", 3, "args", 0, "op"], {}), "syscalls[3].args[0].op: unknown operator {}"),
    (_delete("syscalls", 3, "args", 0, "op"), "syscalls[3].args[0].op: unknown operator null"),
]


@pytest.mark.parametrize(("mutate", "message"), BAD_CASES)
def test_validate_rejects_with_field_path(mutate, message):
    with pytest.raises(ValueError, match=r"^linux\.seccomp") as info:
        seccomp.validate(_bad(mutate))
    assert message in str(info.value)


def test_validate_rejects_a_non_object():
    with pytest.raises(ValueError, match="linux.seccomp: must be an object, got list"):
        seccomp.validate([])


def test_validate_accepts_what_the_spec_allows():
    profile = _bad(lambda p: p["syscalls"].append({"names": ["nosuch"], "action": "SCMP_ACT_LOG"}))
    profile["defaultErrnoRet"] = 38
    profile["flags"] = ["SECCOMP_FILTER_FLAG_TSYNC", "SECCOMP_FILTER_FLAG_SPEC_ALLOW"]
    profile["syscalls"][0].update(action="SCMP_ACT_TRACE", errnoRet=0)
    profile["syscalls"][3]["args"][0]["valueTwo"] = 2**64 - 1
    seccomp.validate(profile)


def test_validate_never_opens_libseccomp(monkeypatch):
    def refuse():
        raise AssertionError("validate must stay pure Python")

    monkeypatch.setattr(seccomp, "_libseccomp", refuse)
    seccomp.validate(runtime_default_profile())
    seccomp.plan(runtime_default_profile())


def test_load_validates_before_touching_libseccomp(monkeypatch):
    monkeypatch.setattr(seccomp, "_libseccomp", lambda: pytest.fail("libseccomp opened"))
    with pytest.raises(ValueError, match=r"linux\.seccomp\.syscalls\[0\]\.action: unknown"):
        seccomp.load(
            {"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [{"names": ["read"], "action": "X"}]},
            True,
        )


# ---------------------------------------------------------------- plan


def test_plan_skips_rules_equal_to_the_default_action():
    profile = {
        "defaultAction": "SCMP_ACT_ERRNO",
        "syscalls": [
            {"names": ["mount"], "action": "SCMP_ACT_ERRNO"},  # ERRNO(EPERM) == default
            {"names": ["umount2"], "action": "SCMP_ACT_ERRNO", "errnoRet": 1},
            {"names": ["clone3"], "action": "SCMP_ACT_ERRNO", "errnoRet": 38},
            {"names": ["read", "write"], "action": "SCMP_ACT_ALLOW"},
        ],
    }
    filt = seccomp.plan(profile)
    assert filt.default_action == 0x00050000 | errno.EPERM
    assert filt.rules == (
        seccomp.Rule("clone3", 0x00050000 | errno.ENOSYS),
        seccomp.Rule("read", seccomp.ACTIONS["SCMP_ACT_ALLOW"]),
        seccomp.Rule("write", seccomp.ACTIONS["SCMP_ACT_ALLOW"]),
    )


def test_plan_ands_conditions_on_distinct_args_and_splits_repeated_ones():
    eq, masked = seccomp.OPERATORS["SCMP_CMP_EQ"], seccomp.OPERATORS["SCMP_CMP_MASKED_EQ"]
    distinct = [
        {"index": 0, "value": 3, "op": "SCMP_CMP_EQ"},
        {"index": 2, "value": 0xF0, "valueTwo": 0x10, "op": "SCMP_CMP_MASKED_EQ"},
    ]
    repeated = [
        {"index": 0, "value": 1, "op": "SCMP_CMP_EQ"},
        {"index": 0, "value": 2, "op": "SCMP_CMP_EQ"},
    ]
    profile = {
        "defaultAction": "SCMP_ACT_ALLOW",
        "syscalls": [
            {"names": ["ioctl"], "action": "SCMP_ACT_KILL_PROCESS", "args": distinct},
            {"names": ["kill"], "action": "SCMP_ACT_ERRNO", "args": repeated},
        ],
    }
    rules = seccomp.plan(profile).rules
    kill_process, eperm = 0x80000000, 0x00050000 | errno.EPERM
    assert rules == (
        seccomp.Rule(
            "ioctl",
            kill_process,
            (seccomp.Condition(0, eq, 3, 0), seccomp.Condition(2, masked, 0xF0, 0x10)),
        ),
        seccomp.Rule("kill", eperm, (seccomp.Condition(0, eq, 1, 0),)),
        seccomp.Rule("kill", eperm, (seccomp.Condition(0, eq, 2, 0),)),
    )


def test_plan_of_the_default_profile_never_repeats_the_default_action():
    filt = seccomp.plan(runtime_default_profile(**X86_64))
    assert filt.rules and all(rule.action != filt.default_action for rule in filt.rules)
    assert filt.architectures == ("SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_X32")


# ---------------------------------------------------------------- RuntimeDefault

BLOCKED_BY_DEFAULT = _words(
    """mount umount2 pivot_root setns unshare kexec_load kexec_file_load
init_module finit_module delete_module keyctl add_key request_key bpf perf_event_open reboot
swapon swapoff acct clock_settime settimeofday open_by_handle_at name_to_handle_at sethostname
setdomainname iopl ioperm process_vm_readv process_vm_writev kcmp vhangup syslog quotactl
fsopen fsmount move_mount open_tree lookup_dcookie userfaultfd get_mempolicy mbind
set_mempolicy uselib nfsservctl"""
)


@pytest.mark.parametrize("name", BLOCKED_BY_DEFAULT)
def test_default_profile_blocks_with_the_default_capabilities(name):
    assert decide(runtime_default_profile(**X86_64), name) == EPERM


@pytest.mark.parametrize(
    "name",
    _words(
        """read write openat close execve exit_group wait4 fork vfork mmap futex rseq arch_prctl
        chroot getrandom prctl socket connect sendmsg epoll_pwait2 close_range seccomp"""
    ),
)
def test_default_profile_allows_ordinary_syscalls(name):
    assert decide(runtime_default_profile(**X86_64), name) == ALLOW


def test_default_profile_matches_containerd_shape():
    profile = runtime_default_profile(**X86_64)
    assert profile["defaultAction"] == "SCMP_ACT_ERRNO"
    assert profile["defaultErrnoRet"] == errno.EPERM
    assert len(DEFAULT_CAPABILITIES) == 14
    assert len(BASE_ALLOW) == len(set(BASE_ALLOW)) > 300
    assert not set(BLOCKED_BY_DEFAULT) & set(BASE_ALLOW)


def test_clone_is_allowed_only_without_namespace_flags():
    profile = runtime_default_profile(**X86_64)
    assert decide(profile, "clone", SIGCHLD) == ALLOW
    assert decide(profile, "clone", CLONE_THREAD_FLAGS) == ALLOW
    for flag in (CLONE_NEWNS, CLONE_NEWUSER, CLONE_NEWNET):
        assert decide(profile, "clone", flag | SIGCHLD) == EPERM
    assert decide(profile, "clone3") == ENOSYS


def test_cap_sys_admin_allows_namespaces_mounts_and_clone3():
    profile = runtime_default_profile([*DEFAULT_CAPABILITIES, "CAP_SYS_ADMIN"], **X86_64)
    for name in ("mount", "umount2", "unshare", "setns", "sethostname", "bpf", "syslog"):
        assert decide(profile, name) == ALLOW, name
    assert decide(profile, "clone", CLONE_NEWUSER | SIGCHLD) == ALLOW
    assert decide(profile, "clone3") == ALLOW
    assert decide(profile, "pivot_root") == EPERM  # not even CAP_SYS_ADMIN gets these
    assert decide(profile, "kexec_load") == EPERM


@pytest.mark.parametrize(
    ("cap", "names"),
    [
        ("CAP_SYS_PTRACE", ["process_vm_readv", "process_vm_writev", "kcmp", "pidfd_getfd"]),
        ("CAP_SYS_BOOT", ["reboot"]),
        ("CAP_SYS_MODULE", ["init_module", "finit_module", "delete_module"]),
        ("CAP_BPF", ["bpf"]),
        ("CAP_PERFMON", ["perf_event_open"]),
        ("CAP_SYS_TIME", ["clock_settime", "settimeofday"]),
        ("CAP_SYS_PACCT", ["acct"]),
        ("CAP_SYS_RAWIO", ["iopl", "ioperm"]),
        ("CAP_DAC_READ_SEARCH", ["open_by_handle_at"]),
        ("CAP_SYSLOG", ["syslog"]),
        ("CAP_SYS_TTY_CONFIG", ["vhangup"]),
        ("SYS_BOOT", ["reboot"]),  # CRI style, without the prefix
    ],
)
def test_capabilities_unlock_their_syscalls(cap, names):
    without = runtime_default_profile(**X86_64)
    with_cap = runtime_default_profile([*DEFAULT_CAPABILITIES, cap], **X86_64)
    for name in names:
        assert decide(without, name) == EPERM, name
        assert decide(with_cap, name) == ALLOW, name
    assert decide(with_cap, "mount") == EPERM


def test_chroot_follows_cap_sys_chroot():
    assert decide(runtime_default_profile(**X86_64), "chroot") == ALLOW
    assert decide(runtime_default_profile([], **X86_64), "chroot") == EPERM


def test_personality_allows_only_the_harmless_personas():
    profile = runtime_default_profile(**X86_64)
    for persona in (0x0, 0x8, 0x20000, 0x20008, 0xFFFFFFFF):
        assert decide(profile, "personality", persona) == ALLOW
    assert decide(profile, "personality", 0x0040000) == EPERM  # ADDR_NO_RANDOMIZE
    assert decide(profile, "personality", 0x0400000) == EPERM  # READ_IMPLIES_EXEC


def test_ptrace_is_allowed_only_on_kernels_where_it_cannot_bypass_seccomp():
    # As containerd and moby: the ptrace/seccomp bypass was fixed in Linux 4.8.
    assert decide(runtime_default_profile(**X86_64), "ptrace") == ALLOW
    for release in ("4.4.0-210-generic", "3.10.0", "garbage"):
        profile = runtime_default_profile(machine="x86_64", kernel_release=release)
        assert decide(profile, "ptrace") == EPERM, release
    assert decide(runtime_default_profile(machine="x86_64", kernel_release="4.8.0"), "ptrace")[
        0
    ] == ("SCMP_ACT_ALLOW")


def test_architectures_follow_the_machine():
    arm = runtime_default_profile(machine="aarch64", kernel_release="6.1")
    assert arm["architectures"] == ["SCMP_ARCH_ARM", "SCMP_ARCH_AARCH64"]
    assert decide(arm, "set_tls") == ALLOW
    assert decide(arm, "arch_prctl") == EPERM
    assert runtime_default_profile(machine="arm64")["architectures"] == arm["architectures"]
    x86 = runtime_default_profile(**X86_64)
    assert decide(x86, "modify_ldt") == ALLOW and decide(x86, "set_tls") == EPERM
    assert runtime_default_profile(machine="riscv64")["architectures"] == []


# ---------------------------------------------------------------- libseccomp, no kernel load

needs_libseccomp = pytest.mark.skipif(
    ctypes.util.find_library("seccomp") is None, reason="libseccomp.so.2 not installed"
)


@needs_libseccomp
def test_libseccomp_builds_the_default_profile_without_loading_it():
    pfc = seccomp.export_pfc(runtime_default_profile(**X86_64))
    assert "# filter for arch x86_64" in pfc and "# filter for arch x86 " in pfc
    assert 'syscall "clone3" (435)' in pfc and "action ERRNO(38);" in pfc
    assert "& 0x7e020000 == 0" in pfc  # clone without namespace flags
    assert 'syscall "mount"' not in pfc
    assert "action ERRNO(1);" in pfc  # the default action


@needs_libseccomp
def test_libseccomp_skips_unknown_syscalls_and_architectures():
    profile = {
        "defaultAction": "SCMP_ACT_ALLOW",
        "architectures": ["SCMP_ARCH_X86_64", "SCMP_ARCH_LOONGARCH64"],
        "flags": ["SECCOMP_FILTER_FLAG_LOG", "SECCOMP_FILTER_FLAG_SPEC_ALLOW"],
        "syscalls": [
            {"names": ["no_such_syscall", "getpgid"], "action": "SCMP_ACT_ERRNO", "errnoRet": 38},
            {"names": ["kill"], "action": "SCMP_ACT_KILL_PROCESS"},
            {"names": ["tkill"], "action": "SCMP_ACT_ALLOW"},  # equal to default: skipped
        ],
    }
    pfc = seccomp.export_pfc(profile)
    assert 'syscall "getpgid"' in pfc and "no_such_syscall" not in pfc
    assert "action KILL_PROCESS;" in pfc
    assert 'syscall "tkill"' not in pfc
