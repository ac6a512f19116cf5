"""Active probes: try the real kernel features and report Outcomes as plain data.

Probes that change the calling process (unshare, seccomp, oom_score_adj, a mount namespace)
run in a child interpreter (`python -I -S -c`, stdlib and ctypes only), so doctor itself is
unaffected; each child prints one JSON object. The bpf() map probe and bcc only create file
descriptors, so they run here. bcc is imported lazily, inside probe_bcc only.
"""

from __future__ import annotations

import ctypes
import errno
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

from observe_rt.doctor.model import BccOutcome, Outcome, Probes

CHILD_TIMEOUT_S = 20
DOCTOR_PROGRAM = Path(__file__).resolve().parents[2] / "bpf" / "doctor_probe.c"

# Shared prelude of every child: libc through ctypes and an errno-naming error helper.
_PRELUDE = """
import ctypes, errno, json, os
libc = ctypes.CDLL(None, use_errno=True)
def err():
    e = ctypes.get_errno()
    return f"{errno.errorcode.get(e, e)} ({os.strerror(e)})"
"""

_NAMESPACES_CHILD = """
flags = {"pid": 0x20000000, "net": 0x40000000, "mount": 0x00020000, "ipc": 0x08000000,
         "uts": 0x04000000, "cgroup": 0x02000000, "user": 0x10000000}
out = {}
for name, flag in flags.items():  # user last: it changes what the later calls may do
    out[name] = None if libc.unshare(flag) == 0 else err()
print(json.dumps(out))
"""

_SECCOMP_CHILD = """
import struct
libc.prctl(38, 1, 0, 0, 0)  # PR_SET_NO_NEW_PRIVS: lets the filter install without CAP_SYS_ADMIN
allow = ctypes.create_string_buffer(struct.pack("=HBBI", 0x06, 0, 0, 0x7FFF0000))  # RET ALLOW
class Fprog(ctypes.Structure):
    _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_void_p)]
prog = Fprog(1, ctypes.addressof(allow))
ok = libc.prctl(22, 2, ctypes.byref(prog), 0, 0) == 0  # PR_SET_SECCOMP, SECCOMP_MODE_FILTER
print(json.dumps({"ok": ok, "detail": "" if ok else err()}))
"""

_OOM_CHILD = """
try:
    fd = os.open("/proc/self/oom_score_adj", os.O_WRONLY)
    os.write(fd, b"-500")
    print(json.dumps({"ok": True, "detail": ""}))
except OSError as e:
    print(json.dumps({"ok": False,
                      "detail": f"{errno.errorcode.get(e.errno, e.errno)} ({e.strerror})"}))
"""

_LSM_CHILD = """
MS_REC, MS_PRIVATE = 16384, 1 << 18
def run():
    if libc.unshare(0x00020000) != 0:
        return {"ok": False, "detail": "unshare(CLONE_NEWNS): " + err()}
    # Private first, so the securityfs mount never propagates to the host.
    if libc.mount(b"none", b"/", None, ctypes.c_ulong(MS_REC | MS_PRIVATE), None) != 0:
        return {"ok": False, "detail": "make / private: " + err()}
    target = b"/sys/kernel/security"
    if libc.mount(b"securityfs", target, b"securityfs", ctypes.c_ulong(0), None) != 0:
        return {"ok": False, "detail": "mount securityfs: " + err()}
    with open("/sys/kernel/security/lsm") as f:
        return {"ok": True, "detail": f.read().strip()}
print(json.dumps(run()))
"""


def run_child(code: str) -> dict:
    """Run `code` (after the prelude) in a fresh interpreter; return the JSON it prints."""
    proc = subprocess.run(
        [sys.executable, "-I", "-S", "-c", _PRELUDE + code],
        capture_output=True,
        text=True,
        timeout=CHILD_TIMEOUT_S,
        check=False,
    )
    lines = proc.stdout.strip().splitlines()
    if proc.returncode != 0 or not lines:
        tail = (proc.stderr.strip().splitlines() or ["no output"])[-1]
        raise RuntimeError(f"probe child exited {proc.returncode}: {tail}")
    return json.loads(lines[-1])


def _outcome_of(code: str) -> Outcome:
    try:
        data = run_child(code)
    except (RuntimeError, subprocess.TimeoutExpired, ValueError) as exc:
        return Outcome(False, str(exc))
    return Outcome(bool(data["ok"]), str(data["detail"]))


