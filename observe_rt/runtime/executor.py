"""The executor: create, start, kill and delete containers from OCI bundles.

It never runs Python between fork and exec: the container is built by init.py, a freshly
exec'd interpreter, and this side only talks to it over a socket (see init.py for the
protocol). Every step of `create` registers its undo, so a failure leaves nothing behind:
no process, cgroup, fifo or state directory.
"""

from __future__ import annotations

import contextlib
import json
import os
import select
import shutil
import signal
import socket
import subprocess
import sys
import time
from datetime import UTC, datetime

from observe_rt.errors import AlreadyExists, FailedPrecondition, InvalidArgument, ObserveRtError
from observe_rt.host import libc
from observe_rt.runtime import cgroups, spec
from observe_rt.runtime.state import (
    DEFAULT_ROOT,
    FIFO,
    ContainerState,
    StateRoot,
    process_start_time,
)

INIT_SCRIPT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "init.py")
_INIT_TIMEOUT = 30.0


class ContainerError(ObserveRtError):
    """The container could not be built (the init helper reported why)."""


class Executor:
    def __init__(self, root: str = DEFAULT_ROOT) -> None:
        self.states = StateRoot(root)
        os.makedirs(root, mode=0o711, exist_ok=True)

    # --- create -----------------------------------------------------------------------------

    def create(
        self,
        container_id: str,
        bundle: str,
        pid_file: str | None = None,
        stdio: tuple[int | None, int | None, int | None] = (None, None, None),
    ) -> ContainerState:
        """Create the container; `stdio` are the workload's fds 0, 1, 2 (None: inherit ours).

        A process.terminal container needs a terminal as stdin: the pod shim passes the slave
        of a pty it holds (there is no --console-socket), and init makes it the controlling one.
        """
        directory = self.states.dir(container_id)
        steps = _StepClock()
        with steps.step("spec"):
            config = spec.load_bundle(bundle)
            plan = spec.build_plan(config, bundle, container_id)
        if plan["process"]["terminal"] and not (stdio[0] is not None and os.isatty(stdio[0])):
            raise InvalidArgument("process.terminal: needs a terminal as stdin (the pod shim "
                                  "gives one); --console-socket is not supported")  # fmt: skip
        linux = config.get("linux") or {}
        try:
            cgroup_plan = cgroups.plan(
                linux.get("resources"), linux.get("cgroupsPath"), cgroups.detect_layout(),
                container_id,
            )  # fmt: skip
        except ValueError as err:
            raise InvalidArgument(str(err)) from None
        try:
            os.mkdir(directory, 0o711)  # the container (maybe non-root) must reach exec.fifo
        except FileExistsError:
            raise AlreadyExists(f"container {container_id} already exists") from None
        with contextlib.ExitStack() as undo:
            undo.callback(shutil.rmtree, directory, ignore_errors=True)
            os.mkfifo(os.path.join(directory, FIFO), 0o622)
            os.chmod(os.path.join(directory, FIFO), 0o622)  # mkfifo honours the umask
            manager = cgroups.CgroupManager(cgroup_plan)
            with steps.step("cgroups"):
                manager.create()
            undo.callback(manager.destroy)
            plan["state_dir"] = directory
            plan["cgroup_hierarchies"] = cgroup_hierarchies()
            with steps.step("init"):  # namespaces, rootfs, capabilities ... up to exec.fifo
                pid = self._run_init(plan, manager, undo, stdio)
            manager.apply_after_init()
            state = ContainerState(
                id=container_id,
                bundle=os.path.abspath(bundle),
                pid=pid,
                pid_start_time=process_start_time(pid) or 0,
                annotations=config.get("annotations") or {},
                created=datetime.now(UTC).isoformat(),
                rootfs=plan["rootfs"]["path"],
                cgroup=manager.to_state(),
                cgroup_id=manager.cgroup_id(),
            )
            self.states.save(state)
            _write_atomic(os.path.join(directory, "steps.json"), json.dumps({"steps": steps.rows}))
            if pid_file:
                _write_atomic(pid_file, f"{pid}")
            undo.pop_all()
        return state

    def _run_init(self, plan: dict, manager, undo: contextlib.ExitStack, stdio) -> int:
        """Start init.py, drive it through set-up, and return the container's host pid."""
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        with ours:
            env = {"_OBSERVE_RT_SYNC_FD": str(theirs.fileno())}
            init = subprocess.Popen(
                [sys.executable, "-I", "-S", INIT_SCRIPT], pass_fds=[theirs.fileno()], env=env,
                stdin=stdio[0], stdout=stdio[1], stderr=stdio[2],
            )  # fmt: skip
            theirs.close()
            undo.callback(_reap, init)
            manager.add_process(init.pid)  # before unshare(cgroup): its cgroup is the ns root
            channel = InitChannel(ours)
            channel.send(plan)
            message = channel.receive()
            if message.get("userns"):
                _write_id_maps(init.pid, plan)
                channel.send({"maps": True})
                message = channel.receive()
            # The intermediate's {"pid"} and the child's {"ready"} share the socket and may
            # arrive in either order (a throttled cgroup can hold the intermediate back).
            got = dict(message)
            while "pid" not in got:
                got.update(channel.receive())
            undo.callback(_kill, got["pid"])
            init.wait()
            while "ready" not in got:
                got.update(channel.receive())
            return got["pid"]

    # --- start, state, kill, delete ------------------------------------------------------------

    def start(self, container_id: str) -> None:
        with self.states.locked(container_id):
            state = self.states.load(container_id)
            status = self.states.status(state)
            if status != "created":
                raise FailedPrecondition(f"container {container_id} is {status}, not created")
            fifo = os.path.join(self.states.dir(container_id), FIFO)
            fd = os.open(fifo, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
            try:
                _await_start_byte(fd, state)
            finally:
                os.close(fd)
                os.unlink(fifo)

    def state(self, container_id: str) -> dict:
        state = self.states.load(container_id)
        return state.to_oci(self.states.status(state))

    def list(self) -> list[dict]:
        result = []
        for container_id in self.states.ids():
            with contextlib.suppress(ObserveRtError):
                result.append(self.state(container_id))
        return result

    def kill(self, container_id: str, sig: int = signal.SIGTERM, all_processes: bool = False):
        state = self.states.load(container_id)
        status = self.states.status(state)
        if status == "stopped":
            raise FailedPrecondition(f"container {container_id} is not running")
        if all_processes:
            cgroups.CgroupManager.from_state(state.cgroup).kill_all(sig)
        else:
            os.kill(state.pid, sig)

    def delete(self, container_id: str, force: bool = False) -> None:
        with self.states.locked(container_id):
            state = self.states.load(container_id)
            status = self.states.status(state)
            if status == "running" and not force:
                raise FailedPrecondition(
                    f"container {container_id} is running: stop it first or use --force"
                )
            manager = cgroups.CgroupManager.from_state(state.cgroup)
            # A created container is deleted like runc does: its blocked init is killed.
            manager.kill_all(signal.SIGKILL)
            manager.destroy()
            shutil.rmtree(self.states.dir(container_id), ignore_errors=True)

    def oom_killed(self, container_id: str) -> bool:
        """Whether the memory cgroup OOM-killed anything in the container."""
        try:
            saved = self.states.load(container_id).cgroup
            return cgroups.CgroupManager.from_state(saved).oom_kill_count() > 0
        except (ObserveRtError, OSError, KeyError, ValueError):
            return False

    # --- run ---------------------------------------------------------------------------------

    def run(self, container_id: str, bundle: str) -> int:
        """create + start + wait + delete; returns the exit code (128+N when killed by N)."""
        libc.prctl(libc.PR_SET_CHILD_SUBREAPER, 1)  # the workload is reparented to us
        state = self.create(container_id, bundle)
        forward = _forward_signals(state.pid)
        try:
            self.start(container_id)
            return _wait_exit_code(state.pid)
        finally:
            for sig, handler in forward.items():
                signal.signal(sig, handler)
            self.delete(container_id, force=True)


class _StepClock:
    """Wall-clock times of create's steps. The executor runs in the pod shim, another process:
    it leaves them in steps.json beside the state, and the daemon's trace shows them."""

    def __init__(self) -> None:
        self.rows: list[list] = []  # [name, start_ns, end_ns]

    @contextlib.contextmanager
    def step(self, name: str):
        start = time.time_ns()
        yield
        self.rows.append([name, start, time.time_ns()])


class InitChannel:
    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.reader = sock.makefile("r")
        sock.settimeout(_INIT_TIMEOUT)

    def send(self, message: dict) -> None:
        self.sock.sendall(json.dumps(message).encode() + b"\n")

    def receive(self) -> dict:
        try:
            line = self.reader.readline()
        except TimeoutError:
            raise ContainerError(f"container init gave no answer in {_INIT_TIMEOUT:.0f}s") from None
        if not line:
            raise ContainerError("container init exited without saying why")
        message = json.loads(line)
        if "error" in message:
            raise ContainerError(f"container init: {message['error']}")
        return message


def cgroup_hierarchies(mountinfo: str = "/proc/self/mountinfo") -> list[dict]:
    """The host's cgroup mounts, as the container's /sys/fs/cgroup should show them."""
    hierarchies = []
    with open(mountinfo) as f:
        for line in f:
            fields = line.split()
            sep = fields.index("-")
            fs_type, super_options = fields[sep + 1], fields[sep + 3]
            if fs_type not in ("cgroup", "cgroup2"):
                continue
            options = [o for o in super_options.split(",") if o not in ("rw", "ro")]
            hierarchies.append({
                "name": os.path.basename(fields[4]),
                "type": fs_type,
                "options": ",".join(options) if fs_type == "cgroup" else "",
            })  # fmt: skip
    return hierarchies


def _write_id_maps(pid: int, plan: dict) -> None:
    for kind, key in (("uid", "uid_mappings"), ("gid", "gid_mappings")):
        lines = "".join(
            f"{m['containerID']} {m['hostID']} {m['size']}\n" for m in plan[key]
        )  # fmt: skip
        with open(f"/proc/{pid}/{kind}_map", "w") as f:
            f.write(lines)


def _await_start_byte(fd: int, state: ContainerState) -> None:
    """Wait for the init to open the fifo and write; fail if it died instead."""
    while True:
        ready, _, _ = select.select([fd], [], [], 0.1)
        if ready and os.read(fd, 1):
            return
        if process_start_time(state.pid) != state.pid_start_time:
            raise ContainerError(f"container {state.id} init exited before start")


def _reap(process: subprocess.Popen) -> None:
    with contextlib.suppress(ProcessLookupError):
        process.kill()
    process.wait()


def _kill(pid: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)
    _reap_pid(pid)


def _reap_pid(pid: int) -> None:
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pid, 0)


def _forward_signals(pid: int) -> dict:
    def forward(sig: int, _frame) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, sig)

    previous = {}
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT):
        previous[sig] = signal.signal(sig, forward)
    return previous


def _wait_exit_code(pid: int) -> int:
    while True:
        try:
            _, status = os.waitpid(pid, 0)
        except InterruptedError:
            continue
        except ChildProcessError:
            # Not our child (no subreaper above us): poll until it is gone.
            while os.path.exists(f"/proc/{pid}"):
                time.sleep(0.05)
            return 0
        if os.WIFSIGNALED(status):
            return 128 + os.WTERMSIG(status)
        return os.WEXITSTATUS(status)


def _write_atomic(path: str, text: str) -> None:
    temp = f"{path}.tmp"
    with open(temp, "w") as f:
        f.write(text)
    os.rename(temp, path)
