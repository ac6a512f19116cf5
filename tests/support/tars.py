"""Layer tars built in memory: normal layers with every entry type, whiteouts and opaque dirs,
and hostile ones (escapes, symlink tricks, bombs). Compressors and diff_ids to go with them."""

from __future__ import annotations

import gzip
import hashlib
import io
import os
import tarfile
import zlib

import zstandard

MTIME = 1_600_000_000  # 2020-09-13, any fixed time the tests can compare against


class TarBuilder:
    """Appends entries to an in-memory PAX tar; bytes() closes it."""

    def __init__(self) -> None:
        self._buf = io.BytesIO()
        self._tar = tarfile.TarFile(fileobj=self._buf, mode="w", format=tarfile.PAX_FORMAT)

    def add(
        self, name: str, kind: bytes, data: bytes = b"", xattrs: dict[str, bytes] | None = None,
        **fields: object,
    ) -> TarBuilder:  # fmt: skip
        info = tarfile.TarInfo(name)
        info.type = kind
        info.mtime = MTIME
        info.mode = 0o644
        for key, value in fields.items():
            setattr(info, key, value)
        info.size = len(data) if kind in (tarfile.REGTYPE, tarfile.AREGTYPE) else 0
        for key, value in (xattrs or {}).items():
            info.pax_headers[f"SCHILY.xattr.{key}"] = value.decode("utf-8", "surrogateescape")
        self._tar.addfile(info, io.BytesIO(data) if info.size else None)
        return self

    def dir(self, name: str, mode: int = 0o755, **kw: object) -> TarBuilder:
        return self.add(name, tarfile.DIRTYPE, mode=mode, **kw)

    def file(self, name: str, data: bytes = b"", mode: int = 0o644, **kw: object) -> TarBuilder:
        return self.add(name, tarfile.REGTYPE, data, mode=mode, **kw)

    def symlink(self, name: str, target: str, **kw: object) -> TarBuilder:
        return self.add(name, tarfile.SYMTYPE, linkname=target, mode=0o777, **kw)

    def hardlink(self, name: str, target: str, **kw: object) -> TarBuilder:
        return self.add(name, tarfile.LNKTYPE, linkname=target, **kw)

    def char(self, name: str, major: int, minor: int, mode: int = 0o666) -> TarBuilder:
        return self.add(name, tarfile.CHRTYPE, devmajor=major, devminor=minor, mode=mode)

    def block(self, name: str, major: int, minor: int, mode: int = 0o660) -> TarBuilder:
        return self.add(name, tarfile.BLKTYPE, devmajor=major, devminor=minor, mode=mode)

    def fifo(self, name: str, mode: int = 0o600) -> TarBuilder:
        return self.add(name, tarfile.FIFOTYPE, mode=mode)

    def whiteout(self, path: str) -> TarBuilder:
        parent, _, base = path.rpartition("/")
        return self.file(f"{parent}/.wh.{base}" if parent else f".wh.{base}")

    def opaque(self, directory: str) -> TarBuilder:
        return self.file(f"{directory}/.wh..wh..opq")

    def bytes(self) -> bytes:
        self._tar.close()
        return self._buf.getvalue()


def gz(data: bytes) -> bytes:
    return gzip.compress(data, mtime=0)


def zst(data: bytes) -> bytes:
    return zstandard.ZstdCompressor().compress(data)


