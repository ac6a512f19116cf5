"""SPDY/3.1 framing: the transport kubelet, kubectl and crictl use for exec, attach, port-forward.

Pure: frames to bytes and back, no sockets (spdy_session.py does the I/O). The layout, after
the HTTP/1.1 `Upgrade: SPDY/3.1` handshake (all integers big-endian):

    control frame:  1 | version (15 bits, = 3) | type (16) | flags (8) | length (24) | payload
    data frame:     0 | stream id (31)                     | flags (8) | length (24) | data

SYN_STREAM, SYN_REPLY and HEADERS carry a header block, `count {len name len value}*` with
32-bit lengths, compressed with zlib primed with the SPDY/3 dictionary. Each direction of a
connection has ONE compression context for its whole life (a block is sync-flushed, never
finished), so a HeaderCodec belongs to one connection and blocks must go through it in order.
"""

from __future__ import annotations

import struct
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field

VERSION = 3
SYN_STREAM, SYN_REPLY, RST_STREAM, SETTINGS = 1, 2, 3, 4
PING, GOAWAY, HEADERS, WINDOW_UPDATE = 6, 7, 8, 9
FLAG_FIN, FLAG_UNIDIRECTIONAL = 0x01, 0x02
# RST_STREAM status codes
PROTOCOL_ERROR, INVALID_STREAM, REFUSED_STREAM, UNSUPPORTED_VERSION, CANCEL = 1, 2, 3, 4, 5
INTERNAL_ERROR, FLOW_CONTROL_ERROR, STREAM_IN_USE, STREAM_ALREADY_CLOSED = 6, 7, 8, 9
# GOAWAY status codes
GOAWAY_OK, GOAWAY_PROTOCOL_ERROR, GOAWAY_INTERNAL_ERROR = 0, 1, 2
SETTINGS_INITIAL_WINDOW_SIZE = 7
DEFAULT_WINDOW = 64 * 1024  # stream and session windows until SETTINGS/WINDOW_UPDATE say otherwise
MAX_WINDOW = 0x7FFFFFFF
# Bigger than anything a Kubernetes client sends (io.Copy writes 32 KiB frames, headers are a
# few hundred bytes); a larger frame is refused rather than buffered.
MAX_DATA_LENGTH = 1 << 20
MAX_CONTROL_LENGTH = 64 * 1024
MAX_HEADER_BLOCK = 256 * 1024  # decompressed: a zlib bomb stops here

Headers = dict[str, str]


def _dictionary() -> bytes:
    """The SPDY/3 header compression dictionary (draft 3, section 2.6.10.1): 1423 bytes."""
    text = (
        "options head post put delete trace accept accept-charset accept-encoding "
        "accept-language accept-ranges age allow authorization cache-control connection "
        "content-base content-encoding content-language content-length content-location "
        "content-md5 content-range content-type date etag expect expires from host if-match "
        "if-modified-since if-none-match if-range if-unmodified-since last-modified location "
        "max-forwards pragma proxy-authenticate proxy-authorization range referer retry-after "
        "server te trailer transfer-encoding upgrade user-agent vary via warning "
        "www-authenticate method get status 200_OK version HTTP/1.1 url public set-cookie "
        "keep-alive origin"
    )
    words = [word.replace("_", " ") for word in text.split()]  # "200 OK" is one word
    tail = (
        "100101201202205206300302303304305306307402405406407408409410411412413414415416417502"
        "504505203 Non-Authoritative Information204 No Content301 Moved Permanently"
        "400 Bad Request401 Unauthorized403 Forbidden404 Not Found500 Internal Server Error"
        "501 Not Implemented503 Service UnavailableJan Feb Mar Apr May Jun Jul Aug Sept Oct "
        "Nov Dec 00:00:00 Mon, Tue, Wed, Thu, Fri, Sat, Sun, GMTchunked,text/html,image/png,"
        "image/jpg,image/gif,application/xml,application/xhtml+xml,text/plain,text/javascript,"
        "publicprivatemax-age=gzip,deflate,sdchcharset=utf-8charset=iso-8859-1,utf-,*,enq=0."
    )
    prefixed = b"".join(struct.pack("!I", len(w)) + w.encode() for w in words)
    return prefixed + tail.encode()


