"""Content store (blobs by digest) and image records, on disk under one root.

    root/blobs/<alg>/<hex>     committed blobs, each verified against its digest and size
    root/ingest/<random>.part  blobs being written, each flock'ed by its writer
    root/ingest/.lock          held while an ingest file is created or the ingest dir is swept
    root/images/<hex>.json     one ImageRecord per image; the id is the config digest

A blob becomes visible only by rename after its digest and size were checked, so a pull killed
half-way leaves at most an ingest file. Interrupted ingests are not resumed: opening the store
removes every ingest file whose writer is gone (its flock is free), and a repeated pull fetches
that blob again from the start.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import re
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import BinaryIO

from observe_rt.errors import InvalidArgument, NotFound, ObserveRtError
from observe_rt.host.files import fsync_dir, write_json_atomic  # noqa: F401 - re-exported

_HEX = {"sha256": re.compile(r"[a-f0-9]{64}"), "sha512": re.compile(r"[a-f0-9]{128}")}
_COPY_CHUNK = 1 << 20


class InvalidDigest(InvalidArgument):
    pass


class DigestMismatch(ObserveRtError):
    """Bytes received do not match the digest or size they were announced with."""


class AmbiguousImage(InvalidArgument):
    pass


def parse_digest(digest: str) -> tuple[str, str]:
    """Split "sha256:<hex>" into (algorithm, hex); anything else raises InvalidDigest.

    Strict on purpose: the hex part becomes a file name, so it must never hold '/' or '..'.
    """
    alg, sep, hexpart = digest.partition(":") if isinstance(digest, str) else ("", "", "")
    pattern = _HEX.get(alg)
    if not sep or pattern is None or not pattern.fullmatch(hexpart):
        raise InvalidDigest(
            f"invalid digest {digest!r}: want sha256:<64 lowercase hex> or sha512:<128 hex>"
        )
    return alg, hexpart


@contextlib.contextmanager
def flocked(path: Path) -> Iterator[None]:
    """An exclusive flock on `path` (created if missing); excludes other processes and threads."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


@contextlib.contextmanager
def try_flocked(path: str | Path) -> Iterator[bool | None]:
    """Try an exclusive flock on an existing `path` without waiting: yields True while it is
    held, False when another open file holds it, None when `path` does not exist."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        yield None
        return
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            yield False
        else:
            yield True
    finally:
        os.close(fd)


class BlobWriter:
    """Streams one blob into an ingest file, hashing as it goes; commit() makes it visible."""

    def __init__(self, store: ContentStore, expected_digest: str | None, expected_size: int | None):
        self._store = store
        self._expected_digest = expected_digest
        self._expected_size = expected_size
        alg = parse_digest(expected_digest)[0] if expected_digest else "sha256"
        self._hash = hashlib.new(alg)
        self.written = 0
        with flocked(store.ingest_dir / ".lock"):
            self.path = store.ingest_dir / f"{uuid.uuid4().hex}.part"
            self._fd = os.open(
                self.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600
            )
            # Held until commit or abort: tells a sweeping store that this ingest is alive.
            fcntl.flock(self._fd, fcntl.LOCK_EX)

    def write(self, data: bytes) -> int:
        if self._fd < 0:
            raise ValueError(f"blob writer {self.path.name} is closed")
        if self._expected_size is not None and self.written + len(data) > self._expected_size:
            self.abort()
            raise DigestMismatch(
                f"blob {self._expected_digest or '(no digest)'}: more than the expected "
                f"{self._expected_size} bytes received"
            )
        view = memoryview(data)
        while view:
            view = view[os.write(self._fd, view) :]
        self._hash.update(data)
        self.written += len(data)
        return len(data)

    def commit(self, expected_digest: str | None = None, expected_size: int | None = None) -> str:
        """Verify, fsync and rename into place; returns the blob's digest."""
        expected_digest = expected_digest or self._expected_digest
        expected_size = self._expected_size if expected_size is None else expected_size
        actual = f"{self._hash.name}:{self._hash.hexdigest()}"
        try:
            if expected_size is not None and self.written != expected_size:
                raise DigestMismatch(
                    f"blob {expected_digest or actual}: {self.written} bytes, not {expected_size}"
                )
            if expected_digest is not None and actual != expected_digest:
                raise DigestMismatch(f"digest mismatch: expected {expected_digest}, got {actual}")
            os.fsync(self._fd)
            self._store._publish(self.path, actual)
        finally:
            self.abort()
        return actual

    def abort(self) -> None:
        """Drop the ingest file; safe to call twice and after commit."""
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1
        self.path.unlink(missing_ok=True)

    def __enter__(self) -> BlobWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.abort()  # a committed blob is already renamed away; anything else is dropped


