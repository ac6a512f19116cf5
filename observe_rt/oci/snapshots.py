"""Per-layer snapshot directories for overlayfs, keyed by OCI chain id.

    root/snapshots/<n>/fs          one layer's files, whiteouts in overlay form
    root/snapshots/<n>/meta.json   chain id, parent, diff_id, layer digest, bytes, inodes
    root/snapshots/tmp-<rand>/     an unpack in progress; its .lock is flock'ed by the unpacker
    root/snapshots/del-<rand>/     a snapshot being removed
    root/snapshots/.lock, last-id  serialise numbering, commits and sweeps; last number used

Short numbers name the directories, not chain ids: overlayfs takes every lower dir in one mount
option string of at most a page (4096 bytes), and short paths let about a hundred layers fit.
Numbers are never reused, so a path recorded for a running container never names another layer.

A layer is unpacked into tmp-<rand>, synced, then renamed to <n>: a directory <n> is always
complete. A killed unpack leaves only tmp-<rand>, removed on the next open (its lock is free).

Lifetime: no reference counts are stored, so none can drift after a crash. prune(in_use)
removes every snapshot whose chain id is not in the set the caller computes from the image
records (every chain id of every image) and the containers still mounted on them.
"""

from __future__ import annotations

import contextlib
import fcntl
import functools
import hashlib
import json
import os
import shutil
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, fields
from pathlib import Path
from typing import BinaryIO, NamedTuple

from observe_rt import trace
from observe_rt.errors import FailedPrecondition, InvalidArgument, NotFound
from observe_rt.host import libc
from observe_rt.host.files import fsync_dir, write_json_atomic
from observe_rt.oci.store import ContentStore, flocked, try_flocked
from observe_rt.oci.unpack import Limits, unpack_layer

_MOUNT_DATA_MAX = 4096 - 1  # one page, NUL included


def chain_ids(diff_ids: Sequence[str]) -> list[str]:
    """ChainID of each layer prefix (image-spec config.md):
    ChainID(L0) = DiffID(L0); ChainID(L0..n) = sha256(ChainID(L0..n-1) + " " + DiffID(Ln))."""
    chains: list[str] = []
    for diff_id in diff_ids:
        chains.append(_next_chain(chains[-1] if chains else None, diff_id))
    return chains


def _next_chain(parent: str | None, diff_id: str) -> str:
    if parent is None:
        return diff_id
    return "sha256:" + hashlib.sha256(f"{parent} {diff_id}".encode()).hexdigest()


class LayerRef(NamedTuple):
    digest: str  # the compressed blob in the content store
    diff_id: str  # from the image config's rootfs.diff_ids
    media_type: str | None = None


@dataclass(frozen=True)
class Snapshot:
    chain_id: str
    number: int
    parent: str | None
    diff_id: str
    layer_digest: str
    bytes: int
    inodes: int
    created: float
    dir: str

    @property
    def fs(self) -> str:
        return os.path.join(self.dir, "fs")


@dataclass(frozen=True)
class Usage:
    bytes: int
    inodes: int


@dataclass(frozen=True)
class OverlayRootfs:
    lowerdirs: tuple[str, ...]  # top layer first, as overlayfs wants them
    upperdir: str
    workdir: str

    @property
    def data(self) -> str:
        return overlay_data(self.lowerdirs, self.upperdir, self.workdir)

    def mount(self, target: str | Path) -> None:
        mount_overlay(self.lowerdirs, self.upperdir, self.workdir, target)


def overlay_data(lowerdirs: Sequence[str], upper: str, work: str) -> str:
    """The overlay mount option string; refuses paths overlayfs would split or unescape."""
    if not lowerdirs:
        raise InvalidArgument("overlay rootfs needs at least one lower directory")
    for path in (*lowerdirs, upper, work):
        if any(c in str(path) for c in ",:\\") or not os.path.isabs(path):
            raise InvalidArgument(f"overlay path {path!r} must be absolute, without , : or \\")
    # index=off: the upper dir is not tied to these exact lower dirs (as containerd does).
    data = f"lowerdir={':'.join(map(str, lowerdirs))},upperdir={upper},workdir={work},index=off"
    if len(data) > _MOUNT_DATA_MAX:
        raise FailedPrecondition(
            f"overlay options for {len(lowerdirs)} layers are {len(data)} bytes, over the "
            f"kernel's {_MOUNT_DATA_MAX}-byte limit"
        )
    return data


def image_fs_usage(content: ContentStore, snapshots: SnapshotStore) -> Usage:
    """What the image store holds, for CRI ImageFsInfo: blobs plus unpacked snapshots."""
    blob_bytes, blob_inodes = content.usage()
    unpacked = snapshots.usage()
    return Usage(blob_bytes + unpacked.bytes, blob_inodes + unpacked.inodes)


def mount_overlay(
    lowerdirs: Sequence[str], upper: str | Path, work: str | Path, target: str | Path
) -> None:
    data = overlay_data([str(p) for p in lowerdirs], str(upper), str(work))
    libc.mount("overlay", str(target), "overlay", 0, data)


