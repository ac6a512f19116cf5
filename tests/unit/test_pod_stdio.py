"""The shim's stdio for one container: which fds the container gets, attach feeding stdin."""

from __future__ import annotations

import os
import socket

import pytest

from observe_rt.pod.stdio import ContainerStdio


def test_default_stdin_is_dev_null_and_outputs_are_two_pipes():
    stdio = ContainerStdio()
    stdin, stdout, stderr = stdio.open()
    try:
        assert os.read(stdin, 1) == b"" and stdio.stdin_fd is None
        os.write(stdout, b"out")
        assert [name for name in stdio.outputs.values()] == ["stdout", "stderr"]
        assert os.read(next(iter(stdio.outputs)), 10) == b"out"
    finally:
        stdio.close()
        for fd in stdio.outputs:
            os.close(fd)


def test_stdin_once_closes_stdin_when_the_first_session_ends():
    stdio = ContainerStdio(stdin=True, stdin_once=True)
    container_stdin, _, _ = stdio.open()
    ours, theirs = socket.socketpair()
    feeder = stdio.feed(theirs)
    ours.sendall(b"hello\n")
    ours.close()
    feeder.join(10)
    assert os.read(container_stdin, 100) == b"hello\n"
    assert os.read(container_stdin, 100) == b""  # EOF: stdin was closed after the session
    stdio.close()


def test_terminal_gets_one_pty_for_all_three_and_resizes():
    stdio = ContainerStdio(stdin=True, tty=True)
    fds = stdio.open()
    try:
        assert len(set(fds)) == 1 and os.isatty(fds[0])
        assert list(stdio.outputs.values()) == ["stdout"] and stdio.stdin_fd is not None
        stdio.resize(120, 33)
        assert os.get_terminal_size(fds[0]) == os.terminal_size((120, 33))
    finally:
        stdio.close()
        for fd in stdio.outputs:
            os.close(fd)
    with pytest.raises(ValueError, match="no terminal"):
        ContainerStdio().resize(80, 24)
