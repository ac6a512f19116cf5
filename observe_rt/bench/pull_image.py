"""The `bench pull` image: about N MB of real files from this host in five gzip layers.

Layers hold what real images hold, taken from /usr in a fixed (sorted) order, so the same host
gives the same digests:

    1 shared libraries      /usr/lib/<multiarch>                        45 %
    2 language runtime      /usr/lib/python3.X, /usr/lib/python3        20 %
    3 locales and zones     /usr/share/locale, /usr/share/zoneinfo      15 %
    4 documentation         /usr/share/doc (thousands of small files)  12 %
    5 application           /usr/share/perl*, then anything in /usr     8 %

Each layer is filled until its compressed size reaches its share of the target (a layer whose
sources run out spills into /usr/lib and /usr/share, never repeating a file). Entries get fixed
owners and mtimes; modes, symlinks and hardlinks within a layer are kept. Layers are streamed
through gzip (level 6, as docker and containerd write them) straight to disk, hashing both the
tar (diff id) and the gzip stream (digest) on the way, so nothing large is held in memory.
"""

from __future__ import annotations

import gzip
import hashlib
import os
import stat
import sys
import sysconfig
import tarfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from observe_rt.bench.image import MTIME, Blob, Image, PushSession, assemble, config_blob_for
from observe_rt.oci import media

REPOSITORY = "bench/app"
TAG = "1"
GZIP_LEVEL = 6
FALLBACK_SOURCES = ("/usr/lib", "/usr/share")


@dataclass(frozen=True)
class LayerPlan:
    name: str
    sources: tuple[str, ...]
    share: float


def default_plans() -> tuple[LayerPlan, ...]:
    multiarch = sysconfig.get_config_var("MULTIARCH") or f"{os.uname().machine}-linux-gnu"
    python = f"/usr/lib/python3.{sys.version_info.minor}"
    return (
        LayerPlan("shared libraries", (f"/usr/lib/{multiarch}",), 0.45),
        LayerPlan("language runtime", (python, "/usr/lib/python3"), 0.20),
        LayerPlan("locales and time zones", ("/usr/share/locale", "/usr/share/zoneinfo"), 0.15),
        LayerPlan("documentation", ("/usr/share/doc",), 0.12),
        LayerPlan("application", ("/usr/share/perl", "/usr/share/perl5"), 0.08),
    )


@dataclass(frozen=True)
class BuiltLayer:
    name: str
    path: Path  # the compressed blob on disk
    digest: str
    size: int
    diff_id: str
    uncompressed_size: int
    entries: int

    def descriptor(self) -> dict:
        return {"mediaType": media.OCI_LAYER_GZIP, "digest": self.digest, "size": self.size}


@dataclass
class BenchImage:
    image: Image  # manifest + config (layers are files, see `layers`)
    layers: list[BuiltLayer] = field(default_factory=list)

    @property
    def compressed_bytes(self) -> int:
        return sum(layer.size for layer in self.layers)

    def summary(self) -> dict:
        return {
            "digest": self.image.digest,
            "layers": [
                {
                    "name": layer.name,
                    "digest": layer.digest,
                    "size": layer.size,
                    "uncompressed_size": layer.uncompressed_size,
                    "entries": layer.entries,
                }
                for layer in self.layers
            ],
            "compressed_bytes": self.compressed_bytes,
            "uncompressed_bytes": sum(layer.uncompressed_size for layer in self.layers),
            "entries": sum(layer.entries for layer in self.layers),
        }


def budgets(total: int, shares: Sequence[float]) -> list[int]:
    """Split `total` bytes by `shares` (normalised) into whole numbers that add up to `total`."""
    if total < 0 or not shares or any(share <= 0 for share in shares):
        raise ValueError("budgets need a non-negative total and positive shares")
    scale = sum(shares)
    result = [int(total * share / scale) for share in shares]
    result[0] += total - sum(result)
    return result


def walk(root: str | Path) -> Iterator[os.DirEntry]:
    """Regular files and symlinks under `root`, depth first in name order; others skipped."""
    try:
        entries = sorted(os.scandir(root), key=lambda entry: entry.name)
    except OSError:
        return
    for entry in entries:
        if entry.is_symlink() or entry.is_file(follow_symlinks=False):
            yield entry
        elif entry.is_dir(follow_symlinks=False):
            yield from walk(entry.path)


class _Digesting:
    """A write-only stream that hashes and counts what passes through to `out`."""

    def __init__(self, out) -> None:
        self.out, self.hash, self.size = out, hashlib.sha256(), 0

    def write(self, data) -> int:
        self.out.write(data)
        self.hash.update(data)
        self.size += len(data)
        return len(data)

    def tell(self) -> int:
        return self.size

    @property
    def digest(self) -> str:
        return "sha256:" + self.hash.hexdigest()


