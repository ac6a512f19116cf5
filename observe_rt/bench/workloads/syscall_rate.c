/*
 * syscall_rate: time N calls of getppid(2) and print the cost of one call.
 * Built static by `observe-rt bench` (gcc -static -O2) into the probe benchmark's image.
 * getppid does no work in the kernel, so the figure is the syscall path itself: entry, exit
 * and whatever runs on the raw_syscalls tracepoints (the probes' cost per syscall).
 *
 *   syscall_rate N      prints "calls N ns_total T ns_per_call X"
 * The clock is CLOCK_MONOTONIC through the vDSO: reading it makes no syscall.
 */
#include <stdio.h>
#include <stdlib.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

static long long now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

int main(int argc, char **argv)
{
    if (argc != 2) {
        fprintf(stderr, "usage: %s N\n", argv[0]);
        return 2;
    }
    long n = strtol(argv[1], NULL, 10);
    if (n <= 0) {
        fprintf(stderr, "N must be a positive number\n");
        return 2;
    }
    long long start = now_ns();
    for (long i = 0; i < n; i++)
        syscall(SYS_getppid);
    long long total = now_ns() - start;
    printf("calls %ld ns_total %lld ns_per_call %.2f\n", n, total, (double)total / n);
    return 0;
}
