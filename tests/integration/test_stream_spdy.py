"""Exec and PortForward over SPDY/3.1 through the streaming server of a real daemon."""

from __future__ import annotations

import json
import os
import shlex
import shutil
import socket
import subprocess
import time

import pytest

from observe_rt.cri.v1 import api_pb2
from observe_rt.stream import spdy
from tests.integration.test_stream import (
    _resources,
    _wait_for_httpd,
    assert_nothing_left,
)
from tests.support.daemon import container_config, pod_config, run_pod, start_container, status
from tests.support.fake_apiserver import POD_NAME, FakeApiServer
from tests.support.spdy_client import SpdyClient, handshake

pytestmark = pytest.mark.root
V4, V3, PORTFORWARD = "v4.channel.k8s.io", "v3.channel.k8s.io", "portforward.k8s.io"


@pytest.fixture(scope="module")
def pod(daemon):
    config = pod_config(daemon)
    pod_id = run_pod(daemon, config)
    script = ("mkdir -p /tmp/www && echo hello-pf > /tmp/www/index.html && "
              "httpd -p 8080 -h /tmp/www && exec sleep 86400")  # fmt: skip
    cid = start_container(daemon, pod_id, config, container_config(daemon, "app", script))
    ticker = "while true; do echo tick; echo tock >&2; sleep 0.2; done"
    start_container(daemon, pod_id, config, container_config(daemon, "ticker", ticker))
    return pod_id, cid


def exec_client(daemon, cid, cmd, protocols=(V4,), tty=False, stdin=True, stderr=True,
                **options) -> tuple[SpdyClient, dict]:  # fmt: skip
    request = api_pb2.ExecRequest(container_id=cid, cmd=cmd, tty=tty, stdin=stdin, stdout=True,
                                  stderr=stderr)  # fmt: skip
    url = daemon.runtime().Exec(request, timeout=30).url
    client = SpdyClient.connect(url, list(protocols), **options)
    return client, client.open_exec_streams(stdin, True, stderr, tty)


def finish(client: SpdyClient, ids: dict) -> dict[str, bytes]:
    """Every stream's output once the server finished them all; the connection closed."""
    client.wait_done(list(ids.values()), timeout=60)
    out = {name: client.output(stream_id) for name, stream_id in ids.items()}
    client.close()
    return out


def test_exec_with_tty_stdin_resize_and_exit_code(daemon, pod):
    _, cid = pod
    script = "read x; stty size; echo got-$x; test -t 0 && exit 7"
    client, ids = exec_client(daemon, cid, ["sh", "-c", script], tty=True, stderr=False)
    assert client.protocol == V4 and set(ids) == {"error", "stdin", "stdout", "resize"}
    client.send(ids["resize"], json.dumps({"Width": 100, "Height": 40}).encode())
    client.send(ids["stdin"], b"abc\n")
    out = finish(client, ids)
    text = out["stdout"].decode()
    assert "40 100" in text and "got-abc\r\n" in text, text  # a terminal writes CR LF
    status = json.loads(out["error"])
    assert status["reason"] == "NonZeroExitCode"
    assert status["details"]["causes"] == [{"reason": "ExitCode", "message": "7"}]


def test_exec_stdin_eof_stderr_and_status(daemon, pod):
    _, cid = pod
    client, ids = exec_client(daemon, cid, ["sh", "-c", "cat; echo err >&2; exit 3"])
    client.send(ids["stdin"], b"line one\n")
    client.send(ids["stdin"], b"line two\n", fin=True)  # EOF for cat
    out = finish(client, ids)
    assert out["stdout"] == b"line one\nline two\n" and out["stderr"] == b"err\n"
    assert json.loads(out["error"])["details"]["causes"][0]["message"] == "3"
    client, ids = exec_client(daemon, cid, ["true"], stdin=False)
    assert json.loads(finish(client, ids)["error"])["status"] == "Success"


def test_exec_v3_reports_failure_as_text(daemon, pod):
    _, cid = pod
    client, ids = exec_client(daemon, cid, ["sh", "-c", "exit 4"], protocols=(V3,), stdin=False)
    assert client.protocol == V3
    assert finish(client, ids)["error"] == b"command terminated with non-zero exit code: 4"


@pytest.mark.parametrize("flow_control", [True, False], ids=["window-updates", "spdystream"])
def test_large_output_with_and_without_peer_flow_control(daemon, pod, flow_control):
    _, cid = pod
    client, ids = exec_client(daemon, cid, ["sh", "-c", "head -c 300000 /dev/zero"], stdin=False,
                              flow_control=flow_control,
                              initial_window=8192 if flow_control else None)  # fmt: skip
    out = finish(client, ids)
    assert len(out["stdout"]) == 300000 and json.loads(out["error"])["status"] == "Success"