def unmount(target: str | Path, detach: bool = False) -> None:
    libc.umount2(str(target), libc.MNT_DETACH if detach else 0)


class SnapshotStore:
    def __init__(self, root: str | Path, limits: Limits | None = None) -> None:
        self.dir = Path(root) / "snapshots"
        self.dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        self.limits = limits or Limits()
        self._index: dict[str, Snapshot] = {}
        self._guard = threading.Lock()  # the index and the per-chain locks
        self._chain_locks: dict[str, threading.Lock] = {}
        with self._locked():
            self._sweep()
            self._load()

    # -- lookups ----------------------------------------------------------------------------

    def get(self, chain_id: str) -> Snapshot | None:
        with self._guard:
            return self._index.get(chain_id)

    def has(self, chain_id: str) -> bool:
        return self.get(chain_id) is not None

    def list(self) -> list[Snapshot]:
        with self._guard:
            return sorted(self._index.values(), key=lambda s: s.number)

    def usage(self) -> Usage:
        """Bytes and inodes of every snapshot, from figures kept when each was made."""
        snapshots = self.list()
        return Usage(sum(s.bytes for s in snapshots), sum(s.inodes for s in snapshots))

    def lowerdirs(self, chain: Sequence[str]) -> list[str]:
        """fs dirs of `chain` (chain ids, bottom layer first), top first for overlayfs."""
        dirs = []
        for chain_id in chain:
            snapshot = self.get(chain_id)
            if snapshot is None:
                raise NotFound(f"snapshot {chain_id} not found (layer not unpacked)")
            dirs.append(snapshot.fs)
        return dirs[::-1]

    # -- making snapshots -------------------------------------------------------------------

    def unpack_image(self, content: ContentStore, layers: Sequence[LayerRef]) -> list[Snapshot]:
        """Every layer of an image as a snapshot, unpacking only those not there yet."""
        snapshots: list[Snapshot] = []
        chains = chain_ids([layer.diff_id for layer in layers])
        for layer, chain_id in zip(layers, chains, strict=True):
            parent = snapshots[-1].chain_id if snapshots else None
            snapshot = self.ensure(
                chain_id, parent, functools.partial(content.open, layer.digest),
                layer_digest=layer.digest, diff_id=layer.diff_id, media_type=layer.media_type,
            )  # fmt: skip
            snapshots.append(snapshot)
        return snapshots

    def ensure(
        self,
        chain_id: str,
        parent: str | None,
        open_blob: Callable[[], BinaryIO],
        *,
        layer_digest: str,
        diff_id: str,
        media_type: str | None = None,
    ) -> Snapshot:
        """The snapshot `chain_id`, unpacked from the blob first if it does not exist yet."""
        if _next_chain(parent, diff_id) != chain_id:
            raise InvalidArgument(f"chain id {chain_id} does not follow from {parent} + {diff_id}")
        with self._chain_lock(chain_id):
            existing = self.get(chain_id) or self._reloaded(chain_id)
            if existing is not None:
                return existing
            lowers = self.lowerdirs(self._chain_of(parent)) if parent else []
            with self._staging() as tmp:
                with open_blob() as blob, trace.span("image.unpack") as span:
                    result = unpack_layer(
                        blob, tmp / "fs", layer_digest=layer_digest, media_type=media_type,
                        expected_diff_id=diff_id, limits=self.limits, parent_dirs=lowers,
                    )  # fmt: skip
                    span.set_attributes({"oci.layer.digest": layer_digest,
                                         "oci.layer.bytes": result.bytes,
                                         "oci.layer.inodes": result.inodes})  # fmt: skip
                meta = {
                    "chain_id": chain_id, "parent": parent, "diff_id": diff_id,
                    "layer_digest": layer_digest, "bytes": result.bytes, "inodes": result.inodes,
                    "created": time.time(),
                }  # fmt: skip
                write_json_atomic(tmp / "meta.json", meta)
                _sync_filesystem(tmp)  # every file on disk before the rename marks it done
                return self._commit(tmp, chain_id)

    def _chain_of(self, top: str) -> list[str]:
        chain: list[str | None] = [top]
        while chain[-1] is not None:
            snapshot = self.get(chain[-1])  # type: ignore[arg-type]
            if snapshot is None:
                raise NotFound(f"parent snapshot {chain[-1]} not found")
            chain.append(snapshot.parent)
        return [c for c in reversed(chain) if c is not None]

    @contextlib.contextmanager
    def _chain_lock(self, chain_id: str) -> Iterator[None]:
        # Two pulls sharing a layer in this process: the second waits, then finds it done.
        with self._guard:
            lock = self._chain_locks.setdefault(chain_id, threading.Lock())
        with lock:
            yield

    @contextlib.contextmanager
    def _staging(self) -> Iterator[Path]:
        """A fresh tmp-<rand> dir with fs/ inside, locked so no sweep takes it; removed on error."""
        with self._locked():
            tmp = self.dir / f"tmp-{uuid.uuid4().hex}"
            (tmp / "fs").mkdir(parents=True, mode=0o700)
            os.chmod(tmp / "fs", 0o755)
            lock_fd = os.open(tmp / ".lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
            fcntl.flock(lock_fd, fcntl.LOCK_EX)
        try:
            yield tmp
        finally:
            os.close(lock_fd)
            shutil.rmtree(tmp, ignore_errors=True)  # gone already when committed

    def _commit(self, tmp: Path, chain_id: str) -> Snapshot:
        with self._locked():
            self._load()  # another process may have committed the same chain meanwhile
            existing = self.get(chain_id)
            if existing is not None:
                return existing
            number = self._next_number()
            os.rename(tmp, self.dir / str(number))
            fsync_dir(self.dir)
            snapshot = self._read(number)
            with self._guard:
                self._index[chain_id] = snapshot
            return snapshot

    def _next_number(self) -> int:
        counter = self.dir / "last-id"
        try:
            last = int(counter.read_text())
        except FileNotFoundError:
            last = 0
        numbers = [int(n) for n in os.listdir(self.dir) if n.isdigit()]
        number = max([last, *numbers]) + 1
        write_json_atomic(counter, number)
        return number

    # -- removing ---------------------------------------------------------------------------

    def remove(self, chain_id: str) -> None:
        """Remove one snapshot; refused while another snapshot is built on it."""
        with self._locked():
            self._load()
            if self.get(chain_id) is None:
                raise NotFound(f"snapshot {chain_id} not found")
            children = [s.chain_id for s in self.list() if s.parent == chain_id]
            if children:
                raise FailedPrecondition(f"snapshot {chain_id} is the parent of {children[0]}")
            doomed = self._retire(chain_id)
        shutil.rmtree(doomed, ignore_errors=True)

    def prune(self, in_use: Iterable[str]) -> list[str]:
        """Remove every snapshot whose chain id is not in `in_use`; returns those removed."""
        keep = set(in_use)
        with self._locked():
            self._load()
            removed = [s.chain_id for s in self.list() if s.chain_id not in keep]
            doomed = [self._retire(chain_id) for chain_id in removed]
        for path in doomed:
            shutil.rmtree(path, ignore_errors=True)
        return removed

    def _retire(self, chain_id: str) -> Path:
        """Rename away first, so a half-deleted snapshot never looks complete."""
        with self._guard:
            snapshot = self._index.pop(chain_id)
        doomed = self.dir / f"del-{uuid.uuid4().hex}"
        os.rename(snapshot.dir, doomed)
        return doomed

    # -- on disk ----------------------------------------------------------------------------

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        with flocked(self.dir / ".lock"):
            yield

    def _sweep(self) -> None:
        for entry in os.scandir(self.dir):
            if entry.name.startswith("del-") or (
                entry.name.startswith("tmp-") and _lock_is_free(Path(entry.path) / ".lock")
            ):
                shutil.rmtree(entry.path, ignore_errors=True)

    def _load(self) -> None:
        index = {}
        for name in os.listdir(self.dir):
            if name.isdigit():
                with contextlib.suppress(FileNotFoundError):
                    snapshot = self._read(int(name))
                    index[snapshot.chain_id] = snapshot
        with self._guard:
            self._index = index

    def _reloaded(self, chain_id: str) -> Snapshot | None:
        with self._locked():
            self._load()
        return self.get(chain_id)

    def _read(self, number: int) -> Snapshot:
        path = self.dir / str(number)
        meta = json.loads((path / "meta.json").read_text(encoding="utf-8"))
        known = {f.name for f in fields(Snapshot)} - {"number", "dir"}
        return Snapshot(number=number, dir=str(path), **{k: meta[k] for k in known})

    def prepare_rootfs(self, chain: Sequence[str], container_dir: str | Path) -> OverlayRootfs:
        """Upper and work dirs for one container over the image's snapshots; mount is separate.

        `chain` is the image's chain ids, bottom layer first (chain_ids(image.diff_ids)).
        """
        lowers = self.lowerdirs(chain)
        container_dir = Path(container_dir)
        upper, work = container_dir / "upper", container_dir / "work"
        for path in (upper, work):
            path.mkdir(parents=True, exist_ok=True, mode=0o700)
        os.chmod(upper, 0o755)  # the merged root dir takes its mode from the upper root
        rootfs = OverlayRootfs(tuple(lowers), str(upper), str(work))
        overlay_data(rootfs.lowerdirs, rootfs.upperdir, rootfs.workdir)  # too long: fail now
        return rootfs


def _sync_filesystem(path: Path) -> None:
    """Flush the filesystem holding `path` only: os.sync() would wait for every disk."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        libc.syncfs(fd)
    finally:
        os.close(fd)


def _lock_is_free(path: Path) -> bool:
    with try_flocked(path) as held:
        return held is not False  # a missing lock file is free too
