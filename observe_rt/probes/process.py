"""Process exec/exit events (bpf/process.c): spec and decoding.

Layouts (native order), told apart by their first u32 (`kind`):
  exec {u32 kind=1, pid; u64 time_ns, cgroup_id; u32 old_pid, pad; char comm[16];
        char filename[FILENAME_LEN]}
  exit {u32 kind=2, pid; u64 time_ns, cgroup_id; s32 status, pad; char comm[16]}
status is wait(2)-style: code << 8 after exit_group(code), the signal number after a fatal
signal, -1 when unknown.
"""

from __future__ import annotations

import struct

from observe_rt.probes.events import ProcessExec, ProcessExit
from observe_rt.probes.spec import Buffer, Feature, Hook, ProbeSpec, c_string

FILENAME_LEN = 256
KIND = struct.Struct("=I")
EXEC = struct.Struct(f"=IIQQII16s{FILENAME_LEN}s")
EXIT = struct.Struct("=IIQQiI16s")
KIND_EXEC, KIND_EXIT = 1, 2


def split_status(status: int) -> tuple[int | None, int | None]:
    """(exit code, signal) from a wait(2)-style status; (None, None) when unknown."""
    if status < 0:
        return None, None
    if status & 0x7F:
        return None, status & 0x7F
    return (status >> 8) & 0xFF, None


def decode_event(data: bytes, offset_ns: int = 0) -> ProcessExec | ProcessExit | None:
    (kind,) = KIND.unpack_from(data)
    if kind == KIND_EXEC:
        _, pid, time_ns, cgroup_id, old_pid, _, comm, filename = EXEC.unpack_from(data)
        return ProcessExec(
            time_ns + offset_ns, cgroup_id, pid, old_pid, c_string(comm), c_string(filename)
        )
    if kind == KIND_EXIT:
        _, pid, time_ns, cgroup_id, status, _, comm = EXIT.unpack_from(data)
        code, signal = split_status(status)
        return ProcessExit(time_ns + offset_ns, cgroup_id, pid, c_string(comm), code, signal)
    return None


SPEC = ProbeSpec(
    name="process",
    source="process.c",
    hooks=(
        Hook("sched:sched_process_exec", "proc_exec", ("filename", "pid", "old_pid")),
        Hook("sched:sched_process_exit", "proc_exit", ("comm",)),
        Hook("syscalls:sys_enter_exit_group", "proc_exit_group", ("error_code",), required=False),
        Hook("signal:signal_deliver", "proc_signal", ("sig", "sa_handler"), required=False),
    ),
    features=(Feature("PROC_HAS_GROUP_DEAD", "sched:sched_process_exit", ("group_dead",)),),
    buffers=(Buffer("proc_events", decode_event, perf_pages=64),),
    defines=(f"PROC_FILENAME_LEN={FILENAME_LEN}",),
)
