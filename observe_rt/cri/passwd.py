"""Reading a container image's rootfs without ever leaving it: users, groups, symlinks.

CreateContainer resolves `run_as_username`, the image's `User` and the user's groups through the
image's own /etc/passwd and /etc/group. The image is untrusted, so:

- both files are opened with openat2(RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS) from a descriptor
  of the rootfs: an `/etc/passwd -> /etc/shadow` or `../../host` symlink resolves inside the
  rootfs, never on the host (the CVE-2021-30465 / 2022-23648 class);
- O_NONBLOCK on open and a regular-file check, so a FIFO planted as /etc/passwd cannot hang the
  daemon; files larger than MAX_FILE_BYTES are refused;
- malformed lines are skipped, as libc and runc's user package do.

resolve_in_rootfs() tells which container path a mount target really names once the image's
symlinks are followed (an image may ship `/data -> /proc`), so sensitive targets are refused
before the executor mounts anything.

User strings follow the OCI image spec: `user`, `uid`, `user:group`, `uid:gid`, `uid:group`,
`user:gid`. A uid missing from /etc/passwd is fine (gid 0, as containerd); a missing name is not.
"""

from __future__ import annotations

import errno
import os
import stat
from dataclasses import dataclass

from observe_rt.cri.v1 import api_pb2
from observe_rt.host import libc

MAX_FILE_BYTES = 4 * 1024 * 1024
MAX_ID = 2**32 - 2  # (uid_t)-1 means "no change" to the kernel
_IN_ROOT = libc.RESOLVE_IN_ROOT | libc.RESOLVE_NO_MAGICLINKS
SC = "linux.security_context"


class ImageFileError(ValueError):
    """/etc/passwd or /etc/group exists but is not something we will read."""


@dataclass(frozen=True)
class PasswdEntry:
    name: str
    uid: int
    gid: int
    home: str


@dataclass(frozen=True)
class GroupEntry:
    name: str
    gid: int
    members: tuple[str, ...]


@dataclass(frozen=True)
class ResolvedUser:
    """The identity a container process starts with; `name` is None for an unknown uid."""

    uid: int
    gid: int
    home: str
    name: str | None


