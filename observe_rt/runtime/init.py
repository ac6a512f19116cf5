"""Container init helper: the single-threaded process that becomes the container, like `runc init`.

The executor starts it as a fresh interpreter (`python -I -S init.py`) so no Python runs
between fork and exec in the (multi-threaded) caller. It talks to the caller over the socket
whose number is in $_OBSERVE_RT_SYNC_FD, one JSON object per line:

    caller                         init (intermediate)                child (container pid 1)
    puts init in its cgroups
    sends plan          ───────>   non-dumpable
                                   [new userns ──> "userns"  <─── caller writes id maps ─ "maps"]
                                   setns(paths), unshare(new)
                                   fork ─────────────────────────────> rootfs, mounts, /dev,
                        <───────   {"pid": child pid}; exits            sysctls, masks, pivot_root,
                                                                        rlimits, seccomp, user, caps
                        <──────────────────────────────────────────── {"ready": true}
    writes state, exits                                                 blocks opening exec.fifo
    `start` opens exec.fifo ───────────────────────────────────────>  closes fds > 2, execve
    Any failure: {"error": "..."} and exit 1; the caller undoes everything it made.

Imports: standard library and stdlib-only observe_rt modules only.
"""

from __future__ import annotations

import fcntl
import json
import os
import resource
import signal
import socket
import sys
import termios

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))

from observe_rt.host import libc  # noqa: E402
from observe_rt.runtime import capabilities, lsm, rootfs, seccomp  # noqa: E402

_NS_FLAGS = {
    "user": libc.CLONE_NEWUSER, "ipc": libc.CLONE_NEWIPC, "uts": libc.CLONE_NEWUTS,
    "network": libc.CLONE_NEWNET, "pid": libc.CLONE_NEWPID, "mount": libc.CLONE_NEWNS,
    "cgroup": libc.CLONE_NEWCGROUP,
}  # fmt: skip
# setns order: the user namespace first (it owns the others), mount last but one (joining it
# changes what paths mean), cgroup last.
_JOIN_ORDER = ("user", "ipc", "uts", "network", "pid", "mount", "cgroup")
_RLIM_INFINITY_FLOOR = 1 << 63


class Channel:
    def __init__(self, fd: int) -> None:
        self.sock = socket.socket(fileno=fd)
        self.reader = self.sock.makefile("r")

    def send(self, **message) -> None:
        self.sock.sendall(json.dumps(message).encode() + b"\n")

    def receive(self) -> dict:
        line = self.reader.readline()
        if not line:
            raise EOFError("the runtime closed the sync socket")
        return json.loads(line)


