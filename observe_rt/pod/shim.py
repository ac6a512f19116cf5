"""The pod shim: one process per pod, started detached so it outlives the daemon.

It holds the pod's network, ipc and uts namespaces by living in them (and a shared pid
namespace through a tiny pid-1 child), so no pause container or image is needed. It is the
child subreaper of the pod's containers: it creates them (through the executor, or runc for
that runtime handler), copies their stdout/stderr into CRI log files, and records every exit
on disk, so a daemon that was down still learns how each container ended.

    daemon ──JSON lines over <pod run dir>/shim.sock──> shim
      hello | create | start | kill | delete | reopen_log | resize | state | shutdown
      attach: after its reply the connection carries raw bytes for the container's stdin

    files it keeps in <pod run dir>:
      shim.json                   pid, start time, namespace paths       (written when ready)
      containers/<id>/started.json {pid, started_at}
      containers/<id>/exit.json    {exit_code, finished_at, reason, oom_killed}

Run as `python -m observe_rt.pod.shim --dir DIR --oci-root ROOT [--hostname H]
[--new-namespaces network,ipc,uts,pid]`.
"""

from __future__ import annotations

import argparse
import contextlib
import errno
import json
import os
import selectors
import signal
import socket
import sys
import time
from pathlib import Path

from observe_rt.errors import FailedPrecondition, NotFound, ObserveRtError
from observe_rt.host import libc
from observe_rt.host.files import write_json_atomic
from observe_rt.pod.logs import CriLogWriter
from observe_rt.pod.stdio import ContainerStdio
from observe_rt.runtime.executor import Executor
from observe_rt.runtime.external import ExternalRuntime
from observe_rt.runtime.state import process_start_time

_NS_FLAGS = {"network": libc.CLONE_NEWNET, "ipc": libc.CLONE_NEWIPC, "uts": libc.CLONE_NEWUTS}
_NS_FILES = {"network": "net", "ipc": "ipc", "uts": "uts", "pid": "pid"}


class Container:
    """What the shim tracks for one container while it lives."""

    def __init__(self, container_id: str, directory: Path, log: CriLogWriter | None,
                 stdio: ContainerStdio) -> None:  # fmt: skip
        self.id = container_id
        self.dir = directory
        self.log = log
        self.pid = 0
        self.stdio = stdio
        self.pipes = stdio.outputs  # read end fd -> "stdout" | "stderr"


