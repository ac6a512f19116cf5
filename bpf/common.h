/*
 * common.h: what every observe-rt probe shares. The loader (observe_rt/probes/loader.py)
 * joins the enabled probes' .c files into ONE bcc program, so the maps below exist once and
 * every probe filters on the same tracked-containers map.
 *
 * Tracepoint arguments: the loader generates `struct tp_<category>__<event>` from the running
 * kernel's /sys/kernel/tracing/events/<category>/<event>/format and puts it before this
 * header, exactly as bcc's TRACEPOINT_PROBE does, but once per tracepoint (two probes may hook
 * the same one) and with types the substitute kernel headers lack (new enums) mapped by size.
 * Programs read only those arguments and BPF helpers, never kernel struct fields.
 *
 * Maps:
 *   tracked      cgroup v2 id -> 1, one entry per container; written by the runtime before the
 *                workload's first exec. Every program returns early for any other cgroup, so
 *                a host process costs one hash lookup per hooked event and produces nothing.
 *   lost_events  per-CPU u64 per probe: records dropped because a ring/perf buffer was full or
 *                a bounded map had no room for a new key. Userspace sums the CPUs and reports
 *                it as observe_rt_probe_events_lost_total{probe}; nothing is dropped silently.
 *
 * Build flags (-D, set by the loader): USE_RINGBUF (else perf buffers), MAX_TRACKED, each
 * probe's own sizes (see the probe files), and PIN_DIR.
 *
 * Pinning: with PIN_DIR (a directory on bpffs) the maps that hold cumulative state (tracked,
 * lost_events, and the probes' counters declared with COUNTER_MAP) are pinned there and reused
 * by the next load, so a restarted daemon resumes every counter where the kernel left it
 * instead of starting from zero. Only counting stops while no daemon runs (the programs go with
 * it); nothing is counted twice.
 */
#ifndef OBSERVE_RT_COMMON_H
#define OBSERVE_RT_COMMON_H

#ifndef MAX_TRACKED
#define MAX_TRACKED 4096
#endif

/* Index into lost_events; keep in step with PROBE_IDS in observe_rt/probes/spec.py. */
#define PROBE_SYSCALLS 0
#define PROBE_OOM 1
#define PROBE_TCP 2
#define PROBE_PROCESS 3
#define PROBE_COUNT 4

#ifdef PIN_DIR
#define ORT_NAME(name) #name
#define COUNTER_MAP(type, key, leaf, name, max) \
    BPF_TABLE_PINNED(type, key, leaf, name, max, PIN_DIR "/" ORT_NAME(name))
#else
#define COUNTER_MAP(type, key, leaf, name, max) BPF_TABLE(type, key, leaf, name, max)
#endif

COUNTER_MAP("hash", u64, u8, tracked, MAX_TRACKED);
COUNTER_MAP("percpu_array", int, u64, lost_events, PROBE_COUNT);

static __always_inline int is_tracked(u64 cgroup_id)
{
    return tracked.lookup(&cgroup_id) != NULL;
}

static __always_inline void count_lost(int probe)
{
    int key = probe;
    u64 *count = lost_events.lookup(&key);

    /* Per-CPU slot and tracepoint programs do not migrate: a plain add is enough. */
    if (count)
        *count += 1;
}

#endif /* OBSERVE_RT_COMMON_H */