def test_port_forward_to_httpd_in_the_pod(daemon, pod):
    pod_id, cid = pod
    _wait_for_httpd(daemon, cid)
    request = api_pb2.PortForwardRequest(pod_sandbox_id=pod_id)
    client = SpdyClient.connect(daemon.runtime().PortForward(request, timeout=30).url,
                                [PORTFORWARD])  # fmt: skip
    assert client.protocol == PORTFORWARD
    for request_id in ("0", "1"):  # two connections over one session, as kubectl makes them
        headers = {"port": "8080", "requestid": request_id}
        error = client.open({"streamtype": "error", **headers})
        client.send(error, fin=True)
        data = client.open({"streamtype": "data", **headers})
        client.send(data, b"GET / HTTP/1.0\r\n\r\n", fin=True)
        client.wait_done([data, error], timeout=60)
        assert b"200 OK" in client.output(data) and b"hello-pf" in client.output(data)
        assert client.output(error) == b""
    headers = {"port": "9", "requestid": "2"}  # nothing listens there
    error = client.open({"streamtype": "error", **headers})
    client.open({"streamtype": "data", **headers})
    client.wait_done([error], timeout=60)
    assert b"error forwarding port 9" in client.output(error)
    client.close()


def test_attach_streams_a_running_containers_output(daemon, pod):
    pod_id, _ = pod
    listing = daemon.runtime().ListContainers(api_pb2.ListContainersRequest(
        filter=api_pb2.ContainerFilter(pod_sandbox_id=pod_id)))  # fmt: skip
    ticker = next(c.id for c in listing.containers if c.metadata.name == "ticker")
    request = api_pb2.AttachRequest(container_id=ticker, stdout=True, stderr=True)
    client = SpdyClient.connect(daemon.runtime().Attach(request, timeout=30).url, [V4])
    ids = client.open_exec_streams(stdin=False, stdout=True, stderr=True, tty=False)
    assert client.wait(lambda: b"tick\n" in client.output(ids["stdout"]), timeout=30)
    assert client.wait(lambda: b"tock\n" in client.output(ids["stderr"]), timeout=30)
    client.close()


def test_protocol_refusal_and_single_use_token(daemon, pod):
    _, cid = pod
    request = api_pb2.ExecRequest(container_id=cid, cmd=["true"], stdout=True)
    url = daemon.runtime().Exec(request, timeout=30).url
    with pytest.raises(Exception) as err:
        handshake(url, ["v9.channel.k8s.io"])
    assert err.value.status == 403 and V4 in err.value.body
    with pytest.raises(Exception) as err:
        handshake(url, [V4])  # the refused attempt used the token up
    assert err.value.status == 404


MALFORMED = [
    b"\x80\x02\x00\x06\x00\x00\x00\x04\x00\x00\x00\x01",  # SPDY/2 ping
    b"\x80\x03\x00\x01\x00\x00\x00\x10" + bytes(6) + b"not zlib!!",  # SYN_STREAM, bad block
    b"\x00\x00\x00\x01\x00\xff\xff\xff",  # 16 MiB data frame on a stream never opened
    b"\x80\x03",  # truncated, then the client vanishes
]


def test_100_disconnects_and_malformed_inputs_leave_nothing_behind(daemon, pod):
    pod_id, cid = pod
    pid = daemon.process.pid
    finish(*exec_client(daemon, cid, ["true"], stdin=False))  # warm up
    before = _resources(pid)
    calls = _exec_drops(daemon, cid) + _portforward_drops(daemon, pod_id)
    assert calls == 100
    assert_nothing_left(daemon, cid, before)


def _exec_drops(daemon, cid) -> int:
    """Exec clients gone mid-stream without GOAWAY, then ones sending garbage (10 calls)."""
    for tty in (False, True) * 3:
        client, _ = exec_client(daemon, cid, ["sleep", "1000"], tty=tty, stderr=not tty)
        time.sleep(0.2)
        client.vanish()
    for garbage in MALFORMED:
        client, _ = exec_client(daemon, cid, ["sleep", "1000"])
        client.sock.sendall(garbage)
        if garbage != MALFORMED[-1]:
            assert client.wait(lambda c=client: c.eof, timeout=30)
            assert client.goaway is not None and client.goaway.status == spdy.GOAWAY_PROTOCOL_ERROR
        client.vanish()
    return 6 + len(MALFORMED)


def _portforward_drops(daemon, pod_id) -> int:
    """Port-forward sessions sent garbage, then ones dropped mid-connection (90 calls)."""
    request = api_pb2.PortForwardRequest(pod_sandbox_id=pod_id)
    for garbage in MALFORMED * 20:
        client = SpdyClient.connect(daemon.runtime().PortForward(request).url, [PORTFORWARD])
        client.sock.sendall(garbage)
        client.vanish()
    for _ in range(10):
        client = SpdyClient.connect(daemon.runtime().PortForward(request).url, [PORTFORWARD])
        headers = {"port": "8080", "requestid": "0"}
        client.send(client.open({"streamtype": "error", **headers}), fin=True)
        client.send(client.open({"streamtype": "data", **headers}), b"GET / HTTP/1.0\r\n")
        client.vanish()
    return len(MALFORMED) * 20 + 10