def probe_namespaces() -> dict[str, Outcome]:
    """unshare() each namespace type in a child; name -> Outcome."""
    try:
        data = run_child(_NAMESPACES_CHILD)
    except (RuntimeError, subprocess.TimeoutExpired, ValueError) as exc:
        return {
            name: Outcome(False, str(exc))
            for name in ("pid", "net", "mount", "ipc", "uts", "cgroup", "user")
        }
    return {name: Outcome(error is None, error or "") for name, error in data.items()}


def probe_seccomp() -> Outcome:
    """Install an allow-everything seccomp filter in a child."""
    return _outcome_of(_SECCOMP_CHILD)


def probe_oom_score_adj() -> Outcome:
    """Write a negative oom_score_adj in a child (EIO/EACCES on some hosts)."""
    return _outcome_of(_OOM_CHILD)


def probe_lsm() -> Outcome:
    """Read the active LSM list by mounting securityfs in a child's private mount namespace."""
    return _outcome_of(_LSM_CHILD)


_SYS_BPF = {"x86_64": 321, "aarch64": 280}
_BPF_MAP_CREATE, _BPF_MAP_TYPE_ARRAY = 0, 2


def probe_bpf_syscall() -> Outcome:
    """bpf(BPF_MAP_CREATE) a one-slot array, then close it: proves the syscall is usable."""
    number = _SYS_BPF.get(platform.machine())
    if number is None:
        return Outcome(False, f"bpf syscall number unknown for {platform.machine()}")
    libc = ctypes.CDLL(None, use_errno=True)
    attr = ctypes.create_string_buffer(128)  # union bpf_attr, zeroed
    ctypes.memmove(attr, (ctypes.c_uint32 * 4)(_BPF_MAP_TYPE_ARRAY, 4, 8, 1), 16)
    fd = libc.syscall(number, _BPF_MAP_CREATE, attr, ctypes.sizeof(attr))
    if fd < 0:
        code = ctypes.get_errno()
        return Outcome(False, f"{errno.errorcode.get(code, code)} ({os.strerror(code)})")
    os.close(fd)
    return Outcome(True, "map created")


def probe_bcc(
    program: Path = DOCTOR_PROGRAM,
    tracepoint: str = "sched:sched_process_exec",
    fn_name: str = "doctor_exec",
) -> BccOutcome:
    """Import bcc, compile `program`, attach it, exec /bin/true once, read its counter."""
    try:
        import bcc  # Debian's python3-bpfcc; absent on many hosts, so imported only here
    except Exception as exc:  # an ImportError or a broken libbcc (OSError)
        return BccOutcome(imported=False, error=f"{type(exc).__name__}: {exc}")
    version = str(getattr(bcc, "__version__", ""))
    if not program.is_file():
        return BccOutcome(True, version, error=f"{program} not found")
    started = time.perf_counter()
    try:
        bpf = bcc.BPF(src_file=str(program).encode())
    except Exception as exc:
        return BccOutcome(True, version, error=_first_line(exc))
    compile_ms = (time.perf_counter() - started) * 1000
    try:
        return _attach_and_count(bpf, version, compile_ms, tracepoint, fn_name)
    finally:
        bpf.cleanup()


def _attach_and_count(
    bpf, version: str, compile_ms: float, tracepoint: str, fn_name: str
) -> BccOutcome:
    started = time.perf_counter()
    try:
        bpf.attach_tracepoint(tp=tracepoint.encode(), fn_name=fn_name.encode())
    except Exception as exc:
        return BccOutcome(True, version, error=_first_line(exc), compile_ms=compile_ms)
    attach_ms = (time.perf_counter() - started) * 1000
    subprocess.run(["/bin/true"], check=False)  # one exec, so the counter must move
    events = int(bpf[b"exec_count"][ctypes.c_int(0)].value)
    return BccOutcome(True, version, compile_ms=compile_ms, attach_ms=attach_ms, events=events)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    return text.splitlines()[0]


def run_all() -> Probes:
    """Every active probe, for a doctor run on the real host."""
    return Probes(
        namespaces=probe_namespaces(),
        seccomp=probe_seccomp(),
        oom_score_adj=probe_oom_score_adj(),
        bpf_syscall=probe_bpf_syscall(),
        lsm=probe_lsm(),
        bcc=probe_bcc(),
    )