DICTIONARY = _dictionary()


class ProtocolError(Exception):
    """The peer broke SPDY: the connection ends with GOAWAY(PROTOCOL_ERROR)."""


# --- frames ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Data:
    stream_id: int
    data: bytes = b""
    fin: bool = False


@dataclass(frozen=True)
class SynStream:
    stream_id: int
    headers: Headers = field(default_factory=dict)
    fin: bool = False
    unidirectional: bool = False
    associated_to: int = 0
    priority: int = 0  # 0 (highest) .. 7


@dataclass(frozen=True)
class SynReply:
    stream_id: int
    headers: Headers = field(default_factory=dict)
    fin: bool = False


@dataclass(frozen=True)
class HeadersFrame:
    stream_id: int
    headers: Headers = field(default_factory=dict)
    fin: bool = False


@dataclass(frozen=True)
class RstStream:
    stream_id: int
    status: int


@dataclass(frozen=True)
class Settings:
    values: dict[int, int] = field(default_factory=dict)  # setting id -> value


@dataclass(frozen=True)
class Ping:
    ping_id: int


@dataclass(frozen=True)
class GoAway:
    last_good_stream_id: int
    status: int = GOAWAY_OK


@dataclass(frozen=True)
class WindowUpdate:
    stream_id: int  # 0: the session's window (SPDY/3.1)
    delta: int


Frame = (Data | SynStream | SynReply | HeadersFrame | RstStream | Settings | Ping | GoAway
         | WindowUpdate)  # fmt: skip


# --- header blocks --------------------------------------------------------------------------


class HeaderCodec:
    """One connection's header compression: a deflate context out, an inflate context in."""

    def __init__(self) -> None:
        self._deflate = zlib.compressobj(zlib.Z_DEFAULT_COMPRESSION, zdict=DICTIONARY)
        self._inflate = zlib.decompressobj(zdict=DICTIONARY)

    def compress(self, headers: Headers) -> bytes:
        block = self._deflate.compress(encode_header_block(headers))
        return block + self._deflate.flush(zlib.Z_SYNC_FLUSH)

    def decompress(self, block: bytes) -> Headers:
        try:
            raw = self._inflate.decompress(block, MAX_HEADER_BLOCK)
        except zlib.error as err:
            raise ProtocolError(f"header block does not decompress: {err}") from None
        if self._inflate.unconsumed_tail:
            raise ProtocolError(f"header block larger than {MAX_HEADER_BLOCK} bytes")
        return decode_header_block(raw)


def encode_header_block(headers: Headers) -> bytes:
    parts = [struct.pack("!I", len(headers))]
    for name, value in headers.items():
        for text in (name.lower(), value):
            raw = text.encode("latin-1")
            parts.append(struct.pack("!I", len(raw)) + raw)
    return b"".join(parts)


def decode_header_block(raw: bytes) -> Headers:
    """Names must be lowercase and unique (SPDY/3 2.6.10); values with NULs are kept joined."""
    reader = _Cursor(raw, "header block")
    headers: Headers = {}
    for _ in range(reader.u32()):
        name = reader.take(reader.u32()).decode("latin-1")
        value = reader.take(reader.u32()).decode("latin-1")
        if not name or name != name.lower():
            raise ProtocolError(f"header name {name!r} is empty or not lowercase")
        if name in headers:
            raise ProtocolError(f"header {name!r} appears twice")
        headers[name] = value
    reader.end()
    return headers


class _Cursor:
    def __init__(self, data: bytes, what: str) -> None:
        self.data, self.offset, self.what = data, 0, what

    def take(self, count: int) -> bytes:
        if count > len(self.data) - self.offset:
            raise ProtocolError(f"{self.what} is truncated")
        chunk = self.data[self.offset : self.offset + count]
        self.offset += count
        return chunk

    def u32(self) -> int:
        return struct.unpack("!I", self.take(4))[0]

    def end(self) -> None:
        if self.offset != len(self.data):
            raise ProtocolError(f"{self.what} has {len(self.data) - self.offset} stray bytes")