class Shim:
    def __init__(self, directory: Path, oci_root: str, runtime: str = "") -> None:
        self.dir = directory
        # The built-in executor, or another OCI runtime for a CRI runtime handler.
        self.executor = ExternalRuntime(runtime, oci_root) if runtime else Executor(oci_root)
        self.containers: dict[str, Container] = {}
        self.by_pid: dict[int, Container] = {}
        self.selector = selectors.DefaultSelector()
        self.running = True
        self.pid_holder = 0

    # --- start-up ---------------------------------------------------------------------------

    def enter_namespaces(self, new: set[str], hostname: str,
                         sysctls: dict[str, str]) -> dict[str, str]:  # fmt: skip
        """Unshare the pod's namespaces in this process; returns their /proc paths.

        The pod's sysctls are set here, once, in the namespaces its containers will share.
        """
        flags = 0
        for name in new & set(_NS_FLAGS):
            flags |= _NS_FLAGS[name]
        if flags:
            libc.unshare(flags)
        if hostname and "uts" in new:
            libc.sethostname(hostname)
        for path, value in sysctls.items():
            with open(f"/proc/sys/{path}", "w") as f:
                f.write(value)
        pid = os.getpid()
        paths = {n: f"/proc/{pid}/ns/{_NS_FILES[n]}" for n in new - {"pid"}}
        if "pid" in new:
            self.pid_holder = start_pid_namespace_holder()
            paths["pid"] = f"/proc/{self.pid_holder}/ns/pid"
        return paths

    def listen(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.unlink(missing_ok=True)
        server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        server.bind(str(path))
        os.chmod(path, 0o600)
        server.listen(16)
        server.setblocking(False)
        self.selector.register(server, selectors.EVENT_READ, ("accept", None))
        self._watch_children()

    def _watch_children(self) -> None:
        """SIGCHLD wakes the loop through a pipe; reaping happens in the loop, not the handler."""
        read_end, write_end = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        signal.signal(signal.SIGCHLD, lambda *_: None)
        signal.signal(signal.SIGTERM, lambda *_: setattr(self, "running", False))
        signal.set_wakeup_fd(write_end)
        self.selector.register(read_end, selectors.EVENT_READ, ("signal", None))

    # --- the loop ---------------------------------------------------------------------------

    def serve(self) -> None:
        while self.running:
            for key, _ in self.selector.select(timeout=1.0):
                kind, data = key.data
                if kind == "accept":
                    self._accept(key.fileobj)
                elif kind == "client":
                    self._serve_client(key.fileobj, data)
                elif kind == "output":
                    self._copy_output(key.fd, data)
                else:
                    _drain(key.fd)
            self._reap()
        self._shutdown()

    def _accept(self, server: socket.socket) -> None:
        conn, _ = server.accept()
        conn.setblocking(True)
        conn.settimeout(30)
        self.selector.register(conn, selectors.EVENT_READ, ("client", conn.makefile("rb")))

    def _serve_client(self, conn: socket.socket, reader) -> None:
        try:
            line = reader.readline()
        except OSError:
            line = b""
        if not line:
            self.selector.unregister(conn)
            conn.close()
            return
        request = json.loads(line)
        if request.get("op") == "attach":
            self._attach(conn, request)
            return
        reply = self.handle(request)
        try:
            conn.sendall(json.dumps(reply).encode() + b"\n")
        except OSError:
            pass

    def handle(self, request: dict) -> dict:
        op = request.pop("op", "")
        handler = getattr(self, f"op_{op}", None)
        if handler is None:
            return {"error": f"unknown shim operation {op!r}", "code": "INVALID_ARGUMENT"}
        try:
            return {"ok": True, **(handler(**request) or {})}
        except ObserveRtError as err:
            return {"error": str(err), "code": err.grpc_code}
        except (OSError, ValueError, KeyError, TypeError) as err:
            return {"error": f"{op}: {err}", "code": "INTERNAL"}

    # --- operations -------------------------------------------------------------------------

    def op_hello(self) -> dict:
        return {"pid": os.getpid()}

    def op_create(self, id: str, bundle: str, log_path: str = "", stdin: bool = False,  # noqa: A002
                  stdin_once: bool = False, tty: bool = False) -> dict:  # fmt: skip
        directory = self.dir / "containers" / id
        directory.mkdir(parents=True, exist_ok=True)
        log = CriLogWriter(log_path) if log_path else None
        stdio = ContainerStdio(stdin, stdin_once, tty)
        container = Container(id, directory, log, stdio)
        try:
            state = self.executor.create(id, bundle, stdio=stdio.open())
        except BaseException:
            stdio.close()
            for fd in list(stdio.outputs):
                os.close(fd)
            if log:
                log.close()
            raise
        finally:
            stdio.close_container_ends()
        container.pid = state.pid
        for fd in container.pipes:
            os.set_blocking(fd, False)
            self.selector.register(fd, selectors.EVENT_READ, ("output", container))
        self.containers[id] = container
        self.by_pid[state.pid] = container
        return {"pid": state.pid}

    def op_start(self, id: str) -> dict:  # noqa: A002
        container = self._container(id)
        self.executor.start(id)
        started = {"pid": container.pid, "started_at": time.time_ns()}
        write_json_atomic(container.dir / "started.json", started)
        return started

    def op_kill(self, id: str, signal: int = 15, all: bool = False) -> dict:  # noqa: A002
        self._container(id)
        self.executor.kill(id, signal, all_processes=all)
        return {}

    def op_delete(self, id: str) -> dict:  # noqa: A002
        container = self.containers.pop(id, None)
        self.executor.delete(id, force=True)
        if container:
            self._close_pipes(container)
            self.by_pid.pop(container.pid, None)
        return {}

    def op_reopen_log(self, id: str) -> dict:  # noqa: A002
        container = self._container(id)
        if container.log is None:
            raise ObserveRtError(f"container {id} has no log file")
        container.log.reopen()
        return {}

    def op_resize(self, id: str, width: int, height: int) -> dict:  # noqa: A002
        try:
            self._container(id).stdio.resize(int(width), int(height))
        except ValueError as err:
            raise FailedPrecondition(f"container {id}: {err}") from None
        return {}

    def _attach(self, conn: socket.socket, request: dict) -> None:
        """Hand the connection to a stdin feeder once the daemon heard "ok"."""
        container = self.containers.get(request.get("id", ""))
        if container is None or container.stdio.stdin_fd is None:
            why = "is not in this pod's shim" if container is None else "has no open stdin"
            reply = {"error": f"container {request.get('id')} {why}", "code": "FAILED_PRECONDITION"}
        else:
            reply = {"ok": True}
        self.selector.unregister(conn)
        try:
            conn.sendall(json.dumps(reply).encode() + b"\n")
        except OSError:
            reply = {}
        if reply.get("ok"):
            conn.settimeout(None)
            container.stdio.feed(conn)
        else:
            conn.close()

    def op_state(self) -> dict:
        return {"containers": {c.id: {"pid": c.pid} for c in self.containers.values()}}

    def op_shutdown(self) -> dict:
        self.running = False
        return {}

    def _container(self, container_id: str) -> Container:
        container = self.containers.get(container_id)
        if container is None:
            raise NotFound(f"container {container_id} is not in this pod's shim")
        return container

    # --- output and exits -------------------------------------------------------------------

    def _copy_output(self, fd: int, container: Container) -> bool:
        """Copy what the pipe holds now into the log; False once nothing more is waiting."""
        try:
            data = os.read(fd, 65536)
        except BlockingIOError:
            return False
        except OSError as err:  # a pty whose every slave is closed answers EIO, not EOF
            if err.errno != errno.EIO:
                raise
            data = b""
        if not data:
            self.selector.unregister(fd)
            os.close(fd)
            stream = container.pipes.pop(fd)
            if container.log:
                container.log.flush_stream(stream)
            return False
        if container.log:
            container.log.write(container.pipes[fd], data)
        return True

    def _drain_output(self, container: Container) -> None:
        """Everything the container wrote reaches its log before its exit is recorded."""
        for fd in list(container.pipes):
            while fd in container.pipes and self._copy_output(fd, container):
                pass

    def _close_pipes(self, container: Container) -> None:
        container.stdio.close()
        self._drain_output(container)
        for fd in list(container.pipes):
            if fd in container.pipes:
                self.selector.unregister(fd)
                os.close(fd)
                container.pipes.pop(fd)
        if container.log:
            container.log.close()

    def _reap(self) -> None:
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            container = self.by_pid.get(pid)
            if container is not None:
                self._record_exit(container, status)

    def _record_exit(self, container: Container, status: int) -> None:
        self._drain_output(container)
        code = 128 + os.WTERMSIG(status) if os.WIFSIGNALED(status) else os.WEXITSTATUS(status)
        oom = self.executor.oom_killed(container.id)
        reason = "OOMKilled" if oom else ("Completed" if code == 0 else "Error")
        exit_record = {"exit_code": code, "finished_at": time.time_ns(), "reason": reason,
                       "oom_killed": oom}  # fmt: skip
        write_json_atomic(container.dir / "exit.json", exit_record)

    def _shutdown(self) -> None:
        """Kill what is left, record the exits, and go (namespaces die with us)."""
        for container in list(self.containers.values()):
            with contextlib.suppress(FileNotFoundError, ProcessLookupError, ObserveRtError):
                self.executor.kill(container.id, signal.SIGKILL, all_processes=True)
        deadline = time.monotonic() + 10
        while any(not (c.dir / "exit.json").exists() for c in self.containers.values()):
            if time.monotonic() > deadline:
                break
            self._reap()
            time.sleep(0.02)
        for container in self.containers.values():
            self._close_pipes(container)
        if self.pid_holder:  # the pod's pid namespace ends with its init
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid_holder, signal.SIGKILL)