def sha256(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


# -- normal layers ----------------------------------------------------------------------------

HELLO = b"hello from the base layer\n"


def normal_layer() -> bytes:
    """Every entry type, owners, special mode bits and xattrs."""
    return (
        TarBuilder()
        .dir("etc")
        .file("etc/hello", HELLO, mode=0o644)
        .file("etc/shadow", b"secret\n", mode=0o640, uid=0, gid=42)
        .symlink("etc/link", "hello")
        .symlink("etc/abs-link", "/etc/hello")
        .dir("tmp", mode=0o1777)
        .dir("home/user", mode=0o750, uid=1000, gid=1000)
        .file("home/user/notes", b"notes\n", mode=0o600, uid=1000, gid=1000)
        .dir("bin")
        .file("bin/suid", b"#!/bin/true\n", mode=0o4755)
        .file("bin/sgid", b"#!/bin/true\n", mode=0o2755, gid=50)
        .hardlink("bin/suid-link", "bin/suid")
        .file("bin/xattr", b"x", xattrs={"user.observe": b"yes", "security.capability": CAPS})
        .dir("dev")
        .char("dev/null", 1, 3)
        .block("dev/loop0", 7, 0)
        .fifo("run-fifo", mode=0o620)
        .file("./dotslash", b"dot\n")
        .bytes()
    )  # fmt: skip


# A VFS_CAP_REVISION_2 security.capability value granting cap_net_raw (13), permitted+effective.
CAPS = bytes.fromhex("0100000200200000000000000000000000000000")


def base_layer() -> bytes:
    """Lowest layer of the overlay test: what the upper layers delete, hide and keep."""
    return (
        TarBuilder()
        .dir("etc")
        .file("etc/keep", b"keep\n")
        .file("etc/delete-me", b"gone\n")
        .dir("opaque")
        .file("opaque/old-a", b"old\n")
        .dir("opaque/sub")
        .file("opaque/sub/old-b", b"old\n")
        .dir("gone-dir")
        .file("gone-dir/inner", b"inner\n")
        .dir("tmp", mode=0o1777)
        .dir("srv", mode=0o750, uid=1000, gid=1000)
        .file("srv/tool", b"tool\n", mode=0o4755)
        .hardlink("srv/tool-link", "srv/tool")
        .dir("remade")
        .file("remade/old", b"old\n")
        .bytes()
    )  # fmt: skip


def middle_layer() -> bytes:
    """Deletes a file and a directory, makes one directory opaque; relies on implicit parents."""
    return (
        TarBuilder()
        .whiteout("etc/delete-me")
        .whiteout("gone-dir")
        .opaque("opaque")
        .file("opaque/new", b"new\n")
        .file("tmp/from-middle", b"middle\n")  # no "tmp" entry: the dir keeps mode 1777
        .bytes()
    )  # fmt: skip


def top_layer() -> bytes:
    """Recreates a deleted name, changes a file's owner and mode, deletes and remakes a dir."""
    return (
        TarBuilder()
        .whiteout("remade")
        .dir("remade", mode=0o700)
        .file("remade/fresh", b"fresh\n")
        .dir("etc")
        .file("etc/delete-me", b"back again\n", mode=0o600, uid=7, gid=8)
        .file("srv/added", b"added\n", mode=0o2750, uid=1000, gid=1000)
        .bytes()
    )  # fmt: skip


# -- hostile layers ---------------------------------------------------------------------------


def dotdot_escape() -> bytes:
    return TarBuilder().file("../escape", b"x").bytes()


def dotdot_inside_name() -> bytes:
    return TarBuilder().dir("a").file("a/../../escape", b"x").bytes()


def absolute_name(path: str) -> bytes:
    return TarBuilder().file(path, b"x").bytes()


def write_through_symlink(outside_dir: str) -> bytes:
    """`link -> outside_dir`, then `link/file`: the second must not land in outside_dir."""
    return TarBuilder().symlink("link", outside_dir).file("link/file", b"pwned\n").bytes()


def whiteout_through_symlink(outside_dir: str) -> bytes:
    """A whiteout under a symlinked dir would mknod over the target's files."""
    return TarBuilder().symlink("link", outside_dir).whiteout("link/victim").bytes()


def opaque_through_symlink(outside_dir: str) -> bytes:
    return TarBuilder().symlink("link", outside_dir).opaque("link").bytes()


def write_through_relative_symlink() -> bytes:
    return TarBuilder().symlink("up", "../../..").file("up/escape", b"pwned\n").bytes()


def hardlink_absolute(target: str = "/etc/passwd") -> bytes:
    return TarBuilder().hardlink("pw", target).bytes()


def hardlink_dotdot() -> bytes:
    return TarBuilder().hardlink("x", "../x").bytes()


def hardlink_through_symlink(outside_dir: str, name: str) -> bytes:
    return TarBuilder().symlink("lnk", outside_dir).hardlink("x", f"lnk/{name}").bytes()


def chmod_through_symlink(victim: str) -> bytes:
    """The CVE-2021-32760 shape: a hardlink to a symlink, with a mode that must not reach the
    symlink's target; then a directory and a file entry over the symlink's name."""
    return (
        TarBuilder()
        .symlink("link", victim)
        .hardlink("hl", "link", mode=0o6777)
        .symlink("link2", victim)
        .dir("link2", mode=0o777)
        .symlink("link3", victim)
        .file("link3", b"replaced\n", mode=0o4777)
        .bytes()
    )  # fmt: skip


def bare_whiteout() -> bytes:
    return TarBuilder().file(".wh.").bytes()


def whiteout_dot() -> bytes:
    return TarBuilder().dir("d").file("d/.wh..").bytes()


def whiteout_in_dirname() -> bytes:
    return TarBuilder().dir(".wh.dir").file(".wh.dir/file", b"x").bytes()


def many_entries(count: int) -> bytes:
    builder = TarBuilder()
    for i in range(count):
        builder.file(f"f{i}")
    return builder.bytes()


def long_name(length: int = 5000) -> bytes:
    return TarBuilder().file("d/" * (length // 2) + "f", b"x").bytes()


def huge_pax_header(size: int = 2 << 20) -> bytes:
    builder = TarBuilder()
    info = tarfile.TarInfo("f")
    info.pax_headers["comment"] = "x" * size
    builder._tar.addfile(info)
    return builder.bytes()


def zeros_bomb_gz(size: int) -> bytes:
    """A gzip'ed tar holding one file of `size` zero bytes: compresses about 1000:1, built
    without ever holding the whole tar in memory."""
    info = tarfile.TarInfo("zeros")
    info.size = size
    info.mtime = MTIME
    out = io.BytesIO()
    z = zlib.compressobj(9, zlib.DEFLATED, 31)
    out.write(z.compress(info.tobuf(tarfile.PAX_FORMAT)))
    chunk = bytes(1 << 20)
    left = size + (-size % 512) + 1024  # content, padding, end-of-archive blocks
    while left:
        n = min(left, len(chunk))
        out.write(z.compress(chunk[:n]))
        left -= n
    out.write(z.flush())
    return out.getvalue()


def tree(root: str) -> dict[str, tuple[int, int, int, int]]:
    """{relative path: (mode, uid, gid, size)} of everything under root, symlinks not followed."""
    found = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            path = os.path.join(dirpath, name)
            st = os.lstat(path)
            found[os.path.relpath(path, root)] = (st.st_mode, st.st_uid, st.st_gid, st.st_size)
    return found
