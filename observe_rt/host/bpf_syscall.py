"""The bpf(2) calls the runtime core needs without bcc: load a program, attach it to a cgroup.

The device filter of cgroup v2 (runtime/cgroups/devices_bpf.py) is a few dozen instructions
built in Python, as runc builds its own; loading it needs no compiler and no kernel headers, so
containers keep their device rules on hosts where the probes cannot load. Standard library only.
"""

from __future__ import annotations

import ctypes
import os

_libc = ctypes.CDLL("libc.so.6", use_errno=True)
_SYS_BPF = {"x86_64": 321, "aarch64": 280}[os.uname().machine]

BPF_PROG_LOAD = 5
BPF_PROG_ATTACH = 8
BPF_PROG_TYPE_CGROUP_DEVICE = 15
BPF_CGROUP_DEVICE = 6
BPF_F_ALLOW_MULTI = 2


class _ProgLoad(ctypes.Structure):
    _fields_ = [
        ("prog_type", ctypes.c_uint32),
        ("insn_cnt", ctypes.c_uint32),
        ("insns", ctypes.c_uint64),
        ("license", ctypes.c_uint64),
        ("log_level", ctypes.c_uint32),
        ("log_size", ctypes.c_uint32),
        ("log_buf", ctypes.c_uint64),
        ("kern_version", ctypes.c_uint32),
        ("prog_flags", ctypes.c_uint32),
        ("prog_name", ctypes.c_char * 16),
        ("_rest", ctypes.c_uint8 * 64),  # later fields stay zero
    ]


class _ProgAttach(ctypes.Structure):
    _fields_ = [
        ("target_fd", ctypes.c_uint32),
        ("attach_bpf_fd", ctypes.c_uint32),
        ("attach_type", ctypes.c_uint32),
        ("attach_flags", ctypes.c_uint32),
        ("replace_bpf_fd", ctypes.c_uint32),
        ("_rest", ctypes.c_uint8 * 44),
    ]


def _bpf(cmd: int, attr: ctypes.Structure, what: str) -> int:
    result = _libc.syscall(_SYS_BPF, cmd, ctypes.byref(attr), ctypes.sizeof(attr))
    if result < 0:
        err = ctypes.get_errno()
        raise OSError(err, f"{what}: {os.strerror(err)}")
    return result


def load_cgroup_device_program(insns: bytes, name: str = "ort_devices") -> int:
    """A BPF_PROG_TYPE_CGROUP_DEVICE program from raw instructions; returns its fd.

    Loaded without a verifier log (a log too small for it fails the load with ENOSPC); only
    a refused program is loaded again, with a log, to say why.
    """
    try:
        return _load(insns, name, log_size=0)
    except OSError:
        return _load(insns, name, log_size=1 << 20)


def _load(insns: bytes, name: str, log_size: int) -> int:
    code = ctypes.create_string_buffer(insns, len(insns))
    license_ = ctypes.create_string_buffer(b"Apache-2.0")
    log = ctypes.create_string_buffer(max(log_size, 1))
    attr = _ProgLoad(
        prog_type=BPF_PROG_TYPE_CGROUP_DEVICE,
        insn_cnt=len(insns) // 8,
        insns=ctypes.addressof(code),
        license=ctypes.addressof(license_),
        log_level=1 if log_size else 0,
        log_size=log_size,
        log_buf=ctypes.addressof(log) if log_size else 0,
        prog_name=name.encode()[:15],
    )
    try:
        return _bpf(BPF_PROG_LOAD, attr, "bpf(PROG_LOAD) of the device filter")
    except OSError as err:
        verifier = log.value.decode(errors="replace").strip()
        detail = f"; verifier: {verifier[-300:]}" if verifier else ""
        raise OSError(err.errno, f"{err.strerror}{detail}") from None


def attach_to_cgroup(program_fd: int, cgroup_dir: str) -> None:
    """Attach a device program to a cgroup v2 directory (beside any others: ALLOW_MULTI)."""
    target = os.open(cgroup_dir, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        attr = _ProgAttach(
            target_fd=target,
            attach_bpf_fd=program_fd,
            attach_type=BPF_CGROUP_DEVICE,
            attach_flags=BPF_F_ALLOW_MULTI,
        )
        _bpf(BPF_PROG_ATTACH, attr, f"bpf(PROG_ATTACH) of the device filter to {cgroup_dir}")
    finally:
        os.close(target)