def main() -> None:
    channel = Channel(int(os.environ["_OBSERVE_RT_SYNC_FD"]))
    try:
        libc.prctl(libc.PR_SET_DUMPABLE, 0)  # CVE-2019-5736: nobody may open /proc/<us>/exe
        plan = channel.receive()
        if plan.get("exec"):
            exec_in_container(plan, channel)
        # Opened before any user namespace: the mapped ids may not reach the state root.
        plan["state_dir_fd"] = os.open(plan["state_dir"], os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
        enter_namespaces(plan, channel)
        pid = os.fork()
        if pid:
            channel.send(pid=pid)
            os._exit(0)
        container_init(plan, channel)
    except BaseException as err:  # noqa: BLE001 - every failure must reach the caller
        _fail(channel, err)


def _fail(channel: Channel, err: BaseException) -> None:
    message = f"{err}" if isinstance(err, OSError) else f"{type(err).__name__}: {err}"
    try:
        channel.send(error=message)
    except OSError:  # after `create` returned, only the container's stderr is left
        print(f"observe-rt init: {message}", file=sys.stderr)
    os._exit(1)


def enter_namespaces(plan: dict, channel: Channel) -> None:
    by_type = {ns["type"]: ns for ns in plan["namespaces"]}
    # Open every path first: once in another mount namespace, /proc/<pid> means something else.
    fds = {t: os.open(ns["path"], os.O_RDONLY | os.O_CLOEXEC)
           for t, ns in by_type.items() if ns["path"]}  # fmt: skip
    try:
        for ns_type in _JOIN_ORDER:
            if ns_type in fds:
                libc.setns(fds[ns_type], _NS_FLAGS[ns_type])
    finally:
        for fd in fds.values():
            os.close(fd)
    new = [t for t, ns in by_type.items() if not ns["path"]]
    if "user" in new:
        libc.unshare(libc.CLONE_NEWUSER)
        channel.send(userns=True)
        channel.receive()  # the caller has written our uid_map and gid_map
        os.setresgid(0, 0, 0)
        os.setresuid(0, 0, 0)
    flags = 0
    for ns_type in new:
        if ns_type != "user":
            flags |= _NS_FLAGS[ns_type]
    if flags:
        libc.unshare(flags)


def container_init(plan: dict, channel: Channel) -> None:
    process = plan["process"]
    if plan["seccomp"]:
        seccomp.preload()
    if any(ns["type"] == "mount" for ns in plan["namespaces"]):
        build_rootfs(plan)
    if plan["hostname"]:
        libc.sethostname(plan["hostname"])
    if plan["domainname"]:
        libc.setdomainname(plan["domainname"])
    enter_cwd(process["cwd"])
    executable = find_executable(process["args"][0], process["path"])
    set_oom_score_adj(process["oom_score_adj"])
    lsm.set_exec_labels(process["apparmor_profile"], process["selinux_label"])
    for number, soft, hard in process["rlimits"]:
        resource.setrlimit(number, (_rlim(soft), _rlim(hard)))
    if process["terminal"]:  # a session of its own, with the pty on fd 0 as its terminal
        os.setsid()
        fcntl.ioctl(0, termios.TIOCSCTTY, 0)
    lock_down(plan)
    channel.send(ready=True)
    channel.sock.close()
    wait_for_start(plan["state_dir_fd"])
    exec_workload(executable, process)


def exec_in_container(plan: dict, channel: Channel) -> None:
    """ExecSync: join every namespace of a running container, then run one command in it.

    This process stays outside (it joined the pid namespace only for its child), waits for
    the command and reports its exit code; the command leads its own session, so a timeout can
    kill the whole tree it started.
    """
    if plan["seccomp"]:
        seccomp.preload()
    enter_namespaces(plan, channel)
    child = os.fork()
    if child == 0:
        try:
            os.setsid()
            if plan.get("tty"):  # stdin, stdout and stderr are the slave of the caller's pty
                fcntl.ioctl(0, termios.TIOCSCTTY, 0)
            run_exec_process(plan)
        except BaseException as err:  # noqa: BLE001 - the caller must hear why
            _fail(channel, err)
    if plan.get("tty"):
        _release_stdio()  # the pty hangs up once the command's side is closed, not ours too
    channel.send(pid=child)
    _, status = os.waitpid(child, 0)
    code = os.waitstatus_to_exitcode(status)
    channel.send(exit=128 - code if code < 0 else code)
    os._exit(0)


def _release_stdio() -> None:
    for fd in (0, 1, 2):
        try:
            os.close(fd)
        except OSError:
            pass


def run_exec_process(plan: dict) -> None:
    """The command gets the container's user, capabilities, no_new_privs and seccomp."""
    process = plan["process"]
    enter_cwd(process["cwd"])
    executable = find_executable(process["args"][0], process["path"])
    for number, soft, hard in process["rlimits"]:
        resource.setrlimit(number, (_rlim(soft), _rlim(hard)))
    lock_down(plan)
    exec_workload(executable, process)


def lock_down(plan: dict) -> None:
    """User, capabilities, no_new_privs and seccomp, in the order that keeps each possible."""
    process = plan["process"]
    if plan["seccomp"] and not process["no_new_privileges"]:
        seccomp.load(plan["seccomp"], no_new_privs=False)  # needs CAP_SYS_ADMIN: before caps
    caps = process["capabilities"]
    drop_bounding(caps["bounding"])  # needs CAP_SETPCAP, gone after a switch to non-root
    switch_user(process)
    # A uid change resets dumpability to fs.suid_dumpable: make sure it stays off until exec.
    libc.prctl(libc.PR_SET_DUMPABLE, 0)
    set_capabilities(caps)
    if process["no_new_privileges"]:
        libc.prctl(libc.PR_SET_NO_NEW_PRIVS, 1)
    if plan["seccomp"] and process["no_new_privileges"]:
        seccomp.load(plan["seccomp"], no_new_privs=True)


def build_rootfs(plan: dict) -> None:
    root = rootfs.prepare(plan["rootfs"]["path"], plan["rootfs_propagation"])
    rootfs.mount_all(root, plan["mounts"], plan["cgroup_hierarchies"], plan["mount_label"])
    if any(m["destination"] == "/dev" for m in plan["mounts"]):
        new_userns = any(ns["type"] == "user" and not ns["path"] for ns in plan["namespaces"])
        rootfs.populate_dev(root, plan["devices"], bind_from_host=new_userns)
    # Sysctls go through the host's /proc, which answers for the namespaces we are now in.
    for path, value in plan["sysctl"].items():
        with open(f"/proc/sys/{path}", "w") as f:
            f.write(value)
    rootfs.mask_paths(root, plan["masked_paths"])
    rootfs.readonly_paths(root, plan["readonly_paths"])
    rootfs.pivot(root, plan["rootfs_propagation"], plan["rootfs"]["readonly"])


def enter_cwd(cwd: str) -> None:
    """chdir, then refuse a cwd outside the container's root (CVE-2024-21626: a cwd such as
    /proc/self/fd/N reaches the host through a descriptor this process still holds). The
    kernel cannot name such a directory from our root, so getcwd fails with ENOENT; runc
    checks the same way."""
    os.chdir(cwd)
    try:
        os.getcwd()
    except FileNotFoundError:
        raise PermissionError(
            f"process.cwd {cwd}: outside the container's root (through a descriptor?); refused"
        ) from None


def find_executable(name: str, search_path: str) -> str:
    """Resolve args[0] in the container now, so a missing binary fails `create`, not `start`."""
    candidates = [name] if "/" in name else [os.path.join(d, name) for d in search_path.split(":")]
    for candidate in candidates:
        if os.path.isfile(candidate) and os.access(candidate, os.X_OK):
            return candidate
    raise FileNotFoundError(f'exec: "{name}": executable file not found in $PATH')


def set_oom_score_adj(value: int | None) -> None:
    if value is None:
        return
    try:
        with open("/proc/self/oom_score_adj", "w") as f:
            f.write(str(value))
    except OSError as err:
        # Some kernels refuse negative values (EIO on this VM); the container still runs.
        print(f"observe-rt init: warning: oom_score_adj {value}: {err.strerror}", file=sys.stderr)


def _rlim(value: int) -> int:
    return resource.RLIM_INFINITY if value >= _RLIM_INFINITY_FLOOR else value


def switch_user(process: dict) -> None:
    """setgroups/setgid/setuid, keeping the permitted capabilities across the uid change."""
    libc.prctl(libc.PR_SET_KEEPCAPS, 1)
    os.setgroups(process["additional_gids"])
    os.setresgid(process["gid"], process["gid"], process["gid"])
    os.setresuid(process["uid"], process["uid"], process["uid"])
    libc.prctl(libc.PR_SET_KEEPCAPS, 0)
    if process["umask"] is not None:
        os.umask(process["umask"])


def drop_bounding(bounding: int) -> None:
    for number in range(capabilities.last_cap() + 1):
        if not bounding & (1 << number):
            libc.prctl(libc.PR_CAPBSET_DROP, number)


def set_capabilities(caps: dict) -> None:
    libc.capset(caps["effective"], caps["permitted"], caps["inheritable"])
    libc.prctl(libc.PR_CAP_AMBIENT, libc.PR_CAP_AMBIENT_CLEAR_ALL)
    for number in range(capabilities.last_cap() + 1):
        if caps["ambient"] & (1 << number):
            libc.prctl(libc.PR_CAP_AMBIENT, libc.PR_CAP_AMBIENT_RAISE, number)


def wait_for_start(fifo_dir: int) -> None:
    """Block until `start` opens the exec fifo for reading, then tell it we are going."""
    fd = os.open("exec.fifo", os.O_WRONLY | os.O_CLOEXEC, dir_fd=fifo_dir)
    os.close(fifo_dir)
    os.write(fd, b"0")
    os.close(fd)


def exec_workload(executable: str, process: dict) -> None:
    # Python ignores SIGPIPE and SIGXFSZ, and ignored signals survive exec: give them back.
    for sig in (signal.SIGPIPE, signal.SIGXFSZ):
        signal.signal(sig, signal.SIG_DFL)
    signal.pthread_sigmask(signal.SIG_SETMASK, [])
    libc.close_range(3)  # CVE-2024-21626: the workload gets 0, 1 and 2 only
    env = dict(entry.split("=", 1) for entry in process["env"])
    os.execve(executable, process["args"], env)


if __name__ == "__main__":
    main()
