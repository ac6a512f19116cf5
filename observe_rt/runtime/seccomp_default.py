"""The RuntimeDefault seccomp profile, as an OCI `linux.seccomp` object.

Mirrors containerd's contrib/seccomp/seccomp_default.go (itself a copy of moby's
profiles/seccomp/default.json): default action ERRNO(EPERM), a large allow list, extra syscalls
per capability in the bounding set, clone without namespace flags, clone3 -> ENOSYS.

Note, as upstream: ptrace is allowed to everyone on kernels >= 4.8, where it can no longer be
used to escape seccomp; CAP_SYS_PTRACE adds process_vm_*, kcmp, pidfd_getfd, process_madvise.
Standard library only: the container init helper (`python -I -S`) imports it.
"""

from __future__ import annotations

import errno
import os


def _words(text: str) -> tuple[str, ...]:
    """Split a whitespace-separated name list; reads better than hundreds of quoted strings."""
    return tuple(text.split())


# containerd's default bounding set (14 capabilities).
DEFAULT_CAPABILITIES = _words(
    """CAP_CHOWN CAP_DAC_OVERRIDE CAP_FSETID CAP_FOWNER CAP_MKNOD CAP_NET_RAW CAP_SETGID CAP_SETUID
    CAP_SETFCAP CAP_SETPCAP CAP_NET_BIND_SERVICE CAP_SYS_CHROOT CAP_KILL CAP_AUDIT_WRITE"""
)

# Allowed for every container. Names of other architectures are harmless: libseccomp skips them.
BASE_ALLOW = _words("""
accept accept4 access adjtimex alarm bind brk capget capset chdir chmod chown chown32
clock_adjtime clock_adjtime64 clock_getres clock_getres_time64 clock_gettime clock_gettime64
clock_nanosleep clock_nanosleep_time64 close close_range connect copy_file_range creat dup dup2
dup3 epoll_create epoll_create1 epoll_ctl epoll_ctl_old epoll_pwait epoll_pwait2 epoll_wait
epoll_wait_old eventfd eventfd2 execve execveat exit exit_group faccessat faccessat2 fadvise64
fadvise64_64 fallocate fanotify_mark fchdir fchmod fchmodat fchown fchown32 fchownat fcntl fcntl64
fdatasync fgetxattr flistxattr flock fork fremovexattr fsetxattr fstat fstat64 fstatat64 fstatfs
fstatfs64 fsync ftruncate ftruncate64 futex futex_time64 futex_waitv futimesat getcpu getcwd
getdents getdents64 getegid getegid32 geteuid geteuid32 getgid getgid32 getgroups getgroups32
getitimer getpeername getpgid getpgrp getpid getppid getpriority getrandom getresgid getresgid32
getresuid getresuid32 getrlimit get_robust_list getrusage getsid getsockname getsockopt
get_thread_area gettid gettimeofday getuid getuid32 getxattr inotify_add_watch inotify_init
inotify_init1 inotify_rm_watch io_cancel ioctl io_destroy io_getevents io_pgetevents
io_pgetevents_time64 ioprio_get ioprio_set io_setup io_submit io_uring_enter io_uring_register
io_uring_setup ipc kill landlock_add_rule landlock_create_ruleset landlock_restrict_self lchown
lchown32 lgetxattr link linkat listen listxattr llistxattr _llseek lremovexattr lseek lsetxattr
lstat lstat64 madvise membarrier memfd_create memfd_secret mincore mkdir mkdirat mknod mknodat
mlock mlock2 mlockall mmap mmap2 mprotect mq_getsetattr mq_notify mq_open mq_timedreceive
mq_timedreceive_time64 mq_timedsend mq_timedsend_time64 mq_unlink mremap msgctl msgget msgrcv
msgsnd msync munlock munlockall munmap nanosleep newfstatat _newselect open openat openat2 pause
pidfd_open pidfd_send_signal pipe pipe2 poll ppoll ppoll_time64 prctl pread64 preadv preadv2
prlimit64 process_mrelease pselect6 pselect6_time64 pwrite64 pwritev pwritev2 read readahead
readlink readlinkat readv recv recvfrom recvmmsg recvmmsg_time64 recvmsg remap_file_pages
removexattr rename renameat renameat2 restart_syscall rmdir rseq rt_sigaction rt_sigpending
rt_sigprocmask rt_sigqueueinfo rt_sigreturn rt_sigsuspend rt_sigtimedwait rt_sigtimedwait_time64
rt_tgsigqueueinfo sched_getaffinity sched_getattr sched_getparam sched_get_priority_max
sched_get_priority_min sched_getscheduler sched_rr_get_interval sched_rr_get_interval_time64
sched_setaffinity sched_setattr sched_setparam sched_setscheduler sched_yield seccomp select
semctl semget semop semtimedop semtimedop_time64 send sendfile sendfile64 sendmmsg sendmsg sendto
setfsgid setfsgid32 setfsuid setfsuid32 setgid setgid32 setgroups setgroups32 setitimer setpgid
setpriority setregid setregid32 setresgid setresgid32 setresuid setresuid32 setreuid setreuid32
setrlimit set_robust_list setsid setsockopt set_thread_area set_tid_address setuid setuid32
setxattr shmat shmctl shmdt shmget shutdown sigaltstack signalfd signalfd4 sigprocmask sigreturn
socket socketcall socketpair splice stat stat64 statfs statfs64 statx symlink symlinkat sync
sync_file_range syncfs sysinfo tee tgkill time timer_create timer_delete timer_getoverrun
timer_gettime timer_gettime64 timer_settime timer_settime64 timerfd_create timerfd_gettime
timerfd_gettime64 timerfd_settime timerfd_settime64 times tkill truncate truncate64 ugetrlimit
umask uname unlink unlinkat utime utimensat utimensat_time64 utimes vfork vmsplice wait4 waitid
waitpid write writev
""")

