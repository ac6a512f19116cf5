"""Seccomp filters loaded into the real kernel, each in a fresh `python -I -S` child.

The child is started like the container init helper (isolated, no site), so these tests also
prove the seccomp modules need nothing beyond the standard library.
"""

from __future__ import annotations

import ctypes.util
import errno
import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]

pytestmark = [
    pytest.mark.root,
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root"),
    pytest.mark.skipif(ctypes.util.find_library("seccomp") is None, reason="needs libseccomp"),
]

CLONE_NEWUTS = 0x04000000
SIGCHLD = 17

# Runs in the child before each test body; the body fills `out`, which is printed as JSON.
PRELUDE = f"""
import ctypes, json, os, subprocess, sys, threading
sys.path.insert(0, {str(REPO)!r})
from observe_rt.runtime import seccomp, seccomp_default

libc = ctypes.CDLL(None, use_errno=True)
libc.syscall.restype = ctypes.c_long
scmp = ctypes.CDLL("libseccomp.so.2")
scmp.seccomp_syscall_resolve_name.argtypes = [ctypes.c_char_p]

def call(name, *args):
    # Raw syscall by name: its result, or -errno.
    number = scmp.seccomp_syscall_resolve_name(name.encode())
    rc = libc.syscall(number, *(ctypes.c_long(a) for a in args))
    return -ctypes.get_errno() if rc == -1 else rc

def status(field):
    with open("/proc/self/status") as f:
        return dict(line.rstrip("\\n").split(":\\t", 1) for line in f if ":\\t" in line)[field]

out = {{}}
"""


def run_child(body: str) -> dict:
    code = PRELUDE + textwrap.dedent(body) + "\nprint(json.dumps(out))\n"
    proc = subprocess.run(
        [sys.executable, "-I", "-S", "-c", code], capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout.splitlines()[-1])


def test_default_profile_blocks_namespace_escapes_and_keeps_ordinary_work(tmp_path):
    data = tmp_path / "data.txt"
    data.write_text("hello\n")
    out = run_child(
        f"""
        seccomp.load(seccomp_default.runtime_default_profile(), no_new_privs=True)
        out["seccomp"], out["nnp"] = status("Seccomp"), status("NoNewPrivs")
        out["unshare"] = call("unshare", {CLONE_NEWUTS})
        out["setns"] = call("setns", 0, 0)
        out["keyctl"] = call("keyctl", 0, -3, 0)  # KEYCTL_GET_KEYRING_ID, session keyring
        out["mount"] = call("mount", 0, 0, 0, 0, 0)
        out["clone3"] = call("clone3", 0, 0)
        pid = call("clone", {CLONE_NEWUTS | SIGCHLD}, 0, 0, 0, 0)
        if pid == 0:
            os._exit(0)  # only if the filter failed: never run the test body twice
        if pid > 0:
            os.waitpid(pid, 0)
        out["clone_newuts"] = pid
        out["personality_query"] = call("personality", 0xFFFFFFFF) >= 0
        out["personality_no_aslr"] = call("personality", 0x0040000)
        with open({str(data)!r}) as f:
            out["read"] = f.read()
        pid = os.fork()
        if pid == 0:
            os._exit(7)
        out["fork"] = os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1])
        out["true"] = subprocess.run(["/bin/true"]).returncode
        thread = threading.Thread(target=lambda: out.__setitem__("thread", "ran"))
        thread.start()
        thread.join()
        """
    )
    assert out == {
        "seccomp": "2",
        "nnp": "1",
        "unshare": -errno.EPERM,
        "setns": -errno.EPERM,
        "keyctl": -errno.EPERM,
        "mount": -errno.EPERM,
        "clone3": -errno.ENOSYS,  # so glibc falls back to clone (threads, posix_spawn)
        "clone_newuts": -errno.EPERM,
        "personality_query": True,
        "personality_no_aslr": -errno.EPERM,
        "read": "hello\n",
        "fork": 7,
        "true": 0,
        "thread": "ran",
    }


def test_cap_sys_admin_profile_allows_unshare_and_clone3():
    out = run_child(
        """
        caps = [*seccomp_default.DEFAULT_CAPABILITIES, "CAP_SYS_ADMIN", "CAP_BPF", "CAP_SYSLOG"]
        seccomp.load(seccomp_default.runtime_default_profile(caps), no_new_privs=True)
        out["unshare"] = call("unshare", 0x04000000)
        out["clone3"] = call("clone3", 0, 0)
        out["keyctl"] = call("keyctl", 0, -3, 0)
        """
    )
    # clone3(NULL, 0) now reaches the kernel, which rejects the empty argument.
    assert out == {"unshare": 0, "clone3": -errno.EINVAL, "keyctl": -errno.EPERM}


