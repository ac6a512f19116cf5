"""SPDY sessions on loopback: upgrade and negotiation, stream set-up, flow control, the
exec/attach channel mapping, port-forward pairs, and malformed input ending cleanly (no root)."""

from __future__ import annotations

import contextlib
import json
import socket
import socketserver
import threading
from types import SimpleNamespace

import pytest

from observe_rt.stream import remotecommand, spdy, spdy_portforward
from observe_rt.stream.server import StreamServer
from observe_rt.stream.spdy_channels import RemoteCommandStreams, await_streams, wanted_streams
from observe_rt.stream.spdy_server import negotiate, offered_protocols
from observe_rt.stream.spdy_session import SpdySession
from observe_rt.stream.websocket import OP_BINARY, ConnectionClosed, HandshakeError
from tests.support.spdy_client import SpdyClient, StreamRefused, handshake

V4, V3 = "v4.channel.k8s.io", "v3.channel.k8s.io"


def exec_request(stdin=True, stdout=True, stderr=True, tty=False):
    return SimpleNamespace(stdin=stdin, stdout=stdout, stderr=stderr, tty=tty)


def echo_exec(request, ws, query) -> None:
    """Upper-cases stdin onto stdout, reports resizes on stderr, exits 3 when stdin ends."""
    while True:
        try:
            _, message = ws.receive()
        except ConnectionClosed:
            return
        if message[0] == remotecommand.STDIN:
            ws.send(bytes([remotecommand.STDOUT]) + message[1:].upper())
        elif message[0] == remotecommand.RESIZE:
            ws.send(bytes([remotecommand.STDERR]) + message[1:] + b"\n")
        elif message == bytes([remotecommand.CLOSE, remotecommand.STDIN]):
            ws.send(bytes([remotecommand.ERROR]) + remotecommand.status(3))
            return


@pytest.fixture
def server():
    calls = []

    def exec_handler(request, ws, query):
        calls.append(request)
        echo_exec(request, ws, query)

    def portforward_handler(request, session, query):
        connect = lambda port: socket.create_connection(("127.0.0.1", port), timeout=5)  # noqa: E731
        spdy_portforward.run_portforward(session, connect)

    streams = StreamServer({"exec": exec_handler, "attach": exec_handler,
                            "portforward": portforward_handler}).start()  # fmt: skip
    streams.calls = calls
    yield streams
    streams.stop()


def test_negotiation_follows_the_clients_order():
    assert negotiate([V3, V4], (V4, V3)) == V3
    assert negotiate(["v9"], (V4,)) is None
    assert negotiate([], (V4,)) == ""
    headers = SimpleNamespace(get_all=lambda name: [f"{V4}, {V3}", "channel.k8s.io"])
    assert offered_protocols(headers) == [V4, V3, "channel.k8s.io"]
    assert wanted_streams(exec_request(tty=True, stderr=False), V4) == {
        "error", "stdin", "stdout", "resize"}  # fmt: skip
    assert wanted_streams(exec_request(tty=True, stderr=False), "v2.channel.k8s.io") == {
        "error", "stdin", "stdout"}  # fmt: skip


def test_upgrade_refusals_say_why(server):
    with pytest.raises(HandshakeError) as err:
        handshake(server.url("exec", exec_request()), ["v9.channel.k8s.io"])
    assert err.value.status == 403 and "server accepts" in err.value.body
    assert V4 in err.value.headers["x-accepted-stream-protocol-versions"]
    with pytest.raises(HandshakeError) as err:
        handshake(server.url("exec", exec_request()) + "x", [V4])
    assert err.value.status == 404
    url = server.url("exec", exec_request())
    with socket.create_connection(("127.0.0.1", int(url.split(":")[2].split("/")[0]))) as sock:
        path = url.split("/", 3)[3]
        sock.sendall(f"POST /{path} HTTP/1.1\r\nUpgrade: SPDY/3.1\r\n\r\n".encode())
        assert b" 400 " in sock.recv(200)
    assert server.calls == []


