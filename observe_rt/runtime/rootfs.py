"""Build the container's root filesystem inside its new mount namespace, then pivot into it.

Runs in the container init helper (stdlib only). Every path inside the rootfs is resolved with
openat2(RESOLVE_IN_ROOT) from a descriptor of the rootfs and the mount is made on the opened
descriptor through /proc/self/fd, so a symlink planted in the image, or swapped in while we work,
can never point a mount at the host (the CVE-2021-30465 class). Masking binds the host's
/dev/null after checking it is the 1:3 character device (the CVE-2025-31133 class).
"""

from __future__ import annotations

import contextlib
import errno
import os
import stat

from observe_rt.host import libc
from observe_rt.host.mountinfo import unescape

_IN_ROOT = libc.RESOLVE_IN_ROOT | libc.RESOLVE_NO_MAGICLINKS
# (name, major, minor) of the devices every container gets, as runc and containerd create them.
DEFAULT_DEVICES = (
    ("null", 1, 3), ("zero", 1, 5), ("full", 1, 7),
    ("random", 1, 8), ("urandom", 1, 9), ("tty", 5, 0),
)  # fmt: skip
DEFAULT_SYMLINKS = (
    ("/proc/self/fd", "fd"), ("/proc/self/fd/0", "stdin"), ("/proc/self/fd/1", "stdout"),
    ("/proc/self/fd/2", "stderr"), ("pts/ptmx", "ptmx"), ("/proc/kcore", "core"),
)  # fmt: skip


def fd_path(fd: int) -> str:
    return f"/proc/self/fd/{fd}"