def _drain(fd: int) -> None:
    try:
        while os.read(fd, 4096):
            pass
    except OSError as err:
        if err.errno != errno.EAGAIN:
            raise


def start_pid_namespace_holder() -> int:
    """Start pid 1 of a new pid namespace for the pod's containers to share; returns its pid.

    The unshare happens in a throwaway child, so the shim itself and everything it starts stay
    in the host's pid namespace: pids it sees match the host's /proc (runc relies on that), and
    containers joining the pod namespace are still reparented to the shim, their subreaper.
    The holder reaps that namespace's orphans, and ends when the shim ends: it waits on a pipe
    only the shim can write to (a pid 1 has no parent to get a death signal from).
    """
    pid_read, pid_write = os.pipe()
    life_read, life_write = os.pipe()  # the shim keeps life_write open while it lives
    child = os.fork()
    if child == 0:
        os.close(pid_read)
        libc.unshare(libc.CLONE_NEWPID)
        holder = os.fork()
        if holder == 0:
            os.close(life_write)
            _hold_pid_namespace(life_read)
        os.write(pid_write, str(holder).encode())
        os._exit(0)
    os.close(pid_write)
    os.close(life_read)
    holder = int(os.read(pid_read, 32))
    os.close(pid_read)
    os.waitpid(child, 0)
    return holder


def _hold_pid_namespace(life: int) -> None:
    def reap(*_) -> None:
        with contextlib.suppress(ChildProcessError):
            while os.waitpid(-1, os.WNOHANG)[0]:
                pass

    signal.signal(signal.SIGCHLD, reap)
    signal.signal(signal.SIGTERM, lambda *_: os._exit(0))
    while os.read(life, 1):  # EOF: the shim is gone
        pass
    os._exit(0)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="observe-rt-shim")
    parser.add_argument("--dir", required=True, type=Path)
    parser.add_argument("--socket", type=Path, help="control socket (default DIR/shim.sock)")
    parser.add_argument("--oci-root", required=True)
    parser.add_argument("--hostname", default="")
    parser.add_argument("--new-namespaces", default="")
    parser.add_argument("--runtime", default="", help="an OCI runtime binary instead of ours")
    parser.add_argument("--sysctl", action="append", default=[], metavar="PATH=VALUE")
    args = parser.parse_args(argv)
    new = {n for n in args.new_namespaces.split(",") if n}
    libc.prctl(libc.PR_SET_CHILD_SUBREAPER, 1)
    shim = Shim(args.dir, args.oci_root, args.runtime)
    sysctls = dict(item.split("=", 1) for item in args.sysctl)
    namespaces = shim.enter_namespaces(new, args.hostname, sysctls)
    socket_path = args.socket or args.dir / "shim.sock"
    shim.listen(socket_path)
    pid = os.getpid()
    info = {"pid": pid, "start_time": process_start_time(pid), "namespaces": namespaces,
            "socket": str(socket_path)}  # fmt: skip
    write_json_atomic(args.dir / "shim.json", info)
    print(f"observe-rt shim {pid} serving {args.dir}", file=sys.stderr, flush=True)
    shim.serve()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
