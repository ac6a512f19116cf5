"""Apply one OCI image layer to an empty snapshot directory, in one streaming pass.

The layer (gzip, zstd or plain tar, told apart by magic bytes) is decompressed, hashed for its
diff_id and untarred as it streams; nothing is buffered beyond one chunk and one tar header.

Entries are written by applier.py, which keeps hostile layers inside the snapshot and turns
OCI whiteouts into overlayfs ones. Here, against decompression bombs, the uncompressed bytes,
entries, name length and tar header size are bounded.
"""

from __future__ import annotations

import gzip
import hashlib
import tarfile
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import zstandard

from observe_rt.oci.applier import Applier, LayerError, LayerLimitExceeded, UnsafeLayer

GIB = 1 << 30
_CHUNK = 1 << 20
_GZIP_MAGIC = b"\x1f\x8b"
_ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"
# GNU long name/link, PAX extended and global, Solaris extended headers.
_LONG_HEADER_TYPES = (b"L", b"K", b"x", b"g", b"X")
# The layer errors are raised by the applier too, and are this module's API as well.
__all__ = [
    "DiffIdMismatch",
    "LayerError",
    "LayerLimitExceeded",
    "Limits",
    "UnpackResult",
    "UnsafeLayer",
    "decompressed",
    "unpack_layer",
]


class DiffIdMismatch(LayerError):
    pass


@dataclass(frozen=True)
class Limits:
    max_bytes: int = 10 * GIB  # uncompressed tar stream
    max_entries: int = 1_000_000
    max_path: int = 4096  # bytes in one entry name
    max_header: int = 1 << 20  # one PAX or GNU long-name header, which tarfile reads whole


@dataclass(frozen=True)
class UnpackResult:
    diff_id: str
    bytes: int  # content of regular files written (apparent size)
    inodes: int  # files, directories, links, nodes and whiteouts created
    entries: int


def unpack_layer(
    blob: BinaryIO,
    dest: str | Path,
    *,
    layer_digest: str,
    media_type: str | None = None,
    expected_diff_id: str | None = None,
    limits: Limits | None = None,
    parent_dirs: Sequence[str | Path] = (),
    same_owner: bool | None = None,
) -> UnpackResult:
    """Apply the compressed layer `blob` to the directory `dest`; returns its diff_id and sizes.

    parent_dirs are the snapshots below this one (top first): a directory this layer needs but
    does not carry is created with the mode and owner it has there, as overlayfs shows the
    upper one. same_owner defaults to "running as root".
    """
    limits = limits or Limits()
    stream = _HashingReader(decompressed(blob, media_type, layer_digest), limits, layer_digest)
    with Applier(
        Path(dest), layer_digest, limits.max_entries, limits.max_path, parent_dirs, same_owner
    ) as applier:
        _apply_tar(stream, applier, limits, layer_digest)
    diff_id = f"sha256:{stream.hash.hexdigest()}"
    if expected_diff_id is not None and diff_id != expected_diff_id:
        raise DiffIdMismatch(
            f"layer {layer_digest}: diff_id mismatch: the image config says {expected_diff_id}, "
            f"the uncompressed layer is {diff_id}"
        )
    return UnpackResult(diff_id, applier.bytes, applier.inodes, applier.entries)


def _apply_tar(stream: _HashingReader, applier: Applier, limits: Limits, layer_digest: str) -> None:
    """Every entry of the tar stream through `applier`, then the stream read to its very end."""
    try:
        tarinfo = _bounded_tarinfo(limits, layer_digest)
        with tarfile.open(
            fileobj=stream, mode="r|", bufsize=_CHUNK, tarinfo=tarinfo, encoding="utf-8",
            errors="surrogateescape",
        ) as tar:  # fmt: skip
            while (member := tar.next()) is not None:
                applier.apply(member, tar)
                tar.members.clear()  # stream mode keeps every header otherwise
        applier.set_directory_times()
        stream.drain()  # the diff_id covers the padding after the end-of-archive blocks
    except (tarfile.TarError, EOFError, zlib.error, zstandard.ZstdError, OSError) as err:
        raise LayerError(
            f"layer {layer_digest}: corrupt or truncated after entry {applier.last_entry!r}: {err}"
        ) from err


def decompressed(blob: BinaryIO, media_type: str | None, layer_digest: str) -> BinaryIO:
    """A reader of the tar inside `blob`; the magic bytes decide, the media type only checks."""
    head = blob.read(4)
    source = _Prefixed(head, blob)
    if head.startswith(_GZIP_MAGIC):
        return gzip.GzipFile(fileobj=source, mode="rb")  # type: ignore[return-value]
    if head.startswith(_ZSTD_MAGIC):
        return zstandard.ZstdDecompressor().stream_reader(source, read_across_frames=True)
    kind = (media_type or "").rsplit("+", 1)[-1].rsplit(".", 1)[-1]
    if kind in ("gzip", "zstd"):
        raise LayerError(f"layer {layer_digest}: media type {media_type}, but not {kind} data")
    return source  # type: ignore[return-value]


class _Prefixed:
    """Gives back the magic bytes already read, then the rest of the blob."""

    def __init__(self, head: bytes, rest: BinaryIO) -> None:
        self._head = head
        self._rest = rest

    def read(self, size: int = -1) -> bytes:
        if not self._head:
            return self._rest.read(size)
        if 0 <= size < len(self._head):
            data, self._head = self._head[:size], self._head[size:]
            return data
        data, self._head = self._head, b""
        return data + self._rest.read(-1 if size < 0 else size - len(data))


class _HashingReader:
    """Counts and hashes the uncompressed tar stream, stopping at the byte limit."""

    def __init__(self, source: BinaryIO, limits: Limits, layer_digest: str) -> None:
        self._source = source
        self._limit = limits.max_bytes
        self._layer = layer_digest
        self.hash = hashlib.sha256()
        self.count = 0

    def read(self, size: int = -1) -> bytes:
        data = self._source.read(size if 0 <= size <= _CHUNK else _CHUNK)
        self.count += len(data)
        if self.count > self._limit:
            raise LayerLimitExceeded(
                f"layer {self._layer}: more than {self._limit} uncompressed bytes (limit max_bytes)"
            )
        self.hash.update(data)
        return data

    def drain(self) -> None:
        while self.read(_CHUNK):
            pass


def _bounded_tarinfo(limits: Limits, layer_digest: str) -> type[tarfile.TarInfo]:
    class BoundedTarInfo(tarfile.TarInfo):
        # tarfile reads a PAX or GNU long-name header into memory whole: bound it first.
        def _proc_member(self, tar):  # type: ignore[no-untyped-def]
            if self.type in _LONG_HEADER_TYPES and self.size > limits.max_header:
                raise LayerLimitExceeded(
                    f"layer {layer_digest}: tar extended header of {self.size} bytes exceeds "
                    f"{limits.max_header} (limit max_header)"
                )
            return super()._proc_member(tar)

    return BoundedTarInfo