CUSTOM = {
    "defaultAction": "SCMP_ACT_ALLOW",
    "architectures": ["SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_AARCH64"],
    "syscalls": [
        {"names": ["no_such_syscall"], "action": "SCMP_ACT_KILL_PROCESS"},
        {
            "names": ["personality"],
            "action": "SCMP_ACT_ERRNO",
            "args": [{"index": 0, "value": 0xFFFFFFFF, "op": "SCMP_CMP_EQ"}],
        },
        {  # the same argument twice: either value matches (one rule each, as runc)
            "names": ["getpgid"],
            "action": "SCMP_ACT_ERRNO",
            "errnoRet": errno.ENOSYS,
            "args": [
                {"index": 0, "value": 4242, "op": "SCMP_CMP_EQ"},
                {"index": 0, "value": 4243, "op": "SCMP_CMP_EQ"},
            ],
        },
        {  # two arguments: both must match
            "names": ["getpriority"],
            "action": "SCMP_ACT_ERRNO",
            "errnoRet": errno.EACCES,
            "args": [
                {"index": 0, "value": 0, "op": "SCMP_CMP_EQ"},
                {"index": 1, "value": 0xF000, "valueTwo": 0x1000, "op": "SCMP_CMP_MASKED_EQ"},
            ],
        },
    ],
}

CUSTOM_CHECKS = """
out["personality_query"] = call("personality", 0xFFFFFFFF)
out["personality_linux"] = call("personality", 0) >= 0
out["getpgid_4242"] = call("getpgid", 4242)
out["getpgid_4243"] = call("getpgid", 4243)
out["getpgid_self"] = call("getpgid", 0) > 0
out["getpriority_both"] = call("getpriority", 0, 0x1234)
out["getpriority_one"] = call("getpriority", 1, 0x1234) != -13
out["seccomp"], out["nnp"] = status("Seccomp"), status("NoNewPrivs")
"""


@pytest.mark.parametrize("no_new_privs", [True, False])
def test_custom_profile_conditions_apply_only_when_they_match(no_new_privs):
    out = run_child(
        f"seccomp.load({CUSTOM!r}, no_new_privs={no_new_privs})\n" + CUSTOM_CHECKS,
    )
    assert out == {
        "personality_query": -errno.EPERM,  # errnoRet defaults to EPERM
        "personality_linux": True,
        "getpgid_4242": -errno.ENOSYS,
        "getpgid_4243": -errno.ENOSYS,
        "getpgid_self": True,
        "getpriority_both": -errno.EACCES,
        "getpriority_one": True,
        "seccomp": "2",
        "nnp": "1" if no_new_privs else "0",  # libseccomp must not force it
    }


def test_flags_load_on_this_kernel():
    profile = dict(CUSTOM, flags=[
        "SECCOMP_FILTER_FLAG_TSYNC", "SECCOMP_FILTER_FLAG_LOG", "SECCOMP_FILTER_FLAG_SPEC_ALLOW"
    ])  # fmt: skip
    out = run_child(f"seccomp.load({profile!r}, no_new_privs=True)\n" + CUSTOM_CHECKS)
    assert out["getpgid_4242"] == -errno.ENOSYS and out["seccomp"] == "2"


def test_without_no_new_privs_an_unprivileged_load_fails_clearly():
    out = run_child(
        f"""
        os.setgroups([])
        os.setgid(65534)
        os.setuid(65534)  # drops every capability, CAP_SYS_ADMIN included
        try:
            seccomp.load({CUSTOM!r}, no_new_privs=False)
        except OSError as exc:
            out["errno"], out["message"] = exc.errno, str(exc)
        out["seccomp_after_failure"] = status("Seccomp")
        seccomp.load({CUSTOM!r}, no_new_privs=True)
        out["seccomp"] = status("Seccomp")
        """
    )
    assert out["errno"] == errno.EACCES
    assert "loading the filter" in out["message"] and "CAP_SYS_ADMIN" in out["message"]
    assert out["seccomp_after_failure"] == "0"
    assert out["seccomp"] == "2"


@pytest.mark.parametrize(
    ("action", "signum"),
    [("SCMP_ACT_KILL_PROCESS", signal.SIGSYS), ("SCMP_ACT_TRAP", signal.SIGSYS)],
)
def test_killing_actions_end_the_process_with_sigsys(action, signum):
    profile = {
        "defaultAction": "SCMP_ACT_ALLOW",
        "syscalls": [{"names": ["getppid"], "action": action}],
    }
    code = PRELUDE + f"seccomp.load({profile!r}, no_new_privs=True)\nos.getppid()\nprint('alive')\n"
    proc = subprocess.run([sys.executable, "-I", "-S", "-c", code], capture_output=True, timeout=60)
    assert proc.returncode == -signum
    assert b"alive" not in proc.stdout