# personality(2) values a container may set: PER_LINUX, PER_LINUX32, UNAME26, UNAME26|PER_LINUX32,
# and 0xffffffff, which only queries the current persona.
PERSONALITY_ALLOWED = (0x0, 0x8, 0x20000, 0x20008, 0xFFFFFFFF)

# Per machine (os.uname): seccomp architectures, then syscalls only that machine has.
_MACHINES = {
    "x86_64": (
        ("SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_X32"),
        ("arch_prctl", "modify_ldt"),
    ),
    "aarch64": (
        ("SCMP_ARCH_ARM", "SCMP_ARCH_AARCH64"),
        (
            "arm_fadvise64_64",
            "arm_sync_file_range",
            "sync_file_range2",
            "breakpoint",
            "cacheflush",
            "set_tls",
        ),
    ),
}
_MACHINE_ALIASES = {"amd64": "x86_64", "arm64": "aarch64"}

# Syscalls a capability in the bounding set unlocks, in containerd's order.
CAPABILITY_SYSCALLS = (
    ("CAP_DAC_READ_SEARCH", ("open_by_handle_at",)),
    (
        "CAP_SYS_ADMIN",
        _words(
            """bpf clone clone3 fanotify_init fsconfig fsmount fsopen fspick lookup_dcookie mount
            mount_setattr move_mount name_to_handle_at open_tree perf_event_open quotactl
            quotactl_fd setdomainname sethostname setns syslog umount umount2 unshare"""
        ),
    ),
    ("CAP_SYS_BOOT", ("reboot",)),
    ("CAP_SYS_CHROOT", ("chroot",)),
    ("CAP_SYS_MODULE", ("delete_module", "init_module", "finit_module")),
    ("CAP_SYS_PACCT", ("acct",)),
    (
        "CAP_SYS_PTRACE",
        (
            "kcmp",
            "pidfd_getfd",
            "process_madvise",
            "process_vm_readv",
            "process_vm_writev",
            "ptrace",
        ),
    ),
    ("CAP_SYS_RAWIO", ("iopl", "ioperm")),
    ("CAP_SYS_TIME", ("settimeofday", "stime", "clock_settime", "clock_settime64")),
    ("CAP_SYS_TTY_CONFIG", ("vhangup",)),
    ("CAP_SYSLOG", ("syslog",)),
    ("CAP_BPF", ("bpf",)),
    ("CAP_PERFMON", ("perf_event_open",)),
)