def read_rootfs_file(rootfs: str, path: str) -> str | None:
    """Text of `path` (absolute inside the container), or None when it does not exist."""
    root = os.open(rootfs, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        fd = libc.openat2(root, path.lstrip("/"), os.O_RDONLY | os.O_NONBLOCK, _IN_ROOT)
    except OSError as err:
        if err.errno in (errno.ENOENT, errno.ENOTDIR):
            return None
        raise
    finally:
        os.close(root)
    with os.fdopen(fd, "rb") as f:
        st = os.fstat(f.fileno())
        if not stat.S_ISREG(st.st_mode):
            raise ImageFileError(f"{path} is not a regular file")
        data = f.read(MAX_FILE_BYTES + 1)
    if len(data) > MAX_FILE_BYTES:
        raise ImageFileError(f"{path} is larger than {MAX_FILE_BYTES} bytes")
    return data.decode("utf-8", errors="replace")


def resolve_in_rootfs(rootfs: str, path: str, max_links: int = 40) -> str:
    """`path` with the image's symlinks followed as RESOLVE_IN_ROOT would (absolute targets and
    '..' stay inside the rootfs); from the first missing component on, the rest is kept as is."""
    root = os.open(rootfs, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        pending, done, links = [p for p in path.split("/") if p], [], 0
        while pending:
            part = pending.pop(0)
            if part in (".", ".."):
                done = done[:-1] if part == ".." else done
                continue
            target = _readlink_at(root, "/".join(done), part)
            if target is None:  # missing, or not a directory on the way
                return "/" + "/".join([*done, part, *pending])
            if target == "":
                done.append(part)
                continue
            links += 1
            if links > max_links:
                raise ValueError(f"{path}: too many symlinks in the image")
            done = [] if target.startswith("/") else done
            pending = [p for p in target.split("/") if p] + pending
        return "/" + "/".join(done)
    finally:
        os.close(root)


def _readlink_at(root: int, parent: str, name: str) -> str | None:
    """Symlink target of parent/name ("" when not a symlink, None when missing)."""
    try:
        fd = libc.openat2(root, parent or ".", os.O_PATH | os.O_DIRECTORY,
                          _IN_ROOT | libc.RESOLVE_NO_SYMLINKS)  # fmt: skip
    except (FileNotFoundError, NotADirectoryError):
        return None
    try:
        return os.readlink(name, dir_fd=fd)
    except (FileNotFoundError, NotADirectoryError):
        return None
    except OSError as err:
        if err.errno == errno.EINVAL:
            return ""
        raise
    finally:
        os.close(fd)


def parse_id(text: str) -> int | None:
    """A decimal uid/gid, or None when `text` is not purely ASCII digits."""
    if not text.isascii() or not text.isdigit():
        return None
    return int(text)


def parse_passwd(text: str) -> list[PasswdEntry]:
    entries = []
    for line in text.splitlines():
        fields = line.split(":")
        if len(fields) < 7 or not fields[0] or line.startswith(("#", "+", "-")):
            continue
        uid, gid = parse_id(fields[2]), parse_id(fields[3])
        if uid is None or gid is None:
            continue
        entries.append(PasswdEntry(fields[0], uid, gid, fields[5]))
    return entries


def parse_group(text: str) -> list[GroupEntry]:
    entries = []
    for line in text.splitlines():
        fields = line.split(":")
        if len(fields) < 4 or not fields[0] or line.startswith(("#", "+", "-")):
            continue
        gid = parse_id(fields[2])
        if gid is None:
            continue
        members = tuple(m.strip() for m in fields[3].split(",") if m.strip())
        entries.append(GroupEntry(fields[0], gid, members))
    return entries


class ImageUsers:
    """/etc/passwd and /etc/group of one rootfs, read at most once each, on first use."""

    def __init__(self, rootfs: str) -> None:
        self.rootfs = rootfs
        self._passwd: list[PasswdEntry] | None = None
        self._groups: list[GroupEntry] | None = None

    @property
    def passwd(self) -> list[PasswdEntry]:
        if self._passwd is None:
            self._passwd = parse_passwd(read_rootfs_file(self.rootfs, "/etc/passwd") or "")
        return self._passwd

    @property
    def groups(self) -> list[GroupEntry]:
        if self._groups is None:
            self._groups = parse_group(read_rootfs_file(self.rootfs, "/etc/group") or "")
        return self._groups

    def user_by_name(self, name: str) -> PasswdEntry | None:
        return next((e for e in self.passwd if e.name == name), None)

    def user_by_uid(self, uid: int) -> PasswdEntry | None:
        return next((e for e in self.passwd if e.uid == uid), None)

    def gid_of_group(self, name: str) -> int | None:
        return next((g.gid for g in self.groups if g.name == name), None)

    def member_gids(self, username: str | None) -> list[int]:
        """Gids of the groups that list `username` as a member (its supplemental groups)."""
        if not username:
            return []
        return [g.gid for g in self.groups if username in g.members]


def check_id(value: int, where: str) -> int:
    if not 0 <= value <= MAX_ID:
        raise ValueError(f"{where}: must be between 0 and {MAX_ID}, got {value}")
    return value


def resolve_user(users: ImageUsers, userstr: str, where: str) -> ResolvedUser:
    """Resolve an OCI user string against the image; ValueError names `where` on failure."""
    user, sep, group = userstr.partition(":")
    if not user or (sep and not group) or ":" in group:
        raise ValueError(f"{where}: invalid user {userstr!r} (want user, uid, user:group, uid:gid)")
    uid = parse_id(user)
    if uid is None:
        entry = users.user_by_name(user)
        if entry is None:
            raise ValueError(f"{where}: no user {user!r} in the image's /etc/passwd")
    else:
        entry = users.user_by_uid(check_id(uid, where))
    resolved = ResolvedUser(
        uid=entry.uid if entry else uid,  # type: ignore[arg-type]
        gid=entry.gid if entry else 0,
        home=entry.home if entry and entry.home else "/",
        name=entry.name if entry else None,
    )
    if not group:
        return resolved
    gid = parse_id(group)
    if gid is None:
        gid = users.gid_of_group(group)
        if gid is None:
            raise ValueError(f"{where}: no group {group!r} in the image's /etc/group")
    return ResolvedUser(resolved.uid, check_id(gid, where), resolved.home, resolved.name)


# --- the CRI security context -> OCI process.user ----------------------------------------------


def _user_string(sc: api_pb2.LinuxContainerSecurityContext, image: dict) -> tuple[str, str]:
    """(OCI user string, field it came from), as containerd's GenerateUserString."""
    if sc.run_as_username:
        user, where = sc.run_as_username, f"{SC}.run_as_username"
    elif sc.HasField("run_as_user"):
        user, where = str(check_id(sc.run_as_user.value, f"{SC}.run_as_user")), f"{SC}.run_as_user"
    else:
        if sc.HasField("run_as_group"):
            raise ValueError(f"{SC}.run_as_group: set without run_as_user or run_as_username")
        image_user = image.get("User") or "0"
        if not isinstance(image_user, str):
            raise ValueError(f"image config User: must be a string, got {image_user!r}")
        return image_user, "image config User"
    if ":" in user:
        raise ValueError(f"{where}: must not contain ':', got {user!r}")
    if sc.HasField("run_as_group"):
        user += f":{check_id(sc.run_as_group.value, f'{SC}.run_as_group')}"
    return user, where


def process_user(sc: api_pb2.LinuxContainerSecurityContext, image: dict, rootfs: str):
    """(OCI `process.user`, home directory) resolved through the image's passwd and group."""
    userstr, where = _user_string(sc, image)
    users = ImageUsers(rootfs)
    try:
        resolved = resolve_user(users, userstr, where)
        gids = {resolved.gid}
        if sc.supplemental_groups_policy == api_pb2.Merge:
            gids.update(users.member_gids(resolved.name))
    except (OSError, ImageFileError) as err:
        raise ValueError(f"{where}: cannot read the image's users: {err}") from None
    for i, gid in enumerate(sc.supplemental_groups):
        gids.add(check_id(gid, f"{SC}.supplemental_groups[{i}]"))
    user = {"uid": resolved.uid, "gid": resolved.gid, "additionalGids": sorted(gids)}
    return user, resolved.home
