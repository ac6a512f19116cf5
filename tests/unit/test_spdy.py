"""SPDY/3.1 framing: byte fixtures, header compression with the dictionary, malformed input."""

from __future__ import annotations

import struct
import zlib

import pytest

from observe_rt.stream import spdy
from observe_rt.stream.spdy import ProtocolError


def reader(data: bytes):
    """read_exact over `data`; EOFError past its end."""
    offset = 0

    def read_exact(count: int) -> bytes:
        nonlocal offset
        if offset + count > len(data):
            raise EOFError
        chunk = data[offset : offset + count]
        offset += count
        return chunk

    return read_exact


def decode(data: bytes, codec: spdy.HeaderCodec | None = None):
    return spdy.read_frame(reader(data), codec or spdy.HeaderCodec())


def test_dictionary_is_the_spdy3_one():
    assert len(spdy.DICTIONARY) == 1423
    assert spdy.DICTIONARY.startswith(b"\x00\x00\x00\x07options\x00\x00\x00\x04head")
    assert spdy.DICTIONARY.endswith(b"charset=iso-8859-1,utf-,*,enq=0.")
    assert b"\x00\x00\x00\x06200 OK\x00\x00\x00\x07version" in spdy.DICTIONARY
    assert zlib.adler32(spdy.DICTIONARY) == 0xE3C6A7C2  # the id a peer's inflate checks


# Hand-assembled from the SPDY/3 layout: control bit + version 3, type, flags, 24-bit length.
FIXTURES = [
    (spdy.Ping(1), "80030006 00000004 00000001"),
    (spdy.RstStream(5, spdy.REFUSED_STREAM), "80030003 00000008 00000005 00000003"),
    (spdy.GoAway(7, spdy.GOAWAY_PROTOCOL_ERROR), "80030007 00000008 00000007 00000001"),
    (spdy.WindowUpdate(0, 32768), "80030009 00000008 00000000 00008000"),
    (spdy.Settings({7: 16384}), "80030004 0000000c 00000001 00000007 00004000"),
    (spdy.Data(3, b"abc", fin=True), "00000003 01000003 616263"),
    (spdy.Data(1, b""), "00000001 00000000"),
]


@pytest.mark.parametrize(("frame", "hexbytes"), FIXTURES)
def test_frames_match_byte_fixtures_both_ways(frame, hexbytes):
    wire = bytes.fromhex(hexbytes.replace(" ", ""))
    assert spdy.encode(frame) == wire
    assert decode(wire) == frame


def test_header_block_layout():
    raw = spdy.encode_header_block({"streamtype": "error", "Port": "80"})
    assert raw == (b"\x00\x00\x00\x02" + b"\x00\x00\x00\x0astreamtype" + b"\x00\x00\x00\x05error"
                   + b"\x00\x00\x00\x04port" + b"\x00\x00\x00\x0280")  # fmt: skip
    assert spdy.decode_header_block(raw) == {"streamtype": "error", "port": "80"}


def test_header_blocks_use_the_dictionary_and_one_context_per_direction():
    sender, receiver = spdy.HeaderCodec(), spdy.HeaderCodec()
    first = sender.compress({"streamtype": "stdout"})
    # zlib header: FDICT set, then the dictionary's adler32 (RFC 1950 2.2)
    assert first[1] & 0x20 and first[2:6] == struct.pack("!I", 0xE3C6A7C2)
    assert first.endswith(b"\x00\x00\xff\xff")  # sync flush: the stream goes on
    second = sender.compress({"streamtype": "stdout"})
    assert len(second) < len(first) // 2  # the second block refers back to the first
    assert receiver.decompress(first) == {"streamtype": "stdout"}
    assert receiver.decompress(second) == {"streamtype": "stdout"}
    plain = zlib.decompressobj(zdict=spdy.DICTIONARY)  # any zlib with the dictionary reads it
    assert spdy.decode_header_block(plain.decompress(first)) == {"streamtype": "stdout"}
    with pytest.raises(ProtocolError):
        spdy.HeaderCodec().decompress(second)  # without the first block's context


def test_frames_with_headers_round_trip_through_a_connection():
    out, inbound = spdy.HeaderCodec(), spdy.HeaderCodec()
    frames = [
        spdy.SynStream(1, {"streamtype": "error"}, priority=0),
        spdy.SynStream(
            3,
            {"streamtype": "data", "port": "8080", "requestid": "0"},
            fin=True,
            unidirectional=True,
            associated_to=1,
            priority=7,
        ),  # fmt: skip
        spdy.SynReply(3, {}),
        spdy.HeadersFrame(3, {"x": "y\x00z"}, fin=True),
    ]
    wire = b"".join(spdy.encode(frame, out) for frame in frames)
    read = reader(wire)
    assert [spdy.read_frame(read, inbound) for _ in frames] == frames
    syn = spdy.encode(spdy.SynStream(5, {"a": "b"}), spdy.HeaderCodec())
    assert syn[:8] == bytes.fromhex("80030001") + struct.pack("!I", len(syn) - 8)
    assert syn[8:18] == bytes.fromhex("00000005 00000000 0000")


