/*
 * oomkill.c: one event per OOM kill, naming the victim (pid, comm, memory sizes in kB) and
 * the container it belonged to.
 *
 * Hooks:
 *   oom:mark_victim          fires once per kill, but in the context of the task that ran into
 *                            the limit (the trigger), which is not always the victim; its
 *                            arguments name the victim only by pid. So the kill is parked in
 *                            oom_pending, keyed by the victim's pid (a tid, as the tracepoint
 *                            gives it).
 *   sched:sched_process_exit the killed victim exits next, and this tracepoint runs in the
 *                            victim's own context, where bpf_get_current_cgroup_id() is the
 *                            victim's cgroup: exact attribution without reading any kernel
 *                            struct and without a pid->cgroup map kept on every fork.
 *                            The event is emitted here, once (the delete decides who owns it).
 * Maps:
 *   oom_pending  victim tid -> the kill as seen at mark_victim; an LRU hash, so kills whose
 *                victim never reaches the exit hook cannot fill it. Userspace flushes entries
 *                older than a few seconds (victim stuck, or exited before mark_victim ran:
 *                the kernel sends SIGKILL just before marking) and attributes those to the
 *                trigger cgroup; whoever deletes the entry first emits it.
 *   oom_events   ring buffer (perf buffer without USE_RINGBUF) of struct oom_event.
 * Overhead: one LRU lookup per task exit on the host (the map is almost always empty);
 *       mark_victim is rare.
 * Caveats: the victim is recorded whatever its cgroup (unknown until it exits); the event is
 *       dropped unless the victim's or the trigger's cgroup is tracked. OOM_HAS_RSS /
 *       OOM_HAS_COMM are set by the loader when mark_victim carries those fields (kernels
 *       before 6.0 give only the pid).
 */
#include "common.h"

#ifndef OOM_MAX_PENDING
#define OOM_MAX_PENDING 1024
#endif
#ifndef OOM_RINGBUF_PAGES
#define OOM_RINGBUF_PAGES 8
#endif

struct oom_kill {
    u64 kill_ns;
    u64 trigger_cgroup_id;
    u64 total_vm_kb;
    u64 anon_rss_kb;
    u64 file_rss_kb;
    u64 shmem_rss_kb;
    u32 victim_pid;
    u32 trigger_pid;
    char comm[16];
};

struct oom_event {
    struct oom_kill kill;
    u64 victim_cgroup_id;
    u64 exit_ns;
};

BPF_TABLE("lru_hash", u32, struct oom_kill, oom_pending, OOM_MAX_PENDING);
#ifdef USE_RINGBUF
BPF_RINGBUF_OUTPUT(oom_events, OOM_RINGBUF_PAGES);
#else
BPF_PERF_OUTPUT(oom_events);
#endif

int oom_mark_victim(struct tp_oom__mark_victim *args)
{
    struct oom_kill kill = {};
    u32 victim = args->pid;

    kill.kill_ns = bpf_ktime_get_ns();
    kill.trigger_cgroup_id = bpf_get_current_cgroup_id();
    kill.trigger_pid = bpf_get_current_pid_tgid() >> 32;
    kill.victim_pid = victim;
#ifdef OOM_HAS_RSS
    kill.total_vm_kb = args->total_vm;
    kill.anon_rss_kb = args->anon_rss;
    kill.file_rss_kb = args->file_rss;
    kill.shmem_rss_kb = args->shmem_rss;
#endif
#ifdef OOM_HAS_COMM
    TP_DATA_LOC_READ_STR(&kill.comm, comm, sizeof(kill.comm));
#endif
    oom_pending.update(&victim, &kill);
    return 0;
}

static __always_inline void oom_submit(void *ctx, struct oom_event *event)
{
#ifdef USE_RINGBUF
    if (oom_events.ringbuf_output(event, sizeof(*event), 0) != 0)
        count_lost(PROBE_OOM);
#else
    if (oom_events.perf_submit(ctx, event, sizeof(*event)) != 0)
        count_lost(PROBE_OOM);
#endif
}

int oom_victim_exit(struct tp_sched__sched_process_exit *args)
{
    u32 tid = args->pid;
    struct oom_kill *kill = oom_pending.lookup(&tid);

    if (!kill)
        return 0;
    struct oom_event event = {};
    __builtin_memcpy(&event.kill, kill, sizeof(event.kill));
    if (oom_pending.delete(&tid) != 0)
        return 0;  /* userspace flushed it as stale a moment ago and emitted it */

    event.victim_cgroup_id = bpf_get_current_cgroup_id();
    event.exit_ns = bpf_ktime_get_ns();
    if (!is_tracked(event.victim_cgroup_id) && !is_tracked(event.kill.trigger_cgroup_id))
        return 0;
    oom_submit(args, &event);
    return 0;
}