def test_exec_streams_map_to_channels_v4(server):
    client = SpdyClient.connect(server.url("exec", exec_request()), [V4, V3])
    assert client.protocol == V4
    ids = client.open_exec_streams(stdin=True, stdout=True, stderr=True, tty=False)
    assert list(ids) == ["error", "stdin", "stdout", "stderr"]
    client.send(ids["stdin"], b"hello")
    client.send(ids["stdin"], b" world", fin=True)
    client.wait_done([ids["error"]])
    assert client.output(ids["stdout"]) == b"HELLO WORLD"
    status = json.loads(client.output(ids["error"]))
    assert status["reason"] == "NonZeroExitCode"
    assert status["details"]["causes"] == [{"reason": "ExitCode", "message": "3"}]
    client.wait(lambda: client.goaway is not None and ids["stdout"] in client.fin)
    assert client.goaway.status == spdy.GOAWAY_OK
    client.close()


def test_v3_error_stream_is_text_and_resizes_may_split_across_frames(server):
    client = SpdyClient.connect(server.url("exec", exec_request(tty=True, stderr=False)), [V3])
    ids = client.open_exec_streams(stdin=True, stdout=True, stderr=False, tty=True)
    assert "resize" in ids
    client.send(ids["resize"], b'{"Width": 80, "Hei')
    client.send(ids["resize"], b'ght": 24}\n{"Width": 100, "Height": 40}\n')
    client.send(ids["stdin"], b"", fin=True)
    client.wait_done([ids["error"]])
    assert client.output(ids["error"]) == b"command terminated with non-zero exit code: 3"
    client.close()


def test_unexpected_streams_are_refused_and_setup_waits_for_the_rest(server):
    client = SpdyClient.connect(server.url("exec", exec_request(stderr=False)), [V4])
    with pytest.raises(StreamRefused):
        client.open({"streamtype": "bogus"})
    ids = client.open_exec_streams(stdin=True, stdout=True, stderr=False, tty=False)
    client.send(ids["stdin"], b"x", fin=True)
    client.wait_done([ids["error"]])
    assert client.output(ids["stdout"]) == b"X"
    client.close()


@pytest.mark.parametrize("garbage", [
    b"\x80\x02\x00\x06\x00\x00\x00\x04\x00\x00\x00\x01",  # SPDY/2
    b"\x00\x00\x00\x00\x00\x00\x00\x00",  # data on stream 0
    b"GET / HTTP/1.1\r\n\r\n",  # not SPDY at all
])  # fmt: skip
def test_malformed_input_gets_goaway_and_the_session_ends(server, garbage):
    client = SpdyClient.connect(server.url("exec", exec_request()), [V4])
    client.sock.sendall(garbage)
    assert client.wait(lambda: client.eof)
    assert client.goaway is not None and client.goaway.status == spdy.GOAWAY_PROTOCOL_ERROR
    assert server.calls == []  # nothing ran before the streams were there
    client.sock.close()


def test_even_or_reused_stream_ids_are_a_protocol_error(server):
    client = SpdyClient.connect(server.url("exec", exec_request()), [V4])
    client.open({"streamtype": "error"})
    client.write(spdy.SynStream(1, {"streamtype": "stdin"}))
    assert client.wait(lambda: client.eof)
    assert client.goaway.status == spdy.GOAWAY_PROTOCOL_ERROR
    client.sock.close()


def read_all(session: SpdySession) -> None:
    with contextlib.suppress(ConnectionClosed):
        while True:
            session.next_event()


def session_pair():
    ours, theirs = socket.socketpair()
    return SpdySession(ours, ours.makefile("rb")), SpdyClient(theirs, V4)