# --- kubectl (client-go + moby/spdystream) as the client, where it is installed -------------

needs_kubectl = pytest.mark.skipif(not shutil.which("kubectl"), reason="kubectl is not installed")
SPDY_ONLY = {
    "KUBECTL_REMOTE_COMMAND_WEBSOCKETS": "false",
    "KUBECTL_PORT_FORWARD_WEBSOCKETS": "false",
}


@pytest.fixture
def kubectl(tmp_path):
    with FakeApiServer() as api:
        config = api.kubeconfig(tmp_path / "kubeconfig")
        env = dict(os.environ, **SPDY_ONLY, HOME=str(tmp_path))
        yield api, ["kubectl", "--kubeconfig", config], env


@needs_kubectl
def test_kubectl_exec_over_spdy(daemon, pod, kubectl):
    _, cid = pod
    api, argv, env = kubectl
    request = api_pb2.ExecRequest(container_id=cid, cmd=["sh", "-c", "cat; echo err >&2; exit 3"],
                                  stdin=True, stdout=True, stderr=True)  # fmt: skip
    api.upstream = daemon.runtime().Exec(request, timeout=30).url
    command = [*argv, "exec", "-i", POD_NAME, "--", "ignored"]  # the command is the RPC's
    result = subprocess.run(command, input="from kubectl\n", capture_output=True, text=True,
                            env=env, timeout=120)  # fmt: skip
    assert api.upgrades == ["SPDY/3.1"]
    assert result.stdout == "from kubectl\n", result.stderr
    assert "err\n" in result.stderr and result.returncode == 3, result.stderr


@needs_kubectl
@pytest.mark.skipif(not shutil.which("script"), reason="script (util-linux) is not installed")
def test_kubectl_exec_with_a_terminal(daemon, pod, kubectl):
    _, cid = pod
    api, argv, env = kubectl
    script = "read x; echo got-$x; test -t 0 && exit 5"
    request = api_pb2.ExecRequest(container_id=cid, cmd=["sh", "-c", script], tty=True,
                                  stdin=True, stdout=True)  # fmt: skip
    api.upstream = daemon.runtime().Exec(request, timeout=30).url
    inner = shlex.join([*argv, "exec", "-it", POD_NAME, "--", "ignored"])
    # kubectl wants a terminal for -t: script(1) gives it one
    result = subprocess.run(["script", "-qec", inner, "/dev/null"], input="abc\n",
                            capture_output=True, text=True, env=env, timeout=120)  # fmt: skip
    assert "got-abc" in result.stdout and result.returncode == 5, (result.stdout, result.stderr)


@needs_kubectl
def test_kubectl_port_forward_over_spdy(daemon, pod, kubectl):
    pod_id, cid = pod
    _wait_for_httpd(daemon, cid)
    api, argv, env = kubectl
    request = api_pb2.PortForwardRequest(pod_sandbox_id=pod_id)
    api.upstream = daemon.runtime().PortForward(request, timeout=30).url
    command = [*argv, "port-forward", f"pod/{POD_NAME}", ":8080"]
    forward = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               text=True)  # fmt: skip
    try:
        line = forward.stdout.readline()  # Forwarding from 127.0.0.1:<port> -> 8080
        local = int(line.split("127.0.0.1:")[1].split()[0])
        for _ in range(2):  # a stream pair per connection, over kubectl's one SPDY session
            with socket.create_connection(("127.0.0.1", local), timeout=30) as conn:
                conn.sendall(b"GET / HTTP/1.0\r\n\r\n")
                reply = b"".join(iter(lambda c=conn: c.recv(65536), b""))
            assert b"200 OK" in reply and b"hello-pf" in reply
        assert api.upgrades == ["SPDY/3.1"]
    finally:
        forward.terminate()
        forward.wait(30)


def test_attach_with_stdin_to_a_shell(daemon):
    """kubectl attach -i over SPDY: stdin reaches a bare `sh` through the pod shim."""
    config = pod_config(daemon)
    pod_id = run_pod(daemon, config)
    shell = container_config(daemon, "shell", "", stdin=True, stdin_once=True)
    shell.command[:], shell.args[:] = ["sh"], []
    cid = start_container(daemon, pod_id, config, shell)
    request = api_pb2.AttachRequest(container_id=cid, stdin=True, stdout=True, stderr=True)
    client = SpdyClient.connect(daemon.runtime().Attach(request, timeout=30).url, [V4])
    ids = client.open_exec_streams(stdin=True, stdout=True, stderr=True, tty=False)
    client.send(ids["stdin"], b"echo spdy-$((40 + 2))\n")
    assert client.wait(lambda: b"spdy-42\n" in client.output(ids["stdout"]), timeout=30)
    client.send(ids["stdin"], fin=True)  # end of stdin: stdin_once closes it, sh ends
    deadline = time.monotonic() + 30
    while status(daemon, cid).state != api_pb2.CONTAINER_EXITED:
        assert time.monotonic() < deadline, "sh did not end after stdin closed"
        time.sleep(0.2)
    client.close()
