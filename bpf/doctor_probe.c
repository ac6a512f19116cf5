/*
 * doctor_probe.c: the smallest program `observe-rt doctor` compiles and attaches, to prove
 * that bcc, the kernel headers it compiles against, the bpf() syscall and tracepoint attach
 * all work on this host (doctor reports how long compile and attach took).
 *
 * Hook: tracepoint sched:sched_process_exec. It is a stable tracepoint present on every
 *       kernel observe-rt supports and needs no kprobes; it fires once per execve, so doctor
 *       can make it fire on demand by running /bin/true.
 * Maps: exec_count, a one-slot BPF_ARRAY (u64) counting the execs seen while attached.
 * Overhead: one map lookup and one atomic add per execve on the host, only for the few
 *       milliseconds doctor keeps it attached.
 * Caveats: counts every exec on the host, not only doctor's, so doctor checks for >= 1,
 *       never an exact count. It reads no tracepoint arguments and no kernel struct, so it
 *       compiles against substitute headers (e.g. Debian 6.1 headers for a 6.18 kernel).
 *       Attached by name from Python (attach_tracepoint), not via TRACEPOINT_PROBE, so the
 *       compile and attach steps can be timed separately.
 */

BPF_ARRAY(exec_count, u64, 1);

int doctor_exec(void *ctx)
{
    int key = 0;
    u64 *count = exec_count.lookup(&key);

    if (count)
        __sync_fetch_and_add(count, 1);
    return 0;
}
