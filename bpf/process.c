/*
 * process.c: exec and exit of every process in a tracked container, for the live view and
 * traces (which program ran, when, how it ended).
 *
 * Hooks:
 *   sched:sched_process_exec   after a successful execve, in the new program's context:
 *                              filename, pid, comm (already the new one).
 *   sched:sched_process_exit   each exiting thread; an event only when the whole process is
 *                              gone (group_dead, or the leader on kernels without that field).
 *   syscalls:sys_enter_exit_group, signal:signal_deliver (optional): the tracepoints carry
 *                              no exit code, so it is noted where it is decided: the exit_group
 *                              argument (always wins), or the first fatal default-action signal.
 * Maps:
 *   proc_exit_status  tgid -> wait(2)-style status (code << 8, or the signal number); LRU.
 *   proc_events       ring buffer (perf buffer without USE_RINGBUF) of exec/exit events.
 * Overhead: one cgroup lookup per exec, thread exit, exit_group and delivered signal on the
 *       host; one event per exec/exit in tracked containers (rare next to syscalls).
 * Caveats: a pid-namespace init ignores default-action SIGTERM/SIGINT, which this probe still
 *       notes; if that process is later SIGKILLed the status names the earlier signal. An exit
 *       via the plain exit syscall of the last thread has no status (-1). Exit codes here are
 *       best effort for display; the pod shim's waitpid stays the authority.
 */
#include "common.h"

#ifndef PROC_FILENAME_LEN
#define PROC_FILENAME_LEN 256
#endif
#ifndef PROC_MAX_STATUS
#define PROC_MAX_STATUS 4096
#endif
#ifndef PROC_RINGBUF_PAGES
/* 2 MiB: a few seconds of events at thousands per second, so a daemon thread starved by a busy
 * node catches up instead of losing them (64 pages lost 3% under `make bench` load). */
#define PROC_RINGBUF_PAGES 512
#endif

#define PROC_EXEC 1
#define PROC_EXIT 2

struct proc_exec_event {
    u32 kind;
    u32 pid;
    u64 time_ns;
    u64 cgroup_id;
    u32 old_pid;
    u32 pad;
    char comm[16];
    char filename[PROC_FILENAME_LEN];
};

struct proc_exit_event {
    u32 kind;
    u32 pid;
    u64 time_ns;
    u64 cgroup_id;
    s32 status; /* -1: unknown */
    u32 pad;
    char comm[16];
};

BPF_TABLE("lru_hash", u32, s32, proc_exit_status, PROC_MAX_STATUS);
#ifdef USE_RINGBUF
BPF_RINGBUF_OUTPUT(proc_events, PROC_RINGBUF_PAGES);
#else
BPF_PERF_OUTPUT(proc_events);
#endif

int proc_exec(struct tp_sched__sched_process_exec *args)
{
    struct proc_exec_event event = {.kind = PROC_EXEC};

    event.cgroup_id = bpf_get_current_cgroup_id();
    if (!is_tracked(event.cgroup_id))
        return 0;
    event.time_ns = bpf_ktime_get_ns();
    event.pid = args->pid;
    event.old_pid = args->old_pid;
    bpf_get_current_comm(&event.comm, sizeof(event.comm));
    TP_DATA_LOC_READ_STR(&event.filename, filename, sizeof(event.filename));
#ifdef USE_RINGBUF
    if (proc_events.ringbuf_output(&event, sizeof(event), 0) != 0)
        count_lost(PROBE_PROCESS);
#else
    if (proc_events.perf_submit(args, &event, sizeof(event)) != 0)
        count_lost(PROBE_PROCESS);
#endif
    return 0;
}

int proc_exit(struct tp_sched__sched_process_exit *args)
{
    u64 pid_tgid = bpf_get_current_pid_tgid();
    u32 tgid = pid_tgid >> 32;
    struct proc_exit_event event = {.kind = PROC_EXIT, .pid = tgid, .status = -1};

#ifdef PROC_HAS_GROUP_DEAD
    if (!args->group_dead)
        return 0;
#else
    if ((u32)pid_tgid != tgid)
        return 0;
#endif
    event.cgroup_id = bpf_get_current_cgroup_id();
    if (!is_tracked(event.cgroup_id))
        return 0;
    event.time_ns = bpf_ktime_get_ns();
    __builtin_memcpy(event.comm, args->comm, sizeof(event.comm));
    s32 *status = proc_exit_status.lookup(&tgid);
    if (status) {
        event.status = *status;
        proc_exit_status.delete(&tgid);
    }
#ifdef USE_RINGBUF
    if (proc_events.ringbuf_output(&event, sizeof(event), 0) != 0)
        count_lost(PROBE_PROCESS);
#else
    if (proc_events.perf_submit(args, &event, sizeof(event)) != 0)
        count_lost(PROBE_PROCESS);
#endif
    return 0;
}

#ifdef HAVE_TP_syscalls__sys_enter_exit_group
int proc_exit_group(struct tp_syscalls__sys_enter_exit_group *args)
{
    if (!is_tracked(bpf_get_current_cgroup_id()))
        return 0;
    u32 tgid = bpf_get_current_pid_tgid() >> 32;
    s32 status = (args->error_code & 0xff) << 8;
    proc_exit_status.update(&tgid, &status);  /* overrides a signal noted earlier */
    return 0;
}
#endif

#ifdef HAVE_TP_signal__signal_deliver
/* Default action of `sig` terminates the process (signal(7); same numbers on x86_64/arm64). */
static __always_inline int proc_fatal_by_default(int sig)
{
    switch (sig) {
    case 17: /* SIGCHLD */
    case 18: /* SIGCONT */
    case 19: /* SIGSTOP */
    case 20: /* SIGTSTP */
    case 21: /* SIGTTIN */
    case 22: /* SIGTTOU */
    case 23: /* SIGURG */
    case 28: /* SIGWINCH */
        return 0;
    }
    return sig > 0 && sig < 32;
}

int proc_signal(struct tp_signal__signal_deliver *args)
{
    int sig = args->sig;

    if (args->sa_handler != 0 || !proc_fatal_by_default(sig))
        return 0;  /* a handler runs, or the default is to ignore/stop */
    if (!is_tracked(bpf_get_current_cgroup_id()))
        return 0;
    u32 tgid = bpf_get_current_pid_tgid() >> 32;
    s32 status = sig;
    /* First fatal signal wins: the SIGKILLs a group exit sends to the other threads come later. */
    proc_exit_status.insert(&tgid, &status);
    return 0;
}
#endif