# --- encoding -------------------------------------------------------------------------------


def encode(frame: Frame, codec: HeaderCodec | None = None) -> bytes:
    """The bytes of `frame`; frames with headers need the connection's codec."""
    if isinstance(frame, Data):
        if not 0 < frame.stream_id <= 0x7FFFFFFF or len(frame.data) > 0xFFFFFF:
            raise ValueError(f"bad data frame for stream {frame.stream_id}")
        head = struct.pack("!II", frame.stream_id, (FLAG_FIN if frame.fin else 0) << 24
                           | len(frame.data))  # fmt: skip
        return head + frame.data
    kind, flags, payload = _control_payload(frame, codec)
    return struct.pack("!HHI", 0x8000 | VERSION, kind, flags << 24 | len(payload)) + payload


def _control_payload(frame: Frame, codec: HeaderCodec | None) -> tuple[int, int, bytes]:
    match frame:
        case SynStream():
            flags = (FLAG_FIN if frame.fin else 0) | (FLAG_UNIDIRECTIONAL if frame.unidirectional
                                                       else 0)  # fmt: skip
            head = struct.pack("!IIBB", frame.stream_id, frame.associated_to,
                               (frame.priority & 7) << 5, 0)  # fmt: skip
            return SYN_STREAM, flags, head + _codec(codec).compress(frame.headers)
        case SynReply() | HeadersFrame():
            kind = SYN_REPLY if isinstance(frame, SynReply) else HEADERS
            block = _codec(codec).compress(frame.headers)
            return kind, FLAG_FIN if frame.fin else 0, struct.pack("!I", frame.stream_id) + block
        case RstStream():
            return RST_STREAM, 0, struct.pack("!II", frame.stream_id, frame.status)
        case Settings():
            entries = b"".join(struct.pack("!II", key & 0xFFFFFF, value)
                               for key, value in frame.values.items())  # fmt: skip
            return SETTINGS, 0, struct.pack("!I", len(frame.values)) + entries
        case Ping():
            return PING, 0, struct.pack("!I", frame.ping_id)
        case GoAway():
            return GOAWAY, 0, struct.pack("!II", frame.last_good_stream_id, frame.status)
        case WindowUpdate():
            return WINDOW_UPDATE, 0, struct.pack("!II", frame.stream_id, frame.delta)
    raise TypeError(f"not a SPDY frame: {frame!r}")


def _codec(codec: HeaderCodec | None) -> HeaderCodec:
    if codec is None:
        raise ValueError("frames with headers need the connection's HeaderCodec")
    return codec


# --- decoding -------------------------------------------------------------------------------


def read_frame(read_exact: Callable[[int], bytes], codec: HeaderCodec) -> Frame | None:
    """The next frame from `read_exact(n)` (which raises at EOF); None for an unknown control
    frame, which SPDY says to skip. ProtocolError when the bytes are not valid SPDY/3."""
    first, second = struct.unpack("!II", read_exact(8))
    flags, length = second >> 24, second & 0xFFFFFF
    if not first & 0x80000000:
        stream_id = first & 0x7FFFFFFF
        if stream_id == 0:
            raise ProtocolError("data frame on stream 0")
        if length > MAX_DATA_LENGTH:
            raise ProtocolError(f"data frame of {length} bytes (at most {MAX_DATA_LENGTH})")
        return Data(stream_id, read_exact(length) if length else b"", bool(flags & FLAG_FIN))
    version, kind = (first >> 16) & 0x7FFF, first & 0xFFFF
    if version != VERSION:
        raise ProtocolError(f"SPDY version {version} is not supported (only {VERSION})")
    if length > MAX_CONTROL_LENGTH:
        raise ProtocolError(f"control frame of {length} bytes (at most {MAX_CONTROL_LENGTH})")
    payload = read_exact(length) if length else b""
    parse = _PARSERS.get(kind)
    return None if parse is None else parse(payload, flags, codec)


