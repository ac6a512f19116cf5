"""Named network namespaces: nsfs bind mounts on files that CNI plugins can open.

A pod's network namespace is owned by its shim process; `bind_netns` pins it on a file under
the runtime dir (default /run/observe-rt/netns/<name>) so it outlives any one process and has
a path to hand to CNI plugins as CNI_NETNS. `create_netns` makes a fresh, empty namespace.

Why threads and not fork: the daemon is multi-threaded and never forks. Network namespace
membership is per thread, so a throwaway thread can unshare(CLONE_NEWNET) or setns() into a
namespace, do its work and exit; the daemon's other threads never change namespace. This is
the same trick containerd plays with a locked OS thread, minus restoring the thread (CPython
never reuses an OS thread once its Python thread has finished).

The directory is made a shared mount point (as iproute2 does for /run/netns), so unmounting a
namespace here also unmounts the copies that mount namespaces created meanwhile hold, instead
of those copies keeping the namespace alive.
"""

from __future__ import annotations

import errno
import fcntl
import os
import socket
import struct
import threading
from collections.abc import Callable
from typing import TypeVar

from observe_rt.errors import AlreadyExists, InvalidArgument
from observe_rt.host import libc

DEFAULT_NETNS_DIR = "/run/observe-rt/netns"

_SIOCGIFFLAGS = 0x8913
_SIOCSIFFLAGS = 0x8914
_IFF_UP = 0x1
_dir_lock = threading.Lock()
_T = TypeVar("_T")


def netns_path(name: str, netns_dir: str = DEFAULT_NETNS_DIR) -> str:
    """The file that pins namespace `name`; `name` must be a plain file name."""
    if not name or name in (".", "..") or "/" in name or "\0" in name:
        raise InvalidArgument(f"network namespace name {name!r} is not a plain file name")
    return os.path.join(netns_dir, name)


def create_netns(path: str) -> str:
    """Create a new, empty network namespace pinned on `path` (which must not exist yet)."""
    _make_target(path)

    def unshare_and_pin() -> None:
        libc.unshare(libc.CLONE_NEWNET)
        # /proc/self would name the thread-group leader, still in the daemon's namespace.
        own = f"/proc/self/task/{threading.get_native_id()}/ns/net"
        libc.mount(own, path, None, libc.MS_BIND)

    try:
        _in_thread(unshare_and_pin)
    except BaseException:
        remove_netns(path)
        raise
    return path


def bind_netns(pid: int, path: str) -> str:
    """Pin the network namespace of process `pid` (alive: the caller owns it) on `path`."""
    _make_target(path)
    try:
        libc.mount(f"/proc/{pid}/ns/net", path, None, libc.MS_BIND)
    except BaseException:
        remove_netns(path)
        raise
    return path


def remove_netns(path: str) -> None:
    """Unmount and delete `path`; quiet when it is already gone or not mounted."""
    for _ in range(8):  # a path can carry stacked mounts; each umount peels one
        try:
            libc.umount2(path, libc.MNT_DETACH)
        except OSError as err:
            if err.errno in (errno.EINVAL, errno.ENOENT):
                break
            raise
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass


def is_netns(path: str) -> bool:
    """True when `path` is a pinned namespace (an nsfs file, not an empty placeholder)."""
    try:
        return os.stat(path).st_dev == os.stat("/proc/self/ns/net").st_dev
    except OSError:
        return False


def run_in_netns(path: str, fn: Callable[[], _T]) -> _T:
    """Run `fn` in a throwaway thread that has joined the namespace pinned on `path`."""
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:

        def join_and_run() -> _T:
            libc.setns(fd, libc.CLONE_NEWNET)
            return fn()

        return _in_thread(join_and_run)
    finally:
        os.close(fd)


def bring_up_loopback(path: str) -> None:
    """Set `lo` up inside the namespace on `path` (for configs without the loopback plugin)."""

    def set_up() -> None:
        # A socket belongs to the namespace of the thread that made it.
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            request = struct.pack("16sH14x", b"lo", 0)
            flags = struct.unpack("16sH14x", fcntl.ioctl(sock, _SIOCGIFFLAGS, request))[1]
            fcntl.ioctl(sock, _SIOCSIFFLAGS, struct.pack("16sH14x", b"lo", flags | _IFF_UP))

    run_in_netns(path, set_up)


def _make_target(path: str) -> None:
    """Create the empty file a namespace is mounted on, in a shared-mount directory."""
    _ensure_shared_dir(os.path.dirname(path) or ".")
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o444)
    except FileExistsError:
        raise AlreadyExists(f"network namespace file {path} already exists") from None
    os.close(fd)


def _ensure_shared_dir(directory: str) -> None:
    with _dir_lock:
        os.makedirs(directory, mode=0o755, exist_ok=True)
        try:
            libc.mount(None, directory, None, libc.MS_SHARED | libc.MS_REC)
        except OSError as err:
            if err.errno != errno.EINVAL:  # EINVAL: not a mount point yet
                raise
            libc.mount(directory, directory, None, libc.MS_BIND | libc.MS_REC)
            libc.mount(None, directory, None, libc.MS_SHARED | libc.MS_REC)


def _in_thread(fn: Callable[[], _T]) -> _T:
    """Run `fn` on a fresh OS thread that ends with it, and return or raise its outcome."""
    outcome: dict[str, object] = {}

    def body() -> None:
        try:
            outcome["value"] = fn()
        except BaseException as err:  # handed to the caller below
            outcome["error"] = err

    thread = threading.Thread(target=body, name="observe-rt-netns", daemon=True)
    thread.start()
    thread.join()
    if "error" in outcome:
        raise outcome["error"]  # type: ignore[misc]
    return outcome["value"]  # type: ignore[return-value]
