"""OOM kills (bpf/oomkill.c): spec, event decoding and the stale-kill flush.

Record layouts (native order):
  struct oom_kill  {u64 kill_ns, trigger_cgroup_id, total_vm_kb, anon_rss_kb, file_rss_kb,
                    shmem_rss_kb; u32 victim_pid, trigger_pid; char comm[16]}
  struct oom_event {struct oom_kill kill; u64 victim_cgroup_id, exit_ns}
The kernel emits a kill when the victim exits (in its own cgroup context). A kill whose victim
is not seen exiting within `max_age_ns` is taken out of oom_pending here and attributed to
the trigger's cgroup; the map delete decides which side reports it, so it is reported once.
"""

from __future__ import annotations

import struct
from collections.abc import Container

from observe_rt.probes.events import OomKill
from observe_rt.probes.spec import Buffer, Feature, Hook, ProbeSpec, c_string

KILL = struct.Struct("=6QII16s")
EVENT = struct.Struct("=6QII16sQQ")
PID_KEY = struct.Struct("=I")


def _kill(fields: tuple, cgroup_id: int, attribution: str, offset_ns: int) -> OomKill:
    kill_ns, trigger_cg, total_vm, anon, file, shmem, victim, trigger_pid, comm = fields[:9]
    return OomKill(
        time_ns=kill_ns + offset_ns,
        cgroup_id=cgroup_id,
        victim_pid=victim,
        victim_comm=c_string(comm),
        trigger_cgroup_id=trigger_cg,
        trigger_pid=trigger_pid,
        total_vm_kb=total_vm,
        anon_rss_kb=anon,
        file_rss_kb=file,
        shmem_rss_kb=shmem,
        attribution=attribution,
    )


def decode_event(data: bytes, offset_ns: int = 0) -> OomKill:
    """An oom_events record; the victim's own cgroup is the container charged."""
    fields = EVENT.unpack_from(data)
    victim_cgroup_id = fields[9]
    return _kill(fields, victim_cgroup_id, "victim", offset_ns)


SPEC = ProbeSpec(
    name="oom",
    source="oomkill.c",
    hooks=(
        Hook("oom:mark_victim", "oom_mark_victim", ("pid",)),
        Hook("sched:sched_process_exit", "oom_victim_exit", ("pid",)),
    ),
    features=(
        Feature(
            "OOM_HAS_RSS", "oom:mark_victim", ("total_vm", "anon_rss", "file_rss", "shmem_rss")
        ),
        Feature("OOM_HAS_COMM", "oom:mark_victim", ("comm",)),
    ),
    buffers=(Buffer("oom_events", decode_event, perf_pages=8),),
)


def flush_stale(
    program, now_ns: int, max_age_ns: int, tracked: Container[int], offset_ns: int
) -> list[OomKill]:
    """Report kills whose victim never reached the exit hook, by the trigger's cgroup."""
    view = program.map("oom_pending")
    kills = []
    for key, value in list(view.items()):
        fields = KILL.unpack_from(value)
        if now_ns - fields[0] < max_age_ns or not view.delete(key):
            continue  # still young, or the kernel emitted it a moment ago
        trigger_cgroup_id = fields[1]
        if trigger_cgroup_id in tracked:
            kills.append(_kill(fields, trigger_cgroup_id, "trigger", offset_ns))
    return kills
