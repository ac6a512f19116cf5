"""Driving a runc-compatible CLI through one timed container lifecycle.

Every runtime is driven identically, as a shim would drive it:

    create --bundle B --pid-file P ID   (returns once the init is blocked, waiting for start)
    start ID                            (returns once the workload has been released)
    wait                                (pidfd on the pid from P; we are its subreaper, so reap it)
    delete ID                           (state and cgroup removed)

The caller must be a child subreaper (PR_SET_CHILD_SUBREAPER): every runtime's create exits
before the workload does, so the workload is reparented to us and can be waited for directly,
instead of polling `state`, which would add one CLI start per poll to the measurement.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import select
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from observe_rt import __version__

STEPS = ("create", "start", "wait", "delete")
IN_PROCESS = "observe-rt-lib"
STEP_TIMEOUT = 30.0
# Root's PATH usually has these, but `sudo` or a service may not.
_EXTRA_PATH = ("/usr/local/sbin", "/usr/sbin", "/sbin")


class LifecycleError(Exception):
    """One step of the lifecycle failed; the message says which and why."""


@dataclass(frozen=True)
class RuntimeCli:
    name: str
    argv: tuple[str, ...]  # the runtime's command, before the global --root option
    root: Path  # a private state root
    version: str

    def command(self, *args: str) -> list[str]:
        return [*self.argv, "--root", str(self.root), *args]


@dataclass(frozen=True)
class InProcessRuntime:
    """observe-rt's executor called as a library, the way the pod shim uses it: the same
    lifecycle without starting an interpreter per step (the CLI figures include that)."""

    name: str
    root: Path
    version: str

    def executor(self):
        from observe_rt.runtime.executor import Executor

        return Executor(str(self.root))


def find_runtime(name: str, root: Path) -> RuntimeCli | InProcessRuntime | str:
    """The named runtime's CLI, or the reason it is unavailable."""
    if name == IN_PROCESS:
        return InProcessRuntime(name, root, f"observe-rt {__version__} (library)")
    if name == "observe-rt":
        return RuntimeCli(name, (*observe_rt_argv(), "oci"), root, f"observe-rt {__version__}")
    path = shutil.which(name) or shutil.which(name, path=os.pathsep.join(_EXTRA_PATH))
    if path is None:
        return f"{name} not found on PATH"
    return RuntimeCli(name, (path,), root, _version_line(path))


def observe_rt_argv() -> tuple[str, ...]:
    """Our own CLI as a user runs it: the console script next to this interpreter."""
    script = Path(sys.executable).with_name("observe-rt")
    if script.exists():
        return (str(script),)
    return (sys.executable, "-m", "observe_rt")


def _version_line(path: str) -> str:
    try:
        out = subprocess.run([path, "--version"], capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired) as err:
        return f"unknown ({err})"
    lines = out.stdout.strip().splitlines()
    return lines[0] if lines else "unknown"


def lifecycle(cli, container_id: str, bundle: Path) -> dict[str, float]:
    """Run one create → start → wait → delete; returns milliseconds per step."""
    if isinstance(cli, InProcessRuntime):
        return _lifecycle_in_process(cli, container_id, bundle)
    pid_file = bundle / "container.pid"
    marks = [time.perf_counter_ns()]
    run_cli(cli, "create", "--bundle", str(bundle), "--pid-file", str(pid_file), container_id)
    marks.append(time.perf_counter_ns())
    run_cli(cli, "start", container_id)
    marks.append(time.perf_counter_ns())
    wait_exit(read_pid(pid_file))
    marks.append(time.perf_counter_ns())
    run_cli(cli, "delete", container_id)
    marks.append(time.perf_counter_ns())
    spans = zip(STEPS, itertools.pairwise(marks), strict=True)
    return {step: (end - begin) / 1e6 for step, (begin, end) in spans}


def _lifecycle_in_process(runtime: InProcessRuntime, container_id: str, bundle: Path):
    from observe_rt.errors import ObserveRtError

    executor = runtime.executor()
    devnull = os.open(os.devnull, os.O_RDWR)
    try:
        marks = [time.perf_counter_ns()]
        state = executor.create(container_id, str(bundle), stdio=(devnull, devnull, devnull))
        marks.append(time.perf_counter_ns())
        executor.start(container_id)
        marks.append(time.perf_counter_ns())
        wait_exit(state.pid)
        marks.append(time.perf_counter_ns())
        executor.delete(container_id)
        marks.append(time.perf_counter_ns())
    except ObserveRtError as err:
        raise LifecycleError(str(err)) from None
    finally:
        os.close(devnull)
    spans = zip(STEPS, itertools.pairwise(marks), strict=True)
    return {step: (end - begin) / 1e6 for step, (begin, end) in spans}


def run_cli(cli: RuntimeCli, *args: str, timeout: float = STEP_TIMEOUT) -> None:
    """Run one CLI step; raise LifecycleError with the last line of its stderr if it fails."""
    # A file, not a pipe, for stderr: the container inherits it and would hold a pipe open.
    with tempfile.TemporaryFile("w+") as err:
        try:
            code = subprocess.run(
                cli.command(*args), stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                stderr=err, timeout=timeout,
            ).returncode  # fmt: skip
        except subprocess.TimeoutExpired:
            raise LifecycleError(f"{args[0]} timed out after {timeout:.0f}s") from None
        except OSError as err_:
            raise LifecycleError(f"{args[0]}: {err_}") from None
        if code != 0:
            err.seek(0)
            raise LifecycleError(f"{args[0]} failed: {last_line(err.read()) or f'exit {code}'}")


def last_line(text: str) -> str:
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    return lines[-1] if lines else ""


def read_pid(pid_file: Path) -> int:
    try:
        return int(pid_file.read_text().strip())
    except (OSError, ValueError) as err:
        raise LifecycleError(f"create wrote no usable pid file: {err}") from None


def wait_exit(pid: int, timeout: float = STEP_TIMEOUT) -> None:
    """Wait until `pid` exits and reap it (a pidfd gives the exact moment, no polling)."""
    try:
        fd = os.pidfd_open(pid)
    except ProcessLookupError:
        return  # already exited and reaped
    try:
        ready, _, _ = select.select([fd], [], [], timeout)
    finally:
        os.close(fd)
    if not ready:
        raise LifecycleError(f"workload (pid {pid}) still running after {timeout:.0f}s")
    with contextlib.suppress(ChildProcessError):  # not ours if the runtime kept a parent alive
        os.waitpid(pid, 0)


def reap_orphans() -> None:
    """Reap whatever else was reparented to us (runtimes' intermediate processes)."""
    while True:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return


def force_delete(cli, container_id: str) -> None:
    """Untimed best-effort removal of a container left behind by a failure or Ctrl-C."""
    if isinstance(cli, InProcessRuntime):
        from observe_rt.errors import ObserveRtError

        with contextlib.suppress(ObserveRtError, OSError):
            cli.executor().delete(container_id, force=True)
        return
    with contextlib.suppress(LifecycleError):
        run_cli(cli, "delete", "--force", container_id)