class ContentStore:
    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)
        self.ingest_dir = self.root / "ingest"
        for sub in ("blobs/sha256", "blobs/sha512", "ingest"):
            (self.root / sub).mkdir(parents=True, exist_ok=True, mode=0o700)
        self.sweep_ingest()

    def path(self, digest: str) -> Path:
        alg, hexpart = parse_digest(digest)
        return self.root / "blobs" / alg / hexpart

    def sweep_ingest(self) -> list[str]:
        """Remove ingest files left by dead writers; a live writer holds its flock."""
        removed = []
        with flocked(self.ingest_dir / ".lock"):
            for entry in os.scandir(self.ingest_dir):
                if entry.name.endswith(".part") and _unlink_if_unlocked(entry.path):
                    removed.append(entry.name)
        return removed

    def writer(
        self, expected_digest: str | None = None, expected_size: int | None = None
    ) -> BlobWriter:
        return BlobWriter(self, expected_digest, expected_size)

    def ingest(
        self, source: BinaryIO, expected_digest: str | None = None, expected_size: int | None = None
    ) -> str:
        """Copy a readable stream into the store; returns its digest."""
        if expected_digest and self.has(expected_digest):
            return expected_digest
        with self.writer(expected_digest, expected_size) as out:
            while chunk := source.read(_COPY_CHUNK):
                out.write(chunk)
            return out.commit()

    def put_bytes(self, data: bytes, expected_digest: str | None = None) -> str:
        with self.writer(expected_digest, len(data)) as out:
            out.write(data)
            return out.commit()

    def _publish(self, tmp: Path, digest: str) -> None:
        target = self.path(digest)
        os.chmod(tmp, 0o444)
        os.replace(tmp, target)  # same bytes if it already existed: digest names content
        fsync_dir(target.parent)

    def has(self, digest: str) -> bool:
        return self.path(digest).is_file()

    def open(self, digest: str) -> BinaryIO:
        try:
            return open(self.path(digest), "rb")
        except FileNotFoundError:
            raise NotFound(f"blob {digest} not found in the content store") from None

    def read_bytes(self, digest: str) -> bytes:
        with self.open(digest) as blob:
            return blob.read()

    def size(self, digest: str) -> int:
        try:
            return self.path(digest).stat().st_size
        except FileNotFoundError:
            raise NotFound(f"blob {digest} not found in the content store") from None

    def delete(self, digest: str) -> bool:
        """Remove a blob; False when it was not there."""
        try:
            self.path(digest).unlink()
        except FileNotFoundError:
            return False
        return True

    def walk(self) -> Iterator[tuple[str, int]]:
        """(digest, size) of every committed blob."""
        for alg in _HEX:
            for entry in os.scandir(self.root / "blobs" / alg):
                if _HEX[alg].fullmatch(entry.name):
                    with contextlib.suppress(FileNotFoundError):
                        yield f"{alg}:{entry.name}", entry.stat(follow_symlinks=False).st_size

    def usage(self) -> tuple[int, int]:
        """(bytes, inodes) of committed blobs: one stat per blob, never per file of a layer."""
        sizes = [size for _, size in self.walk()]
        return sum(sizes), len(sizes)


def _unlink_if_unlocked(path: str) -> bool:
    with try_flocked(path) as held:
        if held:
            os.unlink(path)
        return bool(held)


@dataclass
class ImageRecord:
    """What the runtime keeps about one pulled or imported image."""

    id: str  # the config digest, as containerd and docker name images
    manifest_digest: str
    config_digest: str
    layer_digests: list[str]  # compressed blobs, as in the manifest
    diff_ids: list[str]  # uncompressed layers, from the config's rootfs
    size: int  # bytes of the blobs (manifest, config, layers)
    repo_tags: list[str] = field(default_factory=list)
    repo_digests: list[str] = field(default_factory=list)
    created: str = ""  # the config's "created" timestamp, as written there
    pulled: float = field(default_factory=time.time)
    pinned: bool = False

    def __post_init__(self) -> None:
        for digest in (self.id, self.manifest_digest, self.config_digest, *self.layer_digests):
            parse_digest(digest)
        if len(self.layer_digests) != len(self.diff_ids):
            raise InvalidArgument(
                f"image {self.id}: {len(self.layer_digests)} layers but "
                f"{len(self.diff_ids)} diff_ids"
            )

    @classmethod
    def from_json(cls, data: dict) -> ImageRecord:
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})


