"""WebSocket framing, the token cache and the remotecommand/attach encodings (no root)."""

from __future__ import annotations

import json
import socket

import pytest

from observe_rt.stream import attach, portforward, remotecommand
from observe_rt.stream.cache import TokenCache
from observe_rt.stream.websocket import (
    OP_BINARY,
    OP_TEXT,
    ConnectionClosed,
    WebSocket,
    accept_key,
    encode_frame,
)


def test_accept_key_matches_rfc6455_example():
    assert accept_key("dGhlIHNhbXBsZSBub25jZQ==") == "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="


@pytest.mark.parametrize("size", [0, 5, 125, 126, 65535, 65536, 200000])
def test_frames_round_trip_masked_and_unmasked(size):
    a, b = socket.socketpair()
    with a, b:
        client, server = WebSocket(a, client=True), WebSocket(b)
        payload = bytes(range(256)) * (size // 256) + bytes(size % 256)
        client.send(payload)
        assert server.receive() == (OP_BINARY, payload)
        server.send(b"\x01hi", OP_TEXT)
        assert client.receive() == (OP_TEXT, b"\x01hi")


def test_fragments_are_joined_ping_answered_and_close_raises():
    a, b = socket.socketpair()
    with a, b:
        a.settimeout(5), b.settimeout(5)
        server = WebSocket(b)
        first = bytearray(encode_frame(OP_BINARY, b"ab", mask=True))
        first[0] &= 0x7F  # not FIN
        a.sendall(bytes(first) + encode_frame(0x9, b"p", mask=True))
        a.sendall(encode_frame(0x0, b"cd", mask=True))
        assert server.receive() == (OP_BINARY, b"abcd")
        assert a.recv(16) == encode_frame(0xA, b"p")  # the pong, unmasked from a server
        a.sendall(encode_frame(0x8, b"\x03\xe8", mask=True))
        with pytest.raises(ConnectionClosed):
            server.receive()
        assert server.closed


@pytest.mark.parametrize(
    "header",
    [b"\xff\xff", b"\xc2\x80", b"\x83\x80", b"\x82\x05"],  # RSV, RSV1, opcode 3, unmasked
)
def test_malformed_frames_are_refused_at_once(header):
    a, b = socket.socketpair()
    with a, b:
        b.settimeout(5)
        server = WebSocket(b)
        a.sendall(header)  # and nothing more: the server must not wait for the rest
        with pytest.raises(ConnectionClosed, match="protocol error"):
            server.receive()
        assert a.recv(64) == encode_frame(0x8, b"\x03\xeaprotocol error")  # close 1002


def test_tokens_work_once_and_expire():
    now = [0.0]
    cache = TokenCache(ttl=60, max_entries=3, clock=lambda: now[0])
    token = cache.put("req")
    assert cache.pop(token) == "req" and cache.pop(token) is None
    late = cache.put("late")
    now[0] = 61
    assert cache.pop(late) is None and cache.pop("unknown") is None
    tokens = [cache.put(i) for i in range(5)]
    assert len(cache) == 3 and cache.pop(tokens[0]) is None and cache.pop(tokens[4]) == 4


def test_status_json_for_exit_codes():
    assert json.loads(remotecommand.status(0))["status"] == "Success"
    failure = json.loads(remotecommand.status(3))
    assert failure["status"] == "Failure" and failure["reason"] == "NonZeroExitCode"
    assert failure["details"]["causes"] == [{"reason": "ExitCode", "message": "3"}]
    assert json.loads(remotecommand.status(None))["reason"] == "InternalError"


def test_protocol_negotiation():
    assert (
        remotecommand.negotiate(["v4.channel.k8s.io", "v5.channel.k8s.io"]) == "v5.channel.k8s.io"
    )
    assert remotecommand.negotiate(["v4.channel.k8s.io"]) == "v4.channel.k8s.io"
    assert remotecommand.negotiate(["channel.k8s.io"]) is None
    assert portforward.negotiate([]) == ""
    assert portforward.negotiate(["SPDY/3.1+portforward.k8s.io"]) is None


def test_ports_and_log_lines_parse():
    assert portforward.parse_ports(["80", "8080,9090"]) == [80, 8080, 9090]
    for bad in (["0"], ["x"], ["70000"]):
        with pytest.raises(ValueError):
            portforward.parse_ports(bad)
    line = b"2024-01-01T00:00:00.000000000Z stderr F oops\n"
    assert attach.parse_line(line) == (2, b"oops\n")
    assert attach.parse_line(b"2024-01-01T00:00:00Z stdout P part\n") == (1, b"part")
    assert attach.parse_line(b"garbage\n") is None
