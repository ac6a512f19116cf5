"""Exec, Attach and PortForward through the streaming server of a real daemon (WebSocket)."""

from __future__ import annotations

import contextlib
import json
import os
import socket
import time
from pathlib import Path

import grpc
import pytest

from observe_rt.cri.v1 import api_pb2
from observe_rt.stream.websocket import ConnectionClosed, HandshakeError, connect
from tests.support.daemon import (
    container_config,
    log_text,
    pod_config,
    run_pod,
    start_container,
    wait_exited,
)

pytestmark = pytest.mark.root
V5, V4 = "v5.channel.k8s.io", "v4.channel.k8s.io"


@pytest.fixture(scope="module")
def pod(daemon):
    config = pod_config(daemon)
    pod_id = run_pod(daemon, config)
    script = ("mkdir -p /tmp/www && echo hello-pf > /tmp/www/index.html && "
              "httpd -p 8080 -h /tmp/www && while true; do echo tick; sleep 0.2; done")  # fmt: skip
    cid = start_container(daemon, pod_id, config, container_config(daemon, "app", script))
    return pod_id, cid, config


def exec_url(daemon, cid, cmd, tty=False, stdin=True, stdout=True, stderr=True) -> str:
    request = api_pb2.ExecRequest(container_id=cid, cmd=cmd, tty=tty, stdin=stdin,
                                  stdout=stdout, stderr=stderr)  # fmt: skip
    return daemon.runtime().Exec(request, timeout=30).url


def collect(ws, timeout=30.0) -> dict[int, bytes]:
    """Every channel's bytes until the server closes the connection."""
    ws.sock.settimeout(timeout)
    out: dict[int, bytes] = {}
    try:
        while True:
            _, message = ws.receive()
            if message:
                out[message[0]] = out.get(message[0], b"") + message[1:]
    except ConnectionClosed:
        pass
    ws.sock.close()
    return out


def test_exec_stdin_round_trip_and_exit_code(daemon, pod):
    _, cid, _ = pod
    url = exec_url(daemon, cid, ["sh", "-c", "read x; echo got-$x; echo err >&2; exit 3"])
    assert url.startswith("http://127.0.0.1:")
    ws, protocol = connect(url, [V5, V4])
    assert protocol == V5
    ws.send(b"\x00hello\n")
    out = collect(ws)
    assert out[1] == b"got-hello\n" and out[2] == b"err\n"
    status = json.loads(out[3])
    assert status["status"] == "Failure" and status["reason"] == "NonZeroExitCode"
    assert status["details"]["causes"] == [{"reason": "ExitCode", "message": "3"}]


def test_exec_v4_success_and_v5_stdin_close(daemon, pod):
    _, cid, _ = pod
    ws, protocol = connect(exec_url(daemon, cid, ["echo", "hi"], stdin=False), [V4])
    out = collect(ws)
    assert protocol == V4 and out[1] == b"hi\n" and json.loads(out[3])["status"] == "Success"
    ws, _ = connect(exec_url(daemon, cid, ["cat"]), [V5])
    ws.send(b"\x00some input")
    ws.send(b"\xff\x00")  # v5: the client is done with stdin
    out = collect(ws)
    assert out[1] == b"some input" and json.loads(out[3])["status"] == "Success"


def test_exec_with_tty_and_resize(daemon, pod):
    _, cid, _ = pod
    url = exec_url(daemon, cid, ["sh", "-c", "read x; stty size; echo got-$x; test -t 0"], tty=True,
                   stderr=False)  # fmt: skip
    ws, _ = connect(url, [V5, V4])
    ws.send(b"\x04" + json.dumps({"Width": 100, "Height": 40}).encode())
    ws.send(b"\x00abc\n")
    out = collect(ws)
    text = out[1].decode()
    assert "40 100" in text and "got-abc\r\n" in text, text  # a terminal writes CR LF
    assert 2 not in out and json.loads(out[3])["status"] == "Success"


def test_exec_requests_are_validated(daemon, pod):
    _, cid, _ = pod
    for flags in (dict(tty=True, stderr=True), dict(stdin=False, stdout=False, stderr=False)):
        with pytest.raises(grpc.RpcError) as err:
            exec_url(daemon, cid, ["true"], **flags)
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    with pytest.raises(grpc.RpcError) as err:
        exec_url(daemon, "nope", ["true"])
    assert err.value.code() == grpc.StatusCode.NOT_FOUND


def test_unknown_expired_or_reused_token_is_404(daemon, pod):
    _, cid, _ = pod
    url = exec_url(daemon, cid, ["true"], stdin=False)
    base = url.rsplit("/", 2)[0]
    for bad in (f"{base}/exec/bogus", f"{base}/portforward/bogus", f"{base}/nothing"):
        with pytest.raises(HandshakeError) as err:
            connect(bad, [V5])
        assert err.value.status == 404
    collect(connect(url, [V5])[0])
    with pytest.raises(HandshakeError) as err:
        connect(url, [V5])  # a token works once
    assert err.value.status == 404


