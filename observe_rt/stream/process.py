"""A command running inside a container with its stdio handed to the streaming server.

Same path as ExecSync (init.py in exec mode: the container's namespaces, cgroup, user, caps,
seccomp), but the caller keeps the other ends of the command's stdio:

    no tty:  three pipes (stdin write end, stdout and stderr read ends)
    tty:     a pty made here; the command gets the slave as 0/1/2 and its controlling
             terminal (TIOCSCTTY after setsid); we keep the master for both directions

The pty comes from the host's devpts, so `tty` inside the container names a path the
container cannot see; everything else (job control, resize, ^C) behaves as usual.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import signal
import socket
import struct
import subprocess
import sys
import termios
from dataclasses import dataclass, field

from observe_rt.runtime.executor import INIT_SCRIPT, InitChannel


@dataclass
class ExecProcess:
    helper: subprocess.Popen
    channel: InitChannel
    pid: int  # the command; it leads its own session
    tty: bool
    stdin: int | None  # we write (the pty master with tty)
    outputs: dict[int, int] = field(default_factory=dict)  # our read fd -> channel (1 or 2)

    def resize(self, width: int, height: int) -> None:
        if self.tty and self.outputs:
            master = next(iter(self.outputs))
            fcntl.ioctl(master, termios.TIOCSWINSZ, struct.pack("HHHH", height, width, 0, 0))

    def close_stdin(self) -> None:
        """EOF for the command: close the pipe, or type ^D on a terminal."""
        if self.stdin is None:
            return
        if self.tty:
            with contextlib.suppress(OSError):
                os.write(self.stdin, b"\x04")
            return
        with contextlib.suppress(OSError):
            os.close(self.stdin)
        self.stdin = None

    def kill(self) -> None:
        """The command's whole session; the command itself too, in case it has not yet called
        setsid (a client can leave within a millisecond of the start)."""
        for kill in (os.killpg, os.kill):
            with contextlib.suppress(ProcessLookupError, PermissionError):
                kill(self.pid, signal.SIGKILL)

    def exit_code(self) -> int | None:
        """The command's exit code once the helper reported it (blocks); None if it died."""
        try:
            return int(self.channel.receive()["exit"])
        except Exception:  # noqa: BLE001 - a helper that died without a word
            return None

    def release(self) -> None:
        """Close every fd we hold and reap the helper (kill it first if still there)."""
        fds = set(self.outputs)
        if self.stdin is not None:
            fds.add(self.stdin)
        for fd in fds:
            with contextlib.suppress(OSError):
                os.close(fd)
        self.outputs.clear()
        self.stdin = None
        with contextlib.suppress(OSError):
            self.channel.reader.close()
            self.channel.sock.close()
        with contextlib.suppress(ProcessLookupError):
            self.helper.kill()
        self.helper.wait()


def start(plan: dict, manager, tty: bool, stdin: bool, stdout: bool, stderr: bool) -> ExecProcess:
    """Start the exec helper for `plan` (from runtime.exec.exec_plan_for) with streamed stdio."""
    plan = dict(plan, tty=tty)
    ours, theirs = _stdio(tty, stdin, stdout, stderr)
    sync_ours, sync_theirs = socket.socketpair()
    try:
        helper = subprocess.Popen(
            [sys.executable, "-I", "-S", INIT_SCRIPT], pass_fds=[sync_theirs.fileno()],
            env={"_OBSERVE_RT_SYNC_FD": str(sync_theirs.fileno())},
            stdin=theirs[0], stdout=theirs[1], stderr=theirs[2],
        )  # fmt: skip
    except BaseException:
        _close_all(list(ours.values()), *set(theirs))
        sync_ours.close()
        raise
    finally:
        sync_theirs.close()
    _close_all(*set(theirs))
    outputs = {fd: number for number, fd in ours.items() if number in (1, 2)}
    if tty:
        outputs = {ours[1]: 1}
    process = ExecProcess(helper, InitChannel(sync_ours), 0, tty, ours.get(0), outputs)
    try:
        manager.add_process(helper.pid)
        process.channel.send(plan)
        process.pid = process.channel.receive()["pid"]
    except BaseException:
        process.release()
        raise
    process.channel.sock.settimeout(None)  # the command may run for hours
    return process


def _stdio(tty: bool, stdin: bool, stdout: bool, stderr: bool):
    """({channel: our fd}, (their stdin, stdout, stderr)); unwanted streams get /dev/null."""
    if tty:
        master, slave = os.openpty()
        ours = {1: master}
        if stdin:
            ours[0] = master
        return ours, (slave, slave, slave)
    ours: dict[int, int] = {}
    theirs = []
    for number, wanted in enumerate((stdin, stdout, stderr)):
        if not wanted:
            theirs.append(os.open(os.devnull, os.O_RDWR | os.O_CLOEXEC))
            continue
        read_end, write_end = os.pipe()
        ours[number] = write_end if number == 0 else read_end
        theirs.append(read_end if number == 0 else write_end)
    return ours, tuple(theirs)


def _close_all(*fds) -> None:
    for fd in set(fds):
        if isinstance(fd, list):
            _close_all(*fd)
            continue
        with contextlib.suppress(OSError):
            os.close(fd)