# The first SYN_STREAMs of `kubectl exec -i` (client-go + moby/spdystream, Go's zlib), captured
# on the wire: they share one compression context, so each depends on the ones before.
KUBECTL_SYN_STREAMS = (
    "80030001 00000029 00000001 00000000 0000 78f9e3c6a7c2 6260606004a7b392a2d4c45c6851c29a0a"
    "0a6800000000ffff"
    "80030001 00000017 00000003 00000000 0000 c22e555c92929907000000ffff"
    "80030001 00000019 00000005 00000000 0000 c22ac5565c92925f5a02000000ffff"
    "80030001 00000015 00000007 00000000 0000 c229975a5404000000ffff"
)


def test_reads_header_blocks_compressed_by_go():
    read, codec = reader(bytes.fromhex(KUBECTL_SYN_STREAMS.replace(" ", ""))), spdy.HeaderCodec()
    frames = [spdy.read_frame(read, codec) for _ in range(4)]
    assert frames == [spdy.SynStream(stream_id, {"streamtype": kind}) for stream_id, kind in
                      ((1, "error"), (3, "stdin"), (5, "stdout"), (7, "stderr"))]  # fmt: skip


def test_unknown_control_frames_are_skipped():
    wire = bytes.fromhex("8003000a 00000003 010203") + spdy.encode(spdy.Ping(3))
    read, codec = reader(wire), spdy.HeaderCodec()
    assert spdy.read_frame(read, codec) is None
    assert spdy.read_frame(read, codec) == spdy.Ping(3)


def _syn_with_block(block: bytes, stream_id: int = 1) -> bytes:
    payload = struct.pack("!IIBB", stream_id, 0, 0, 0) + block
    return struct.pack("!HHI", 0x8003, spdy.SYN_STREAM, len(payload)) + payload


def _compressed(raw: bytes) -> bytes:
    deflate = zlib.compressobj(zdict=spdy.DICTIONARY)
    return deflate.compress(raw) + deflate.flush(zlib.Z_SYNC_FLUSH)


MALFORMED = {
    "version 2": "80020006 00000004 00000001",
    "short ping": "80030006 00000002 0001",
    "long goaway": "80030007 0000000c 00000001 00000000 00000000",
    "rst status 0": "80030003 00000008 00000001 00000000",
    "rst stream 0": "80030003 00000008 00000000 00000001",
    "window delta 0": "80030009 00000008 00000001 00000000",
    "settings count": "80030004 0000000c 00000002 00000007 00004000",
    "data stream 0": "00000000 00000001 61",
    "data too big": f"00000001 00{spdy.MAX_DATA_LENGTH + 1:06x}",
    "control too big": f"80030006 00{spdy.MAX_CONTROL_LENGTH + 1:06x}",
    "syn truncated": "80030001 00000004 00000001",
    "syn stream 0": _syn_with_block(_compressed(spdy.encode_header_block({})), 0).hex(),
    "not zlib": _syn_with_block(b"not zlib at all").hex(),
    "uppercase name": _syn_with_block(_compressed(b"\0\0\0\1\0\0\0\1A\0\0\0\0")).hex(),
    "twice": _syn_with_block(_compressed(b"\0\0\0\2" + b"\0\0\0\1a\0\0\0\0" * 2)).hex(),
    "stray bytes": _syn_with_block(_compressed(b"\0\0\0\0xyz")).hex(),
    "count too big": _syn_with_block(_compressed(b"\0\0\0\5\0\0\0\1a\0\0\0\0")).hex(),
    "zlib bomb": _syn_with_block(_compressed(bytes(spdy.MAX_HEADER_BLOCK + 10))).hex(),
}


@pytest.mark.parametrize("name", sorted(MALFORMED))
def test_malformed_frames_raise_protocol_error(name):
    with pytest.raises(ProtocolError):
        decode(bytes.fromhex(MALFORMED[name].replace(" ", "")))


def test_truncated_input_is_the_readers_eof():
    wire = spdy.encode(spdy.Data(1, b"abcdef"))
    with pytest.raises(EOFError):
        decode(wire[:-2])


def test_frames_we_cannot_encode():
    with pytest.raises(ValueError):
        spdy.encode(spdy.Data(0, b"x"))
    with pytest.raises(ValueError):
        spdy.encode(spdy.SynReply(1, {}))  # headers need the connection's codec