def _fixed(payload: bytes, size: int, name: str) -> tuple[int, ...]:
    if len(payload) != size:
        raise ProtocolError(f"{name} frame of {len(payload)} bytes (must be {size})")
    return struct.unpack(f"!{size // 4}I", payload)


def _stream_id(value: int, name: str) -> int:
    stream_id = value & 0x7FFFFFFF
    if stream_id == 0:
        raise ProtocolError(f"{name} on stream 0")
    return stream_id


def _parse_syn_stream(payload: bytes, flags: int, codec: HeaderCodec) -> SynStream:
    if len(payload) < 10:
        raise ProtocolError("SYN_STREAM frame is truncated")
    stream_id, associated, priority, _slot = struct.unpack("!IIBB", payload[:10])
    return SynStream(_stream_id(stream_id, "SYN_STREAM"), codec.decompress(payload[10:]),
                     bool(flags & FLAG_FIN), bool(flags & FLAG_UNIDIRECTIONAL),
                     associated & 0x7FFFFFFF, priority >> 5)  # fmt: skip


def _parse_reply(payload: bytes, flags: int, codec: HeaderCodec) -> SynReply:
    if len(payload) < 4:
        raise ProtocolError("SYN_REPLY frame is truncated")
    stream_id = _stream_id(struct.unpack("!I", payload[:4])[0], "SYN_REPLY")
    return SynReply(stream_id, codec.decompress(payload[4:]), bool(flags & FLAG_FIN))


def _parse_headers(payload: bytes, flags: int, codec: HeaderCodec) -> HeadersFrame:
    if len(payload) < 4:
        raise ProtocolError("HEADERS frame is truncated")
    stream_id = _stream_id(struct.unpack("!I", payload[:4])[0], "HEADERS")
    return HeadersFrame(stream_id, codec.decompress(payload[4:]), bool(flags & FLAG_FIN))


def _parse_rst(payload: bytes, flags: int, codec: HeaderCodec) -> RstStream:
    stream_id, status = _fixed(payload, 8, "RST_STREAM")
    if status == 0:
        raise ProtocolError("RST_STREAM with status 0")
    return RstStream(_stream_id(stream_id, "RST_STREAM"), status)


def _parse_settings(payload: bytes, flags: int, codec: HeaderCodec) -> Settings:
    if len(payload) < 4 or len(payload) != 4 + 8 * struct.unpack("!I", payload[:4])[0]:
        raise ProtocolError("SETTINGS frame length does not match its entry count")
    entries = struct.unpack(f"!{(len(payload) - 4) // 4}I", payload[4:])
    return Settings({key & 0xFFFFFF: value for key, value in zip(entries[::2], entries[1::2],
                                                                  strict=True)})  # fmt: skip


def _parse_ping(payload: bytes, flags: int, codec: HeaderCodec) -> Ping:
    return Ping(_fixed(payload, 4, "PING")[0])


def _parse_goaway(payload: bytes, flags: int, codec: HeaderCodec) -> GoAway:
    last_good, status = _fixed(payload, 8, "GOAWAY")
    return GoAway(last_good & 0x7FFFFFFF, status)


def _parse_window_update(payload: bytes, flags: int, codec: HeaderCodec) -> WindowUpdate:
    stream_id, delta = _fixed(payload, 8, "WINDOW_UPDATE")
    if not delta & 0x7FFFFFFF:
        raise ProtocolError("WINDOW_UPDATE with a delta of 0")
    return WindowUpdate(stream_id & 0x7FFFFFFF, delta & 0x7FFFFFFF)


_PARSERS = {
    SYN_STREAM: _parse_syn_stream, SYN_REPLY: _parse_reply, HEADERS: _parse_headers,
    RST_STREAM: _parse_rst, SETTINGS: _parse_settings, PING: _parse_ping,
    GOAWAY: _parse_goaway, WINDOW_UPDATE: _parse_window_update,
}  # fmt: skip