def test_port_forward_into_the_pods_netns(daemon, pod):
    pod_id, cid, _ = pod
    _wait_for_httpd(daemon, cid)
    request = api_pb2.PortForwardRequest(pod_sandbox_id=pod_id, port=[8080])
    url = daemon.runtime().PortForward(request, timeout=30).url
    ws, _ = connect(url + "?port=8080", [V4])
    ws.send(b"\x00GET / HTTP/1.0\r\n\r\n")
    out = collect(ws)
    assert out[0].startswith(b"\x90\x1f") and out[1] == b"\x90\x1f"  # 8080, little endian
    assert b"200 OK" in out[0] and b"hello-pf" in out[0]
    # Nothing listens on 8080 in the daemon's own namespace: the connection was made in the pod.
    with pytest.raises(OSError), socket.create_connection(("127.0.0.1", 8080), timeout=2):
        pass
    ws, _ = connect(daemon.runtime().PortForward(request).url + "?port=9", [V4])
    out = collect(ws)
    assert b"refused" in out[1]


def test_attach_streams_new_output_and_refuses_stdin_it_lacks(daemon, pod):
    _, cid, _ = pod
    request = api_pb2.AttachRequest(container_id=cid, stdout=True, stderr=True)
    ws, _ = connect(daemon.runtime().Attach(request, timeout=30).url, [V5, V4])
    ws.sock.settimeout(10)
    _, message = ws.receive()
    assert message == b"\x01tick\n"
    ws.close()
    ws.sock.close()
    with pytest.raises(grpc.RpcError) as err:  # created without ContainerConfig.stdin
        daemon.runtime().Attach(api_pb2.AttachRequest(container_id=cid, stdin=True, stdout=True))
    assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "stdin" in err.value.details()


def _shell(daemon, tty: bool) -> tuple[str, str]:
    """A pod running a bare `sh` that reads its commands from stdin (as `kubectl run -i`)."""
    config = pod_config(daemon)
    pod_id = run_pod(daemon, config)
    shell = container_config(daemon, "shell", "", stdin=True, stdin_once=True, tty=tty)
    shell.command[:], shell.args[:] = ["sh"], []
    return pod_id, start_container(daemon, pod_id, config, shell)


def _attach(daemon, cid: str, tty: bool):
    request = api_pb2.AttachRequest(container_id=cid, stdin=True, stdout=True, stderr=not tty,
                                    tty=tty)  # fmt: skip
    ws, _ = connect(daemon.runtime().Attach(request, timeout=30).url, [V5])
    ws.sock.settimeout(15)
    return ws


def _read_until(ws, wanted: bytes) -> bytes:
    seen = b""
    while wanted not in seen:
        _, message = ws.receive()
        if message and message[0] in (1, 2):
            seen += message[1:]
    return seen


def test_attach_to_a_running_shell_with_stdin(daemon):
    _, cid = _shell(daemon, tty=False)
    ws = _attach(daemon, cid, tty=False)
    ws.send(b"\x00echo hello-$((6 * 7))\n")
    assert b"hello-42" in _read_until(ws, b"hello-42")
    ws.send(b"\x00echo oops >&2\n")
    assert b"oops" in _read_until(ws, b"oops")
    ws.send(b"\xff\x00")  # v5: done with stdin; stdin_once closes it, so sh reads EOF and ends
    out = collect(ws)
    assert json.loads(out[3])["status"] == "Success"
    status = wait_exited(daemon, cid)
    assert status.exit_code == 0
    assert "hello-42" in log_text(status.log_path)


def test_attach_with_a_terminal_resize_and_exit_code(daemon):
    _, cid = _shell(daemon, tty=True)
    ws = _attach(daemon, cid, tty=True)
    ws.send(b"\x04" + json.dumps({"Width": 120, "Height": 33}).encode())
    ws.send(b"\x00stty size; test -t 0 && echo terminal; echo done-$((1 + 1))\n")
    seen = _read_until(ws, b"done-2").decode()
    assert "33 120" in seen and "terminal\n" in seen, seen
    ws.send(b"\x00exit 3\n")
    collect(ws)
    assert wait_exited(daemon, cid).exit_code == 3


def test_client_disconnect_leaves_nothing_behind(daemon, pod):
    _, cid, _ = pod
    pid = daemon.process.pid
    collect(connect(exec_url(daemon, cid, ["true"], stdin=False), [V5])[0])  # warm up
    before = _resources(pid)
    for tty in (False, True) * 5:
        ws, _ = connect(exec_url(daemon, cid, ["sleep", "1000"], tty=tty, stderr=not tty), [V5])
        time.sleep(0.2)
        ws.sock.close()  # gone without a close frame
    assert_nothing_left(daemon, cid, before)