class Rootfs:
    """The rootfs directory, reached only through a descriptor opened before any mount."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.fd = os.open(path, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)

    def open(self, path: str, flags: int = os.O_PATH, resolve: int = _IN_ROOT) -> int:
        """Open `path` (absolute inside the container) without leaving the rootfs."""
        return libc.openat2(self.fd, path.lstrip("/") or ".", flags, resolve)

    def makedirs(self, path: str, _links: int = 0) -> int:
        """mkdir -p inside the rootfs; returns an O_PATH descriptor of the directory.

        A dangling symlink on the way is followed the way RESOLVE_IN_ROOT would (its target
        taken relative to the rootfs), and the missing directories are made there.
        """
        if _links > 40:
            raise OSError(errno.ELOOP, f"too many symlinks creating {path}")
        current, walked = os.dup(self.fd), "/"
        try:
            for part in [p for p in path.split("/") if p]:
                try:
                    nxt = libc.openat2(current, part, os.O_PATH | os.O_DIRECTORY, _IN_ROOT)
                except FileNotFoundError:
                    nxt = self._make_missing(current, walked, part, _links)
                os.close(current)
                current, walked = nxt, os.path.join(walked, part)
            return current
        except BaseException:
            os.close(current)
            raise

    def _make_missing(self, parent: int, walked: str, name: str, links: int) -> int:
        try:
            target = os.readlink(name, dir_fd=parent)
        except FileNotFoundError:
            os.mkdir(name, 0o755, dir_fd=parent)
            return libc.openat2(parent, name, os.O_PATH | os.O_DIRECTORY, _IN_ROOT)
        # normpath clamps leading '..' at '/', as resolution inside the rootfs does.
        return self.makedirs(os.path.normpath(os.path.join(walked, target)), links + 1)

    def make_target(self, path: str, is_dir: bool) -> int:
        """Create a mount target (directory or empty file) and return an O_PATH descriptor."""
        if is_dir:
            return self.makedirs(path)
        parent, name = os.path.split(path)
        parent_fd = self.makedirs(parent)
        try:
            with contextlib.suppress(FileExistsError):
                os.close(
                    os.open(name, os.O_CREAT | os.O_WRONLY | os.O_NOFOLLOW, 0o644, dir_fd=parent_fd)
                )
            return libc.openat2(parent_fd, name, os.O_PATH, _IN_ROOT)
        finally:
            os.close(parent_fd)


# --- spec mounts -------------------------------------------------------------------------------


def prepare(rootfs: str, propagation: int) -> Rootfs:
    """Set the tree's propagation, and make the rootfs a mount point for pivot_root.

    By default every mount becomes a slave: host mounts still arrive, ours never leak out. A
    bidirectional volume needs the tree shared instead (rootfsPropagation rshared), or its
    bind would be a slave that cannot send events back to the host, as runc does.
    """
    libc.mount(None, "/", None, propagation or libc.MS_SLAVE | libc.MS_REC)
    _make_parent_private(rootfs)
    libc.mount(rootfs, rootfs, None, libc.MS_BIND | libc.MS_REC)
    libc.mount(None, rootfs, None, libc.MS_PRIVATE)
    return Rootfs(rootfs)


# Filesystems that take an SELinux context= option (the rest keep their own labels).
_LABELLED_TYPES = {"tmpfs", "devpts", "mqueue"}


def mount_all(
    root: Rootfs, mounts: list[dict], cgroup_hierarchies: list[dict], mount_label: str = ""
) -> None:
    for m in mounts:
        if m["type"] == "cgroup" and not m["bind"]:
            mount_cgroup(root, m, cgroup_hierarchies)
        elif mount_label and m["type"] in _LABELLED_TYPES and not m["bind"]:
            mount_one(root, dict(m, data=_with_label(m["data"], mount_label)))
        else:
            mount_one(root, m)


# Kernel filesystems whose masked and readonly files guard the host (/proc/sys, /sys/firmware).
_KERNEL_FS = ("proc", "sysfs")


def mount_one(root: Rootfs, m: dict) -> None:
    if m["type"] in _KERNEL_FS and not m["bind"]:
        _check_plain_directory(root, m["destination"], m["type"])
    is_dir = not m["bind"] or os.path.isdir(m["source"])
    target = root.make_target(m["destination"], is_dir)
    try:
        target_path = fd_path(target)
        flags = m["flags"]
        if m["bind"]:
            libc.mount(m["source"], target_path, None, flags & (libc.MS_BIND | libc.MS_REC))
            # Bind mounts ignore most flags; they take effect on a remount of the new mount.
            if flags & ~(libc.MS_BIND | libc.MS_REC):
                _remount(root, m["destination"], flags | libc.MS_BIND)
        else:
            libc.mount(m["source"] or m["type"], target_path, m["type"], flags, m["data"] or None)
        for propagation in m["propagation"]:
            _on(root, m["destination"], lambda p, prop=propagation: libc.mount(None, p, None, prop))
    finally:
        os.close(target)


def _check_plain_directory(root: Rootfs, destination: str, fs_type: str) -> None:
    """proc and sysfs go on ordinary directories only, as runc requires: an image that makes
    /proc a symlink would get proc mounted elsewhere and /proc/sys left writable."""
    try:
        os.close(
            root.open(destination, os.O_PATH | os.O_DIRECTORY, _IN_ROOT | libc.RESOLVE_NO_SYMLINKS)
        )
    except FileNotFoundError:
        return  # created as a directory by make_target
    except OSError as err:
        if err.errno not in (errno.ELOOP, errno.ENOTDIR):
            raise
        raise OSError(
            err.errno,
            f"mounting {fs_type} on {destination}: the rootfs has a symlink or a file "
            "there; proc and sysfs are mounted on ordinary directories only",
        ) from None


def _with_label(data: str, label: str) -> str:
    if not label:
        return data
    return ",".join(filter(None, [data, f'context="{label}"']))


def _on(root: Rootfs, path: str, action) -> None:
    """Run action(path) on a fresh descriptor of `path`, so it reaches the mount now on top."""
    fd = root.open(path)
    try:
        action(fd_path(fd))
    finally:
        os.close(fd)


def _remount(root: Rootfs, path: str, flags: int) -> None:
    """Remount `path` with `flags`, keeping the flags the kernel locks (nosuid, nodev, noexec)."""

    def remount(p: str) -> None:
        locked = _statvfs_flags(p)
        libc.mount(None, p, None, libc.MS_REMOUNT | flags | locked)

    _on(root, path, remount)


def _statvfs_flags(path: str) -> int:
    st = os.statvfs(path)
    mapping = ((os.ST_NOSUID, libc.MS_NOSUID), (os.ST_NODEV, libc.MS_NODEV),
               (os.ST_NOEXEC, libc.MS_NOEXEC))  # fmt: skip
    return sum(ms for st_flag, ms in mapping if st.f_flag & st_flag)


def mount_cgroup(root: Rootfs, m: dict, hierarchies: list[dict]) -> None:
    """Mount the container's view of cgroupfs (its cgroup namespace decides what it sees).

    On pure v2 that is one cgroup2 mount. On v1 and hybrid hosts it is a tmpfs holding one
    mount per v1 hierarchy, as runc builds it (runc leaves hybrid hosts' 'unified' out, and so
    do we). Unlike runc 1.1 the tmpfs itself is read-only too when the mount asks for "ro".
    """
    flags = m["flags"]
    if len(hierarchies) == 1 and hierarchies[0]["type"] == "cgroup2":
        target = root.make_target(m["destination"], True)
        try:
            libc.mount("cgroup2", fd_path(target), "cgroup2", flags)
        finally:
            os.close(target)
        return
    tmpfs = dict(m, type="tmpfs", source="tmpfs", data="mode=755", bind=False, propagation=[],
                 flags=flags & ~libc.MS_RDONLY)  # fmt: skip
    mount_one(root, tmpfs)
    for h in (h for h in hierarchies if h["type"] == "cgroup"):
        sub = dict(m, destination=f"{m['destination']}/{h['name']}", type=h["type"],
                   source="cgroup", data=h["options"], bind=False, propagation=[])  # fmt: skip
        mount_one(root, sub)
    if flags & libc.MS_RDONLY:
        _remount(root, m["destination"], flags)


# --- /dev ------------------------------------------------------------------------------------


def populate_dev(root: Rootfs, devices: list[dict], bind_from_host: bool) -> None:
    """Create the default device nodes, the spec's devices and the usual /dev symlinks.

    In a new user namespace mknod is not allowed, so the host's nodes are bind-mounted instead.
    """
    wanted = [{"path": f"/dev/{name}", "type": "c", "major": major, "minor": minor}
              for name, major, minor in DEFAULT_DEVICES]  # fmt: skip
    wanted += devices
    for device in wanted:
        _make_device(root, device, bind_from_host)
    dev = root.makedirs("/dev")
    try:
        for target, name in DEFAULT_SYMLINKS:
            if target == "/proc/kcore" and not os.path.exists(target):
                continue  # as runc: no dangling /dev/core on kernels without kcore
            with contextlib.suppress(FileExistsError):
                os.symlink(target, name, dir_fd=dev)
    finally:
        os.close(dev)


def _make_device(root: Rootfs, device: dict, bind_from_host: bool) -> None:
    path = device["path"]
    if bind_from_host:
        target = root.make_target(path, is_dir=False)
        try:
            libc.mount(path, fd_path(target), None, libc.MS_BIND)
        finally:
            os.close(target)
        return
    kind = {"c": stat.S_IFCHR, "u": stat.S_IFCHR, "b": stat.S_IFBLK, "p": stat.S_IFIFO}
    mode = kind[device.get("type", "c")] | (device.get("fileMode") or 0o666)
    parent, name = os.path.split(path)
    parent_fd = root.makedirs(parent)
    try:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(name, dir_fd=parent_fd)
        os.mknod(
            name, mode, os.makedev(device.get("major", 0), device.get("minor", 0)), dir_fd=parent_fd
        )
        os.chmod(name, mode & 0o7777, dir_fd=parent_fd)  # mknod is subject to the umask
        os.chown(name, device.get("uid") or 0, device.get("gid") or 0, dir_fd=parent_fd)
    finally:
        os.close(parent_fd)


# --- masking, read-only paths, pivot -----------------------------------------------------------


def _open_existing(root: Rootfs, path: str, follow: bool = True) -> int | None:
    """Descriptor of `path`, or None when it is absent. Symlinks on the way are followed inside
    the rootfs (as runc masks after pivot_root), so a masked or readonly path an image links
    elsewhere is masked where the container sees it; without `follow`, a symlink means None."""
    resolve = _IN_ROOT if follow else libc.RESOLVE_IN_ROOT | libc.RESOLVE_NO_SYMLINKS
    try:
        return root.open(path, os.O_PATH, resolve)
    except OSError as err:
        if err.errno in (errno.ENOENT, errno.ELOOP, errno.ENOTDIR):
            return None
        raise


def _dev_null(root: Rootfs) -> int:
    """The container's /dev/null (as runc masks with), or the host's when it has none.

    Either way it is opened without following symlinks and checked to be the 1:3 character
    device, so an image cannot swap it for a link to a host file (CVE-2025-31133 class).
    """
    fd = _open_existing(root, "/dev/null", follow=False)
    if fd is None:
        fd = os.open("/dev/null", os.O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC)
    st = os.fstat(fd)
    if not stat.S_ISCHR(st.st_mode) or st.st_rdev != os.makedev(1, 3):
        os.close(fd)
        raise OSError(errno.EINVAL, "/dev/null is not the 1:3 character device")
    return fd


def mask_paths(root: Rootfs, paths: list[str]) -> None:
    null = _dev_null(root)
    try:
        for path in paths:
            fd = _open_existing(root, path)
            if fd is None:
                continue
            try:
                if stat.S_ISDIR(os.fstat(fd).st_mode):
                    libc.mount("tmpfs", fd_path(fd), "tmpfs", libc.MS_RDONLY, "size=0")
                else:
                    libc.mount(fd_path(null), fd_path(fd), None, libc.MS_BIND)
            finally:
                os.close(fd)
    finally:
        os.close(null)


def readonly_paths(root: Rootfs, paths: list[str]) -> None:
    for path in paths:
        fd = _open_existing(root, path)
        if fd is None:
            continue
        try:
            libc.mount(fd_path(fd), fd_path(fd), None, libc.MS_BIND | libc.MS_REC)
        finally:
            os.close(fd)
        _remount(root, path, libc.MS_BIND | libc.MS_RDONLY)


def _make_parent_private(rootfs: str) -> None:
    """pivot_root refuses a new root whose parent mount is shared: make that one mount private."""
    path = os.path.realpath(rootfs)
    with open("/proc/self/mountinfo") as mountinfo:
        points = [unescape(line.split()[4]) for line in mountinfo]
    parent = max((p for p in points if path == p or path.startswith(p.rstrip("/") + "/")), key=len)
    libc.mount(None, parent, None, libc.MS_PRIVATE)


def pivot(root: Rootfs, propagation: int, readonly: bool) -> None:
    """pivot_root into the rootfs and detach the host's tree from this mount namespace."""
    old_root = os.open("/", os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fchdir(root.fd)
        libc.pivot_root(".", ".")
        # The old root now sits on top of the new one. Step into it (a path "." would name the
        # new root's mount, below), make it a slave so its unmount cannot reach the host even
        # when the tree is shared (a bidirectional volume), then detach it, as runc does.
        os.fchdir(old_root)
        libc.mount(None, ".", None, libc.MS_SLAVE | libc.MS_REC)
        libc.umount2(".", libc.MNT_DETACH)
    finally:
        os.close(old_root)
    os.chdir("/")
    os.close(root.fd)
    if propagation:
        libc.mount(None, "/", None, propagation)
    if readonly:
        flags = libc.MS_BIND | libc.MS_REMOUNT | libc.MS_RDONLY | _statvfs_flags("/")
        libc.mount(None, "/", None, flags)
