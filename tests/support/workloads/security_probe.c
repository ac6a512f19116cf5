/* security_probe: tries one thing a confined workload must not be able to do and prints
 * "<what> ok" or "<what> <errno name>". Built static by the security tests and put into
 * the test image (busybox has no applet for bpf or ptrace).
 *
 *   security_probe bpf            create a BPF array map
 *   security_probe mount          mount a tmpfs on /mnt
 *   security_probe ptrace <pid>   PTRACE_ATTACH to pid (a host pid: outside the container)
 *   security_probe unshare        a new user + mount namespace
 *   security_probe fds            every open descriptor but the one listing them: "fd <n> <target>"
 */
#define _GNU_SOURCE
#include <dirent.h>
#include <errno.h>
#include <linux/bpf.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/ptrace.h>
#include <sys/syscall.h>
#include <unistd.h>

static int report(const char *what, long rc) {
    if (rc < 0) {
        printf("%s %s\n", what, strerrorname_np(errno));
        return 1;
    }
    printf("%s ok\n", what);
    return 0;
}

static int list_fds(void) {
    DIR *dir = opendir("/proc/self/fd");
    if (dir == NULL)
        return report("fds", -1);
    struct dirent *entry;
    while ((entry = readdir(dir)) != NULL) {
        if (entry->d_name[0] == '.' || atoi(entry->d_name) == dirfd(dir))
            continue;
        char path[64], target[4096];
        snprintf(path, sizeof path, "/proc/self/fd/%s", entry->d_name);
        ssize_t n = readlink(path, target, sizeof target - 1);
        target[n < 0 ? 0 : n] = '\0';
        printf("fd %s %s\n", entry->d_name, target);
    }
    closedir(dir);
    return 0;
}

int main(int argc, char **argv) {
    if (argc < 2)
        return 2;
    if (strcmp(argv[1], "bpf") == 0) {
        union bpf_attr attr;
        memset(&attr, 0, sizeof attr);
        attr.map_type = BPF_MAP_TYPE_ARRAY;
        attr.key_size = 4;
        attr.value_size = 4;
        attr.max_entries = 1;
        return report("bpf", syscall(SYS_bpf, BPF_MAP_CREATE, &attr, sizeof attr));
    }
    if (strcmp(argv[1], "mount") == 0)
        return report("mount", mount("none", "/mnt", "tmpfs", 0, NULL));
    if (strcmp(argv[1], "ptrace") == 0 && argc > 2)
        return report("ptrace", ptrace(PTRACE_ATTACH, atoi(argv[2]), NULL, NULL));
    if (strcmp(argv[1], "unshare") == 0)
        return report("unshare", unshare(CLONE_NEWUSER | CLONE_NEWNS));
    if (strcmp(argv[1], "fds") == 0)
        return list_fds();
    return 2;
}