def test_a_hundred_bad_calls_leave_nothing_behind(daemon, pod):
    """Ten kinds of bad call, ten of each: clear errors, and the daemon holds no more fds,
    threads or children afterwards than before."""
    pod_id, cid, config = pod
    _wait_for_httpd(daemon, cid)
    stopped = start_container(daemon, pod_id, config, container_config(daemon, "done", "true"))
    wait_exited(daemon, stopped)
    runtime = daemon.runtime()
    base = exec_url(daemon, cid, ["true"], stdin=False).rsplit("/", 2)[0]
    host, port = base.removeprefix("http://").split(":")
    pid = daemon.process.pid

    def rpc_error(call, request) -> str:
        with pytest.raises(grpc.RpcError) as err:
            call(request, timeout=30)
        assert err.value.details(), "an error must say why"
        return err.value.code().name

    def refused_handshake(url) -> int:
        with pytest.raises(HandshakeError) as err:
            connect(url, [V5])
        return err.value.status

    def garbage_request() -> bytes:
        with socket.create_connection((host, int(port)), timeout=10) as raw:
            raw.sendall(b"\x16\x03\x01 not http at all\r\n\r\n")
            answer = b""
            while chunk := raw.recv(4096):
                answer += chunk
            return answer

    def bad_frames() -> None:
        ws, _ = connect(exec_url(daemon, cid, ["sleep", "1000"]), [V5])
        ws.sock.sendall(b"\xff\xff\xff\xff")  # reserved bits and opcode: not a frame
        collect(ws, timeout=15)

    def leave_mid_stream(url, protocol=V5) -> None:
        ws, _ = connect(url, [protocol])
        time.sleep(0.1)
        ws.sock.close()

    exec_stopped = api_pb2.ExecRequest(container_id=stopped, cmd=["true"], stdout=True)
    sync_stopped = api_pb2.ExecSyncRequest(container_id=stopped, cmd=["true"], timeout=5)
    attach_unknown = api_pb2.AttachRequest(container_id="nope", stdout=True)
    forward_unknown = api_pb2.PortForwardRequest(pod_sandbox_id="nope", port=[80])
    forward_closed = api_pb2.PortForwardRequest(pod_sandbox_id=pod_id, port=[9])
    attach = api_pb2.AttachRequest(container_id=cid, stdout=True)

    def ten_bad_calls() -> None:
        assert rpc_error(runtime.ExecSync, sync_stopped) == "FAILED_PRECONDITION"
        assert rpc_error(runtime.Exec, exec_stopped) == "FAILED_PRECONDITION"
        assert rpc_error(runtime.Attach, attach_unknown) == "NOT_FOUND"
        assert rpc_error(runtime.PortForward, forward_unknown) == "NOT_FOUND"
        assert refused_handshake(f"{base}/exec/bogus-token") == 404
        assert b"Error code: 400" in garbage_request()
        bad_frames()
        leave_mid_stream(exec_url(daemon, cid, ["sleep", "1000"]))
        leave_mid_stream(runtime.Attach(attach, timeout=30).url)
        ws, _ = connect(runtime.PortForward(forward_closed, timeout=30).url + "?port=9", [V4])
        assert b"refused" in collect(ws)[1]

    ten_bad_calls()  # warm-up: pools (gRPC workers, the streaming server's) reach their size
    _wait_for(lambda: "sleep 1000" not in _exec_sync(daemon, cid, ["ps", "-o", "args"]))
    before = _resources(pid)
    for _ in range(10):
        ten_bad_calls()
    assert_nothing_left(daemon, cid, before)
    assert runtime.Version(api_pb2.VersionRequest()).runtime_name == "observe-rt"  # still serving


def assert_nothing_left(daemon, cid: str, before: tuple, timeout: float = 30) -> None:
    """No `sleep 1000` left in the container, and the daemon back to `before` (_resources)."""
    pid = daemon.process.pid
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        ps = _exec_sync(daemon, cid, ["ps", "-o", "args"])
        if "sleep 1000" not in ps and _no_more(_resources(pid), before):
            break
        time.sleep(0.3)
    assert "sleep 1000" not in ps
    assert _no_more(_resources(pid), before), (_resources(pid), before)


def _resources(pid: int) -> tuple[int, int, int]:
    """Open fds, threads (bar the gRPC pool's) and child processes of the daemon."""
    children = 0
    for entry in filter(str.isdigit, os.listdir("/proc")):
        with contextlib.suppress(OSError):
            stat = Path(f"/proc/{entry}/stat").read_text()
            children += int(stat.rsplit(")", 1)[1].split()[1]) == pid
    threads = 0
    for task in os.listdir(f"/proc/{pid}/task"):  # the gRPC pool may grow to its size: not a leak
        with contextlib.suppress(OSError):
            threads += Path(f"/proc/{pid}/task/{task}/comm").read_text().strip() != "cri-worker"
    return len(os.listdir(f"/proc/{pid}/fd")), threads, children


def _wait_for(condition, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.5)


def _no_more(now: tuple, before: tuple) -> bool:
    return all(a <= b for a, b in zip(now, before, strict=True))


def _exec_sync(daemon, cid, cmd) -> str:
    request = api_pb2.ExecSyncRequest(container_id=cid, cmd=cmd, timeout=10)
    return daemon.runtime().ExecSync(request, timeout=30).stdout.decode()


def _wait_for_httpd(daemon, cid) -> None:
    deadline = time.monotonic() + 15
    while "hello-pf" not in _exec_sync(daemon, cid, ["wget", "-q", "-O-", "127.0.0.1:8080"]):
        assert time.monotonic() < deadline, "httpd did not come up in the pod"
        time.sleep(0.2)
