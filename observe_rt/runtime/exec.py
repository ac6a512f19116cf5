"""ExecSync: run one command inside a running container and collect its output.

The command joins every namespace and the cgroup of the container and gets its user,
capabilities, no_new_privs and seccomp profile (init.py's exec mode, a fresh interpreter as for
create). Output is capped per stream, so a command printing gigabytes cannot exhaust the
caller's memory (the CVE-2022-31030 class); the rest is read and dropped, and stderr says so.
A timeout kills the command's whole session and raises DeadlineExceeded.
"""

from __future__ import annotations

import contextlib
import os
import selectors
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass

from observe_rt.errors import DeadlineExceeded, FailedPrecondition
from observe_rt.runtime import cgroups, spec
from observe_rt.runtime.executor import INIT_SCRIPT, Executor, InitChannel

OUTPUT_LIMIT = 16 << 20
_NS_FILES = {"pid": "pid", "network": "net", "mount": "mnt", "ipc": "ipc", "uts": "uts",
             "user": "user", "cgroup": "cgroup"}  # fmt: skip


@dataclass
class ExecResult:
    exit_code: int
    stdout: bytes
    stderr: bytes
    truncated: bool = False


def exec_sync(executor: Executor, container_id: str, args: list[str], timeout: float,
              limit: int = OUTPUT_LIMIT) -> ExecResult:  # fmt: skip
    exec_plan, manager = exec_plan_for(executor, container_id, args)
    return _run(exec_plan, manager, timeout, limit)


def exec_plan_for(executor: Executor, container_id: str, args: list[str]):
    """The init plan (exec mode) for `args` in a running container, and its cgroup manager."""
    state = executor.states.load(container_id)
    status = executor.states.status(state)
    if status != "running":
        raise FailedPrecondition(f"container {container_id} is {status}, not running")
    plan = spec.build_plan(spec.load_bundle(state.bundle), state.bundle, container_id)
    exec_plan = {
        "exec": True,
        "namespaces": [{"type": ns["type"], "path": f"/proc/{state.pid}/ns/{_NS_FILES[ns['type']]}"}
                       for ns in plan["namespaces"]],
        "process": dict(plan["process"], args=args),
        "seccomp": plan["seccomp"],
    }  # fmt: skip
    return exec_plan, cgroups.CgroupManager.from_state(state.cgroup)


def _run(plan: dict, manager, timeout: float, limit: int) -> ExecResult:
    ours, theirs = socket.socketpair()
    out_r, out_w = os.pipe()
    err_r, err_w = os.pipe()
    with ours, contextlib.ExitStack() as cleanup:
        helper = subprocess.Popen(
            [sys.executable, "-I", "-S", INIT_SCRIPT], pass_fds=[theirs.fileno()],
            env={"_OBSERVE_RT_SYNC_FD": str(theirs.fileno())},
            stdin=subprocess.DEVNULL, stdout=out_w, stderr=err_w,
        )  # fmt: skip
        for fd in (out_w, err_w):
            os.close(fd)
        theirs.close()
        cleanup.callback(_reap, helper)
        manager.add_process(helper.pid)
        channel = InitChannel(ours)
        channel.send(plan)
        child = channel.receive()["pid"]
        deadline = time.monotonic() + timeout if timeout > 0 else None
        stdout, stderr, truncated = collect_output(out_r, err_r, deadline, limit)
        if stdout is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(child, signal.SIGKILL)
            raise DeadlineExceeded(f"command timed out after {timeout:g}s and was killed")
        code = channel.receive()["exit"]
    if truncated:
        stderr += f"\n[observe-rt: output truncated at {limit} bytes per stream]\n".encode()
    return ExecResult(code, stdout, stderr, truncated)


def collect_output(out_r: int, err_r: int, deadline: float | None, limit: int):
    """Read both pipes to EOF; (None, None, _) when the deadline passes first."""
    buffers = {out_r: bytearray(), err_r: bytearray()}
    truncated = False
    with selectors.DefaultSelector() as selector:
        for fd in buffers:
            selector.register(fd, selectors.EVENT_READ)
        try:
            while selector.get_map():
                wait = None if deadline is None else deadline - time.monotonic()
                if wait is not None and wait <= 0:
                    return None, None, truncated
                for key, _ in selector.select(wait):
                    data = os.read(key.fd, 65536)
                    if not data:
                        selector.unregister(key.fd)
                        continue
                    room = limit - len(buffers[key.fd])
                    truncated |= len(data) > room
                    buffers[key.fd] += data[: max(room, 0)]
        finally:
            for fd in buffers:
                os.close(fd)
    return bytes(buffers[out_r]), bytes(buffers[err_r]), truncated


def _reap(process: subprocess.Popen) -> None:
    with contextlib.suppress(ProcessLookupError):
        process.kill()
    process.wait()