class LayerWriter:
    """One layer: a tar streamed through gzip into `path`, hashed on both sides of gzip."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.file = open(path, "wb")  # noqa: SIM115 (closed in finish)
        self.compressed = _Digesting(self.file)
        self.gzip = gzip.GzipFile(filename="", mode="wb", compresslevel=GZIP_LEVEL,
                                  fileobj=self.compressed, mtime=0)  # fmt: skip
        self.tar_stream = _Digesting(self.gzip)
        self.tar = tarfile.TarFile(fileobj=self.tar_stream, mode="w", format=tarfile.PAX_FORMAT)
        self.dirs: set[str] = set()
        self.links: dict[tuple[int, int], str] = {}
        self.entries = 0

    def add(self, source: str, arcname: str) -> None:
        """Add `source` as `arcname` (its path without the leading "/"), after its directories."""
        self._parents(source, arcname)
        st = os.lstat(source)
        info = _info(arcname, st)
        if stat.S_ISLNK(st.st_mode):
            info.type, info.linkname = tarfile.SYMTYPE, os.readlink(source)
            self.tar.addfile(info)
        elif st.st_nlink > 1 and (st.st_dev, st.st_ino) in self.links:
            info.type, info.linkname = tarfile.LNKTYPE, self.links[(st.st_dev, st.st_ino)]
            self.tar.addfile(info)
        else:
            info.size = st.st_size
            with open(source, "rb") as data:
                self.tar.addfile(info, data)
            if st.st_nlink > 1:
                self.links[(st.st_dev, st.st_ino)] = arcname
        self.entries += 1

    def _parents(self, source: str, arcname: str) -> None:
        parts = arcname.split("/")[:-1]
        host_dirs = Path(source).parents
        for depth in range(len(parts)):
            name = "/".join(parts[: depth + 1])
            if name in self.dirs:
                continue
            host_dir = host_dirs[len(parts) - depth - 1]
            info = _info(name, os.stat(host_dir))
            info.type = tarfile.DIRTYPE
            self.tar.addfile(info)
            self.dirs.add(name)
            self.entries += 1

    def finish(self, name: str) -> BuiltLayer:
        self.tar.close()
        self.gzip.close()
        self.file.close()
        digest = self.compressed.digest
        final = self.path.with_name(digest.split(":")[1])
        os.replace(self.path, final)
        return BuiltLayer(name, final, digest, self.compressed.size, self.tar_stream.digest,
                          self.tar_stream.size, self.entries)  # fmt: skip

    def abort(self) -> None:
        self.file.close()
        self.path.unlink(missing_ok=True)


def _info(arcname: str, st: os.stat_result) -> tarfile.TarInfo:
    info = tarfile.TarInfo(arcname)
    info.mode = stat.S_IMODE(st.st_mode)
    info.uid = info.gid = 0
    info.uname = info.gname = "root"
    info.mtime = MTIME
    return info


def build_layers(
    dest: Path, total_bytes: int, plans: Sequence[LayerPlan], fallback=FALLBACK_SOURCES
) -> list[BuiltLayer]:
    """Write one gzip layer per plan into `dest`; each stops once it reaches its budget, taking
    files from its sources, then from `fallback`."""
    dest.mkdir(parents=True, exist_ok=True)
    seen: set[str] = set()
    layers = []
    sizes = budgets(total_bytes, [plan.share for plan in plans])
    for index, (plan, budget) in enumerate(zip(plans, sizes, strict=True)):
        writer = LayerWriter(dest / f"layer-{index}.partial")
        try:
            for source in (*plan.sources, *fallback):
                if _fill(writer, source, budget, seen):
                    break
            layers.append(writer.finish(plan.name))
        except BaseException:
            writer.abort()
            raise
    return layers


def _fill(writer: LayerWriter, root: str, budget: int, seen: set[str]) -> bool:
    """Add files from `root` until the compressed layer reaches `budget`; True when it has."""
    for entry in walk(root):
        if writer.compressed.size >= budget:
            return True
        real = os.path.realpath(os.path.dirname(entry.path))
        key = os.path.join(real, entry.name)
        if key in seen:
            continue
        try:
            size = entry.stat(follow_symlinks=False).st_size
            if not entry.is_symlink() and size > budget:
                continue  # one file bigger than the layer would overshoot it
            seen.add(key)
            writer.add(key, key.lstrip("/"))
        except OSError:
            continue  # vanished or unreadable: skip it
    return writer.compressed.size >= budget


def build_bench_image(dest: Path, size_mb: float, plans=None) -> BenchImage:
    """The image for `bench pull`, layers on disk under `dest`, about `size_mb` MB compressed."""
    from observe_rt.bench.image import host_platform

    layers = build_layers(dest, int(size_mb * 1_000_000), plans or default_plans())
    platform = host_platform()
    config = config_blob_for(
        platform, [layer.diff_id for layer in layers],
        {"Env": ["PATH=/usr/bin:/bin"], "Cmd": ["/bin/sh"]}, created_by="observe-rt bench pull",
    )  # fmt: skip
    return BenchImage(assemble(config, [layer.descriptor() for layer in layers], platform), layers)


def push_bench_image(built: BenchImage, registry_url: str) -> str:
    """Push the image as bench/app:1, streaming layers from disk; returns the reference."""
    session = PushSession(registry_url, REPOSITORY)
    manifest = built.image.manifest()
    config: Blob = built.image.blobs[manifest["config"]["digest"]]
    session.push_blob(config.data, config.digest)
    for layer in built.layers:
        session.push_blob(layer.path, layer.digest)
    session.put_manifest(built.image.top, TAG)
    host = registry_url.split("://", 1)[-1].rstrip("/")
    return f"{host}/{REPOSITORY}:{TAG}"