def test_flow_control_is_enforced_once_the_peer_does_it():
    session, client = session_pair()
    client.flow_control = False
    client.write(spdy.SynStream(1, {"streamtype": "stdout"}))
    stream = session.next_event().stream
    session.send_data(stream, bytes(100_000))  # no WINDOW_UPDATE seen yet: not blocked
    assert client.wait(lambda: len(client.output(1)) == 100_000)
    client.write(spdy.Settings({spdy.SETTINGS_INITIAL_WINDOW_SIZE: 1000}))
    client.write(spdy.WindowUpdate(0, 1 << 20))  # the session window, overdrawn above
    client.write(spdy.SynStream(3, {"streamtype": "stderr"}))
    blocked = session.next_event().stream
    sender = threading.Thread(target=session.send_data, args=(blocked, bytes(2500)))
    sender.start()
    assert client.wait(lambda: len(client.output(3)) == 1000)
    assert not client.wait(lambda: len(client.output(3)) > 1000, timeout=0.5)
    client.write(spdy.WindowUpdate(3, 1500))
    threading.Thread(target=read_all, args=(session,), daemon=True).start()  # applies updates
    sender.join(10)
    assert client.wait(lambda: len(client.output(3)) == 2500)
    client.close()
    session.sock.close()


def test_reads_are_acknowledged_and_pings_answered():
    session, client = session_pair()
    client.write(spdy.SynStream(1, {"streamtype": "stdin"}))
    assert session.next_event().kind == "open"
    client.write(spdy.Ping(7))
    client.send(1, bytes(40_000), fin=True)
    data, fin = session.next_event(), session.next_event()
    assert (data.kind, data.stream.id, data.data) == ("data", 1, bytes(40_000))
    assert (fin.kind, fin.stream.id) == ("fin", 1)
    client.wait(lambda: client.pings and len(client.window_updates) == 2)
    assert client.pings == [7]
    assert {(u.stream_id, u.delta) for u in client.window_updates} == {(1, 40_000), (0, 40_000)}
    client.close()
    session.sock.close()


def test_setup_gives_up_when_streams_do_not_come_and_keeps_early_data():
    session, client = session_pair()
    client.write(spdy.SynStream(1, {"streamtype": "stdin"}))
    client.send(1, b"early")
    with pytest.raises(ConnectionClosed):
        await_streams(session, {"stdin", "error"}, timeout=0.5)
    session, client = session_pair()
    client.write(spdy.SynStream(1, {"streamtype": "stdin"}))
    client.send(1, b"early", fin=True)
    client.write(spdy.SynStream(3, {"streamtype": "error"}))
    streams, early = await_streams(session, {"stdin", "error"}, timeout=5)
    channels = RemoteCommandStreams(session, V4, streams, early)
    assert channels.receive() == (OP_BINARY, b"\x00early")
    assert channels.receive() == (OP_BINARY, bytes([remotecommand.CLOSE, remotecommand.STDIN]))
    client.close()


class _Echo(socketserver.BaseRequestHandler):
    def handle(self):
        while data := self.request.recv(4096):
            self.request.sendall(data.upper())


def test_port_forward_pairs_streams_per_request(server):
    with socketserver.ThreadingTCPServer(("127.0.0.1", 0), _Echo) as echo:
        threading.Thread(target=echo.serve_forever, daemon=True).start()
        port = str(echo.server_address[1])
        client = SpdyClient.connect(server.url("portforward", None), ["portforward.k8s.io"])
        pairs = {}
        for request_id in ("0", "1"):
            error = client.open({"streamtype": "error", "port": port, "requestid": request_id})
            client.send(error, fin=True)
            data = client.open({"streamtype": "data", "port": port, "requestid": request_id})
            client.send(data, f"hello {request_id}".encode(), fin=True)
            pairs[request_id] = (error, data)
        for request_id, (error, data) in pairs.items():
            client.wait_done([data, error])
            assert client.output(data) == f"HELLO {request_id}".encode()
            assert client.output(error) == b""
        with pytest.raises(StreamRefused):
            client.open({"streamtype": "data", "port": "0", "requestid": "2"})
        error = client.open({"streamtype": "error", "port": "1", "requestid": "3"})
        client.open({"streamtype": "data", "port": "1", "requestid": "3"})
        client.wait_done([error])
        assert b"error forwarding port 1" in client.output(error)
        client.close()
        echo.shutdown()
