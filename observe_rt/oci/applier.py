"""Write the entries of one layer's tar stream into a snapshot directory (unpack.py streams it).

OCI whiteouts become overlayfs ones, since the snapshot is used as an overlay lower dir:
`.wh.<name>` becomes a 0:0 character device <name>, and `.wh..wh..opq` sets
trusted.overlay.opaque=y on its directory. A whiteout hides lower layers only, so an entry this
layer writes itself under the same name wins (image-spec layer.md).

Hostile layers write nothing outside the snapshot:
- names are checked lexically first: absolute names, `..`, bare `.wh.` and `.wh.` in a
  directory name are refused;
- every parent directory is opened with openat2(RESOLVE_IN_ROOT | RESOLVE_NO_SYMLINKS) from a
  descriptor of the snapshot, so a symlink the layer made earlier is never walked through;
- the last component is created and changed with *at calls that never follow it; a mode is
  set on an O_PATH descriptor checked not to be a symlink (the CVE-2021-32760 class);
- a hardlink target is resolved the same way, so it must be inside this layer.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import shutil
import stat
import tarfile
from collections.abc import Iterator, Sequence
from pathlib import Path

from observe_rt.errors import ObserveRtError
from observe_rt.host import libc

log = logging.getLogger(__name__)

_COPY_CHUNK = 1 << 20
_WHITEOUT = ".wh."
_OPAQUE = ".wh..wh..opq"
_XATTR_PAX = "SCHILY.xattr."
# Directories only: a trailing symlink must never be resolved either, and none on the way.
_RESOLVE = libc.RESOLVE_IN_ROOT | libc.RESOLVE_NO_SYMLINKS | libc.RESOLVE_NO_MAGICLINKS
_IGNORED_XATTR_ERRNOS = {errno.EPERM, errno.EACCES, errno.ENOTSUP, errno.EOPNOTSUPP}


class LayerError(ObserveRtError):
    """A layer could not be applied; the message names the layer digest and the entry."""


class UnsafeLayer(LayerError):
    grpc_code = "INVALID_ARGUMENT"


class LayerLimitExceeded(UnsafeLayer):
    pass


class Applier:
    """Creates entries under one snapshot root, through descriptors only."""

    def __init__(
        self,
        dest: Path,
        layer: str,
        max_entries: int,
        max_path: int,
        parent_dirs: Sequence[str | Path],
        same_owner: bool | None,
    ) -> None:
        self.layer = layer
        self.max_entries = max_entries
        self.max_path = max_path
        self.same_owner = os.geteuid() == 0 if same_owner is None else same_owner
        self.root = os.open(dest, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
        self.lowers = [os.open(p, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC) for p in parent_dirs]
        self.entries = self.bytes = self.inodes = 0
        self.last_entry = "(none)"
        self._entry = ""
        self._dir_times: list[tuple[list[str], float]] = []
        self._cached: tuple[str, int] | None = None  # the last parent directory opened

    def __enter__(self) -> Applier:
        return self

    def __exit__(self, *exc: object) -> None:
        self._forget_cached("")
        for fd in (self.root, *self.lowers):
            os.close(fd)

    def _fail(self, message: str, cls: type[LayerError] = UnsafeLayer) -> LayerError:
        return cls(f"layer {self.layer}: entry {self._entry!r}: {message}")

    def apply(self, member: tarfile.TarInfo, tar: tarfile.TarFile) -> None:
        self._entry = member.name
        self.entries += 1
        if self.entries > self.max_entries:
            raise self._fail(
                f"more than {self.max_entries} entries (limit max_entries)",
                LayerLimitExceeded,
            )
        parts = self._clean(member.name)
        try:
            aufs_metadata = parts and parts[0].startswith(".wh..wh.") and parts != [_OPAQUE]
            if parts and not aufs_metadata:  # the layer root itself is left as it is
                self._apply(parts, member, tar)
        except OSError as err:
            raise self._fail(str(err), LayerError) from err
        self.last_entry = member.name

    def _clean(self, name: str) -> list[str]:
        """The entry's path components, or an error for names that could leave the root."""
        if len(os.fsencode(name)) > self.max_path:
            raise self._fail(
                f"name longer than {self.max_path} bytes (limit max_path)",
                LayerLimitExceeded,
            )
        if name.startswith("/"):
            raise self._fail("absolute name refused")
        parts = _components(name)
        if ".." in parts:
            raise self._fail("'..' in the name refused")
        if any(len(os.fsencode(p)) > 255 for p in parts):
            raise self._fail("a name component is longer than 255 bytes")
        return parts

    def _apply(self, parts: list[str], member: tarfile.TarInfo, tar: tarfile.TarFile) -> None:
        if any(p.startswith(_WHITEOUT) for p in parts[:-1]):
            raise self._fail("whiteout prefix '.wh.' in a directory name refused")
        base = parts[-1]
        if base == _OPAQUE:
            self._opaque(parts[:-1])
        elif base.startswith(_WHITEOUT):
            self._whiteout(parts[:-1], base[len(_WHITEOUT) :])
        elif member.isdir():
            self._directory(parts, member)
        elif member.isreg():
            self._regular(parts, member, tar)
        elif member.issym():
            self._symlink(parts, member)
        elif member.islnk():
            self._hardlink(parts, member)
        elif member.ischr() or member.isblk() or member.isfifo():
            self._node(parts, member)
        else:
            raise self._fail(f"unsupported tar entry type {member.type!r}")

    # -- directories on the way -------------------------------------------------------------

    def _parent(self, dirs: list[str]) -> int:
        """A descriptor of the directory `dirs` under the root, created if missing."""
        if not dirs:
            return self.root
        key = "/".join(dirs)
        if self._cached and self._cached[0] == key:
            return self._cached[1]
        try:
            fd = self._open_dir(self.root, key)
        except FileNotFoundError:
            fd = self._make_dirs(dirs)
        self._forget_cached("")
        self._cached = (key, fd)
        return fd

    def _open_dir(self, at: int, path: str) -> int:
        try:
            return libc.openat2(at, path, os.O_PATH | os.O_DIRECTORY, _RESOLVE)
        except OSError as err:
            if err.errno == errno.ELOOP:
                raise self._fail(f"parent {path!r} goes through a symlink; not followed") from None
            if err.errno == errno.ENOTDIR:
                raise self._fail(f"parent {path!r} is not a directory", LayerError) from None
            raise

    def _make_dirs(self, dirs: list[str]) -> int:
        fd = self.root
        try:
            for depth, name in enumerate(dirs, start=1):
                try:
                    nxt = self._open_dir(fd, name)
                except FileNotFoundError:
                    self._implicit_dir(fd, name, dirs[:depth])
                    nxt = self._open_dir(fd, name)
                if fd != self.root:
                    os.close(fd)
                fd = nxt
        except BaseException:
            if fd != self.root:
                os.close(fd)
            raise
        return fd

    def _implicit_dir(self, parent: int, name: str, rel: list[str]) -> None:
        mode, uid, gid = self._lower_dir_attrs("/".join(rel)) or (0o755, 0, 0)
        os.mkdir(name, 0o700, dir_fd=parent)
        self.inodes += 1
        flags = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW
        with _closing(os.open(name, flags, dir_fd=parent)) as fd:
            if self.same_owner:
                os.fchown(fd, uid, gid)
            os.fchmod(fd, mode)

    def _lower_dir_attrs(self, rel: str) -> tuple[int, int, int] | None:
        """Mode and owner of `rel` in the nearest lower snapshot that has it as a directory."""
        for lower in self.lowers:
            try:
                fd = libc.openat2(lower, rel, os.O_PATH | os.O_NOFOLLOW, _RESOLVE)
            except OSError as err:
                if err.errno == errno.ENOENT:
                    continue
                return None  # a symlink or file on the way: the lower dir is replaced
            with _closing(fd):
                st = os.fstat(fd)
            if not stat.S_ISDIR(st.st_mode):
                return None  # whited out or replaced
            return stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid
        return None

    def _forget_cached(self, removed: str) -> None:
        if self._cached and (not removed or f"{self._cached[0]}/".startswith(f"{removed}/")):
            os.close(self._cached[1])
            self._cached = None

    # -- the entry itself -------------------------------------------------------------------

    def _replace(self, parent: int, parts: list[str], keep_dir: bool) -> os.stat_result | None:
        """Clear the way for an entry (a directory stays when keep_dir); returns what was there."""
        try:
            st = os.stat(parts[-1], dir_fd=parent, follow_symlinks=False)
        except FileNotFoundError:
            return None
        if keep_dir and stat.S_ISDIR(st.st_mode):
            return st
        if stat.S_ISDIR(st.st_mode):
            self._forget_cached("/".join(parts))
            shutil.rmtree(parts[-1], dir_fd=parent)
        else:
            os.unlink(parts[-1], dir_fd=parent)
        return st

    def _cleared_parent(self, parts: list[str]) -> int:
        """The parent of a new non-directory entry, with whatever stood under its name removed."""
        parent = self._parent(parts[:-1])
        self._replace(parent, parts, keep_dir=False)
        return parent

    def _directory(self, parts: list[str], member: tarfile.TarInfo) -> None:
        parent = self._parent(parts[:-1])
        old = self._replace(parent, parts, keep_dir=True)
        if old is None or not stat.S_ISDIR(old.st_mode):
            os.mkdir(parts[-1], 0o700, dir_fd=parent)
            self.inodes += 1
        flags = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
        with _closing(os.open(parts[-1], flags, dir_fd=parent)) as fd:
            if old is not None and _is_whiteout(old):
                self._set_opaque(fd)  # lower layers' directory deleted, this one made anew
            self._set_fd_attrs(fd, member, times=False)  # times after its children are written
        self._dir_times.append((parts, member.mtime))

    def _regular(self, parts: list[str], member: tarfile.TarInfo, tar: tarfile.TarFile) -> None:
        parent = self._cleared_parent(parts)
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
        with _closing(os.open(parts[-1], flags, 0o600, dir_fd=parent)) as fd:
            self.inodes += 1
            source = tar.extractfile(member)
            while chunk := source.read(_COPY_CHUNK):  # type: ignore[union-attr]
                view = memoryview(chunk)
                while view:
                    view = view[os.write(fd, view) :]
            self.bytes += member.size
            self._set_fd_attrs(fd, member, times=True)

    def _symlink(self, parts: list[str], member: tarfile.TarInfo) -> None:
        if not member.linkname:
            raise self._fail("symlink with an empty target")
        parent = self._cleared_parent(parts)
        os.symlink(member.linkname, parts[-1], dir_fd=parent)  # never followed by us
        self.inodes += 1
        self._set_path_attrs(parent, parts[-1], member)

    def _hardlink(self, parts: list[str], member: tarfile.TarInfo) -> None:
        if member.linkname.startswith("/"):
            raise self._fail(f"hardlink to absolute path {member.linkname!r} refused")
        target = _components(member.linkname)
        if not target or ".." in target:
            raise self._fail(f"hardlink to {member.linkname!r} leaves the layer; refused")
        if target == parts:
            return
        try:
            target_parent = self._open_dir(self.root, "/".join(target[:-1]) or ".")
            with _closing(target_parent):
                parent = self._cleared_parent(parts)
                # The new name shares the target's inode, owner and mode: nothing to set on it.
                os.link(
                    target[-1], parts[-1], src_dir_fd=target_parent, dst_dir_fd=parent,
                    follow_symlinks=False,
                )  # fmt: skip
        except FileNotFoundError:
            raise self._fail(f"hardlink target {member.linkname!r} is not in this layer") from None

    def _node(self, parts: list[str], member: tarfile.TarInfo) -> None:
        parent = self._cleared_parent(parts)
        if member.isfifo():
            kind, device = stat.S_IFIFO, 0
        else:
            kind = stat.S_IFCHR if member.ischr() else stat.S_IFBLK
            device = os.makedev(member.devmajor, member.devminor)
        try:
            os.mknod(parts[-1], kind | 0o600, device, dir_fd=parent)
        except PermissionError:
            if os.geteuid() == 0:
                raise
            log.warning("layer %s: device %s skipped: not root", self.layer, member.name)
            return
        self.inodes += 1
        self._set_path_attrs(parent, parts[-1], member)

    def _whiteout(self, dirs: list[str], name: str) -> None:
        """A whiteout hides lower layers only: an entry this layer wrote under the name stays,
        and a directory stays opaque so nothing of the lower one shows through."""
        if name in ("", ".", ".."):
            raise self._fail("whiteout without a name ('.wh.' bare) refused")
        parent = self._parent(dirs)
        try:
            st = os.stat(name, dir_fd=parent, follow_symlinks=False)
        except FileNotFoundError:
            os.mknod(name, stat.S_IFCHR, os.makedev(0, 0), dir_fd=parent)
            self.inodes += 1
            return
        if stat.S_ISDIR(st.st_mode):
            with _closing(self._open_dir(parent, name)) as fd:
                self._set_opaque(fd)

    def _opaque(self, dirs: list[str]) -> None:
        self._set_opaque(self._parent(dirs))

    def _set_opaque(self, dir_fd: int) -> None:
        try:
            os.setxattr(f"/proc/self/fd/{dir_fd}", "trusted.overlay.opaque", b"y")
        except PermissionError:
            raise self._fail(
                "opaque directory needs CAP_SYS_ADMIN (trusted.overlay.opaque)", LayerError
            ) from None

    # -- ownership, xattrs, modes, times ----------------------------------------------------

    def _set_fd_attrs(self, fd: int, member: tarfile.TarInfo, times: bool) -> None:
        if self.same_owner:
            os.fchown(fd, member.uid, member.gid)
        self._set_xattrs(fd, member)
        os.fchmod(fd, member.mode & 0o7777)  # after chown, which clears setuid and setgid
        if times:
            os.utime(fd, ns=_times(member.mtime))

    def _set_path_attrs(self, parent: int, name: str, member: tarfile.TarInfo) -> None:
        """For entries that cannot be opened for writing: symlinks, devices, fifos."""
        if self.same_owner:
            os.chown(name, member.uid, member.gid, dir_fd=parent, follow_symlinks=False)
        # /proc/self/fd/<dir>/<name> with lsetxattr: the last component is never followed.
        self._set_xattrs(f"/proc/self/fd/{parent}/{name}", member)
        if not member.issym():
            flags = os.O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC
            with _closing(os.open(name, flags, dir_fd=parent)) as fd:
                if not stat.S_ISLNK(os.fstat(fd).st_mode):
                    os.chmod(f"/proc/self/fd/{fd}", member.mode & 0o7777)
        os.utime(name, ns=_times(member.mtime), dir_fd=parent, follow_symlinks=False)

    def _set_xattrs(self, target: int | str, member: tarfile.TarInfo) -> None:
        for key, value in member.pax_headers.items():
            if not key.startswith(_XATTR_PAX):
                continue
            name = key[len(_XATTR_PAX) :]
            if name.startswith("trusted.overlay."):
                log.warning("layer %s: %s: xattr %s ignored", self.layer, member.name, name)
                continue  # only whiteout markers may steer overlayfs
            raw = value.encode("utf-8", "surrogateescape")
            try:
                if isinstance(target, int):
                    os.setxattr(target, name, raw)
                else:
                    os.setxattr(target, name, raw, follow_symlinks=False)
            except OSError as err:
                if err.errno not in _IGNORED_XATTR_ERRNOS:
                    raise
                log.warning("layer %s: %s: xattr %s: %s", self.layer, member.name, name, err)

    def set_directory_times(self) -> None:
        """Directory mtimes last: creating children changed them."""
        for parts, mtime in self._dir_times:
            self._entry = "/".join(parts)
            try:
                fd = self._open_dir(self.root, self._entry)
            except (FileNotFoundError, LayerError):
                continue  # replaced by a later entry of the layer
            with _closing(fd):
                try:
                    os.utime(f"/proc/self/fd/{fd}", ns=_times(mtime))
                except OSError as err:
                    raise self._fail(str(err), LayerError) from err


@contextlib.contextmanager
def _closing(fd: int) -> Iterator[int]:
    """Closes the descriptor `fd` when the block ends, however it ends."""
    try:
        yield fd
    finally:
        os.close(fd)


def _components(name: str) -> list[str]:
    """The path components of a tar name, without empty and "." ones."""
    return [p for p in name.split("/") if p not in ("", ".")]


def _is_whiteout(st: os.stat_result) -> bool:
    return stat.S_ISCHR(st.st_mode) and st.st_rdev == 0


def _times(mtime: float) -> tuple[int, int]:
    ns = min(max(int(mtime * 1_000_000_000), 0), 2**62)
    return ns, ns