# CLONE_NEWNS | NEWCGROUP | NEWUTS | NEWIPC | NEWUSER | NEWPID | NEWNET: without CAP_SYS_ADMIN,
# clone(2) is allowed only when none of these flags is set (argument 0 on x86_64 and aarch64).
CLONE_NAMESPACE_FLAGS = 0x7E020000

# Kernel that stopped ptrace from changing a syscall after seccomp checked it.
_PTRACE_SAFE_KERNEL = (4, 8)


def runtime_default_profile(
    capabilities: list[str] | None = None,
    *,
    machine: str | None = None,
    kernel_release: str | None = None,
) -> dict:
    """Return the RuntimeDefault profile for a container with this bounding set.

    capabilities: names like "CAP_SYS_ADMIN" (the "CAP_" prefix is optional); None means
    DEFAULT_CAPABILITIES. machine and kernel_release default to this host's os.uname().
    """
    caps = _normalize(DEFAULT_CAPABILITIES if capabilities is None else capabilities)
    uname = os.uname()
    machine = _MACHINE_ALIASES.get(machine or uname.machine, machine or uname.machine)
    arches, machine_syscalls = _MACHINES.get(machine, ((), ()))
    syscalls = [_allow(BASE_ALLOW)]
    syscalls += [
        _allow(["personality"], _arg(0, value, "SCMP_CMP_EQ")) for value in PERSONALITY_ALLOWED
    ]
    if _kernel_at_least(kernel_release or uname.release, _PTRACE_SAFE_KERNEL):
        syscalls.append(_allow(["ptrace"]))
    if machine_syscalls:
        syscalls.append(_allow(machine_syscalls))
    syscalls += [_allow(names) for cap, names in CAPABILITY_SYSCALLS if cap in caps]
    if "CAP_SYS_ADMIN" not in caps:
        syscalls += _namespace_restrictions()
    return {
        "defaultAction": "SCMP_ACT_ERRNO",
        "defaultErrnoRet": errno.EPERM,
        "architectures": list(arches),
        "syscalls": syscalls,
    }


def _namespace_restrictions() -> list[dict]:
    # clone3 passes its flags in a struct seccomp cannot read: answer ENOSYS (not EPERM), so
    # glibc falls back to clone, whose flags the clone rule can check (moby#42681).
    clone = _allow(["clone"], _arg(0, CLONE_NAMESPACE_FLAGS, "SCMP_CMP_MASKED_EQ", 0))
    clone3 = {"names": ["clone3"], "action": "SCMP_ACT_ERRNO", "errnoRet": errno.ENOSYS}
    return [clone, clone3]


def _allow(names: list[str] | tuple[str, ...], *args: dict) -> dict:
    return {"names": list(names), "action": "SCMP_ACT_ALLOW", "args": list(args)}


def _arg(index: int, value: int, op: str, value_two: int | None = None) -> dict:
    arg = {"index": index, "value": value, "op": op}
    if value_two is not None:
        arg["valueTwo"] = value_two
    return arg


def _normalize(capabilities: list[str] | tuple[str, ...]) -> set[str]:
    names = {cap.strip().upper() for cap in capabilities}
    return {name if name.startswith("CAP_") else "CAP_" + name for name in names}


def _kernel_at_least(release: str, wanted: tuple[int, int]) -> bool:
    # "6.18.44-fc" -> (6, 18); no `re`: it costs the init helper ~5 ms to import.
    parts = release.split(".")[:2]
    digits = ["".join(ch for ch in part[:4] if ch.isdigit()) for part in parts]
    if len(digits) < 2 or not all(digits):
        return False  # unknown kernel: keep ptrace blocked
    return (int(digits[0]), int(digits[1])) >= wanted