class ImageStore:
    """Image records, one JSON file each, with an in-memory index for lookups.

    A tag or repo digest names one image: adding it to an image takes it from any other (a new
    pull of busybox:latest moves the tag). Each file is replaced atomically; moving a tag writes
    two files, and if a crash falls between them the newer record keeps the tag on load.
    """

    def __init__(self, root: str | Path) -> None:
        self.dir = Path(root) / "images"
        self.dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        self._lock = threading.RLock()
        self._images: dict[str, ImageRecord] = {}
        self.reload()

    def reload(self) -> None:
        images = {}
        for path in sorted(self.dir.glob("*.json")):
            with contextlib.suppress(FileNotFoundError):
                record = ImageRecord.from_json(json.loads(path.read_text(encoding="utf-8")))
                images[record.id] = record
        with self._lock:
            self._images = images
            for record in sorted(images.values(), key=lambda r: r.pulled):
                self._take_names(record, persist=False)

    def _path(self, image_id: str) -> Path:
        return self.dir / f"{parse_digest(image_id)[1]}.json"

    def _save(self, record: ImageRecord) -> None:
        write_json_atomic(self._path(record.id), asdict(record))

    def _take_names(self, record: ImageRecord, persist: bool = True) -> None:
        """Remove record's tags and repo digests from every other image."""
        names = set(record.repo_tags) | set(record.repo_digests)
        for other in list(self._images.values()):
            held = set(other.repo_tags) | set(other.repo_digests)
            if other.id == record.id or not names & held:
                continue
            other.repo_tags = [t for t in other.repo_tags if t not in names]
            other.repo_digests = [d for d in other.repo_digests if d not in names]
            if persist:
                self._save(other)

    def put(self, record: ImageRecord) -> ImageRecord:
        """Add an image, or merge names into the existing record with the same id."""
        with self._lock:
            old = self._images.get(record.id)
            if old is not None:
                record.repo_tags = _merged(old.repo_tags, record.repo_tags)
                record.repo_digests = _merged(old.repo_digests, record.repo_digests)
                record.pinned = record.pinned or old.pinned
            self._take_names(record)
            self._save(record)
            self._images[record.id] = record
            return record

    def add_tag(self, image_id: str, tag: str) -> ImageRecord:
        with self._lock:
            record = self.get(image_id)
            record.repo_tags = _merged(record.repo_tags, [tag])
            self._take_names(record)
            self._save(record)
            return record

    def remove_tag(self, image_id: str, tag: str) -> ImageRecord:
        with self._lock:
            record = self.get(image_id)
            record.repo_tags = [t for t in record.repo_tags if t != tag]
            self._save(record)
            return record

    def remove(self, image_id: str) -> ImageRecord:
        with self._lock:
            record = self.get(image_id)
            self._path(record.id).unlink(missing_ok=True)
            fsync_dir(self.dir)
            del self._images[record.id]
            return record

    def list(self) -> list[ImageRecord]:
        with self._lock:
            return sorted(self._images.values(), key=lambda r: r.pulled)

    def get(self, image_id: str) -> ImageRecord:
        with self._lock:
            record = self._images.get(image_id)
        if record is None:
            raise NotFound(f"image {image_id} not found")
        return record

    def find_by_tag(self, tag: str) -> ImageRecord | None:
        return next((r for r in self.list() if tag in r.repo_tags), None)

    def find_by_digest(self, digest_ref: str) -> ImageRecord | None:
        """By repo digest ("name@sha256:...") or by bare manifest digest."""
        for record in self.list():
            if digest_ref in record.repo_digests or digest_ref == record.manifest_digest:
                return record
        return None

    def find_by_id_prefix(self, prefix: str) -> ImageRecord | None:
        """By a unique prefix of the id's hex (with or without "sha256:")."""
        hexpart = prefix.removeprefix("sha256:")
        if not hexpart or not re.fullmatch(r"[a-f0-9]{1,64}", hexpart):
            return None
        matches = [r for r in self.list() if r.id.startswith(f"sha256:{hexpart}")]
        if len(matches) > 1:
            raise AmbiguousImage(f"image id prefix {prefix!r} matches {len(matches)} images")
        return matches[0] if matches else None

    def resolve(self, name: str) -> ImageRecord:
        """An image named by id, id prefix, repo tag or digest (names already normalised)."""
        with self._lock:
            if name in self._images:
                return self._images[name]
        found = self.find_by_tag(name) or self.find_by_digest(name)
        found = found or self.find_by_id_prefix(name)
        if found is None:
            raise NotFound(f"image {name!r} not found")
        return found


def _merged(old: list[str], new: list[str]) -> list[str]:
    return list(dict.fromkeys([*old, *new]))
