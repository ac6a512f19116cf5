/*
 * syscall_loop: make an exact number of calls of one syscall, then exit with a chosen code.
 * Built static by the probe tests (gcc -static), so no dynamic loader adds syscalls.
 *
 *   syscall_loop getcpu N [CODE]   N x syscall(SYS_getcpu): rare, libc never calls it itself
 *   syscall_loop getppid N [CODE]  N x syscall(SYS_getppid): the neighbour's workload
 *   syscall_loop enoent N [CODE]   N x open() of a missing file (openat on x86_64/aarch64)
 */
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <unistd.h>

int main(int argc, char **argv)
{
    if (argc < 3) {
        fprintf(stderr, "usage: %s getcpu|getppid|enoent N [CODE]\n", argv[0]);
        return 2;
    }
    long n = strtol(argv[2], NULL, 10);
    int code = argc > 3 ? atoi(argv[3]) : 0;
    unsigned cpu, node;

    for (long i = 0; i < n; i++) {
        if (strcmp(argv[1], "getcpu") == 0)
            syscall(SYS_getcpu, &cpu, &node, NULL);
        else if (strcmp(argv[1], "getppid") == 0)
            syscall(SYS_getppid);
        else if (strcmp(argv[1], "enoent") == 0)
            open("/nonexistent-observe-rt-probe-test/missing", O_RDONLY);
        else
            return 2;
    }
    return code;
}
