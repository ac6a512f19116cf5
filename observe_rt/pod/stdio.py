"""The pod shim's side of one container's stdio: pipes or a pty, and stdin for attach.

    ContainerConfig            container's fds 0, 1, 2        the shim keeps
    (default)                  /dev/null, pipe, pipe          stdout and stderr read ends
    stdin                      pipe, pipe, pipe               + stdin's write end
    tty (+ stdin)              pty slave x3                   the pty master (output; + stdin)

Output read ends go to the shim's loop, which copies them into the CRI log (a terminal has
one stream: stdout). Attach sessions write the container's stdin through `feed`, one thread
per session so a container that does not read cannot stall the shim's loop; with stdin_once
the first session's end closes stdin (on a terminal: types ^D), as containerd does.

The pty comes from the host's /dev/ptmx, as for exec: the container holds only its slave fd,
and its own /dev/pts stays a private devpts instance.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import socket
import struct
import termios
import threading


class ContainerStdio:
    def __init__(self, stdin: bool = False, stdin_once: bool = False, tty: bool = False) -> None:
        self.tty = tty
        self.stdin_once = stdin_once
        self.wants_stdin = stdin
        self.outputs: dict[int, str] = {}  # read end fd -> "stdout" | "stderr"
        self.stdin_fd: int | None = None  # our end of the container's stdin
        self._container_ends: list[int] = []
        self._lock = threading.Lock()
        self._fed = False

    def open(self) -> tuple[int, int, int]:
        """Make the fds; returns the container's 0, 1, 2 (see `close_container_ends`)."""
        if self.tty:
            master, slave = os.openpty()
            os.set_inheritable(master, False)
            os.set_inheritable(slave, False)
            self.outputs[master] = "stdout"
            if self.wants_stdin:
                self.stdin_fd = os.dup(master)
            self._container_ends = [slave]
            return slave, slave, slave
        out_r, out_w = os.pipe2(os.O_CLOEXEC)
        err_r, err_w = os.pipe2(os.O_CLOEXEC)
        self.outputs.update({out_r: "stdout", err_r: "stderr"})
        if self.wants_stdin:
            in_r, self.stdin_fd = os.pipe2(os.O_CLOEXEC)
        else:
            in_r = os.open(os.devnull, os.O_RDONLY | os.O_CLOEXEC)
        self._container_ends = [in_r, out_w, err_w]
        return in_r, out_w, err_w

    def close_container_ends(self) -> None:
        """Once the container holds them: EOF and EIO then mean the container closed them."""
        for fd in self._container_ends:
            with contextlib.suppress(OSError):
                os.close(fd)
        self._container_ends = []

    def close(self) -> None:
        """Everything of ours (the outputs are closed by the loop that reads them)."""
        self.close_container_ends()
        self.close_stdin(hang_up=True)

    # --- attach ----------------------------------------------------------------------------

    def feed(self, conn: socket.socket) -> threading.Thread:
        """Copy what an attach session sends into stdin, in a thread, until it closes."""
        thread = threading.Thread(target=self._feed, args=(conn,), daemon=True,
                                  name="attach-stdin")  # fmt: skip
        thread.start()
        return thread

    def _feed(self, conn: socket.socket) -> None:
        # A copy of stdin for this session: the shim may close (and the kernel reuse) the
        # number of its own at any time; this one stays ours until the session ends.
        with self._lock:
            fd = os.dup(self.stdin_fd) if self.stdin_fd is not None else None
        try:
            with conn:
                while fd is not None and (data := _receive(conn)):
                    if not _write_all(fd, data):
                        break
        finally:
            if fd is not None:
                os.close(fd)
        with self._lock:
            first, self._fed = not self._fed, True
        if self.stdin_once and first:
            self.close_stdin()

    def close_stdin(self, hang_up: bool = False) -> None:
        """EOF for the container: close the pipe, or type ^D on its terminal."""
        with self._lock:
            fd, self.stdin_fd = self.stdin_fd, None
        if fd is None:
            return
        if self.tty and not hang_up:
            with contextlib.suppress(OSError):
                os.write(fd, b"\x04")
        with contextlib.suppress(OSError):
            os.close(fd)

    def resize(self, width: int, height: int) -> None:
        if not self.tty or not self.outputs:
            raise ValueError("resize: the container has no terminal")
        master = next(iter(self.outputs))
        fcntl.ioctl(master, termios.TIOCSWINSZ, struct.pack("HHHH", height, width, 0, 0))


def _receive(conn: socket.socket) -> bytes:
    try:
        return conn.recv(65536)
    except OSError:
        return b""


def _write_all(fd: int, data: bytes) -> bool:
    try:
        while data:
            data = data[os.write(fd, data) :]
    except OSError:  # the container closed its stdin or exited
        return False
    return True
