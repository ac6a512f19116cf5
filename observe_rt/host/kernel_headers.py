"""Find (and if needed link) the kernel headers bcc compiles the eBPF programs against.

bcc looks in /lib/modules/<release>/{build,source} (the `source` tree when both exist), then
falls back to /sys/kernel/kheaders.tar.xz. Kernels built elsewhere (Firecracker, cloud images)
ship neither, so `ensure_kernel_headers` points those links at the newest Debian
linux-headers tree, exactly as deploy/setup.sh does. Our programs read only tracepoint
arguments and BPF helpers, which are stable across versions, so near-enough headers work.

Every function takes a root path standing in for / so it can be tested on fixture trees;
symlinks with absolute targets are resolved inside that root. Standard library only.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

KCONFIG = "include/linux/kconfig.h"
KHEADERS = "sys/kernel/kheaders.tar.xz"
TRACEFS = "sys/kernel/tracing"

# uname machine -> Debian architecture suffix of linux-headers-*-<arch> packages.
DEBIAN_ARCH = {
    "x86_64": "amd64",
    "aarch64": "arm64",
    "ppc64le": "ppc64el",
    "s390x": "s390x",
    "riscv64": "riscv64",
    "armv7l": "armmp",
}


@dataclass(frozen=True)
class KernelHeaders:
    """The headers bcc uses (or could use) for one kernel release.

    `path` is the tree holding include/linux/kconfig.h and `build` the arch tree with the
    generated headers (often the same tree), both as seen from the root. `in_use` says bcc
    finds them now; otherwise they are only a candidate that ensure_kernel_headers can link.
    """

    kernel_release: str
    path: str | None
    build: str | None
    headers_release: str | None
    exact: bool
    in_use: bool
    reason: str


@dataclass(frozen=True)
class HeadersSetup:
    """What ensure_kernel_headers found afterwards and the actions it took to get there."""

    headers: KernelHeaders
    actions: tuple[str, ...]


def resolve_in_root(root: Path, path: str) -> Path:
    """Resolve `path` (relative to root) following symlinks, absolute targets taken inside root.

    With root "/" this is os.path.realpath; with a fixture tree, a link to /usr/src/x points
    at <root>/usr/src/x rather than escaping to the real host.
    """
    root = Path(root)
    parts = [p for p in path.split("/") if p]
    current = root
    hops = 0
    while parts:
        part = parts.pop(0)
        if part == "..":
            current = current.parent if current != root else root
            continue
        candidate = current / part
        if candidate.is_symlink() and hops < 40:
            hops += 1
            target = os.readlink(candidate)
            if target.startswith("/"):
                current = root
            parts = [p for p in target.split("/") if p and p != "."] + parts
            continue
        current = candidate
    return current


def outside(root: Path, path: Path) -> str:
    """The path as the host would name it (relative to root, with a leading /)."""
    try:
        relative = Path(path).relative_to(root)
    except ValueError:
        return str(path)
    return "/" if relative == Path(".") else f"/{relative}"


def debian_arch(machine: str) -> str:
    return DEBIAN_ARCH.get(machine, machine)


def find_kernel_headers(
    root: Path, release: str, machine: str, env: Mapping[str, str] | None = None
) -> KernelHeaders:
    """Decide which headers bcc will compile against for kernel `release`, mirroring bcc."""
    root = Path(root)
    env = os.environ if env is None else env
    found = _from_env(root, release, env) or _from_modules_dir(root, release, env)
    if found:
        return found
    if (root / KHEADERS).is_file():
        reason = f"bcc extracts kernel {release}'s own headers from /{KHEADERS}"
        return KernelHeaders(
            release, f"/{KHEADERS}", None, release, exact=True, in_use=True, reason=reason
        )
    return _candidate(root, release, debian_arch(machine))


def _from_env(root: Path, release: str, env: Mapping[str, str]) -> KernelHeaders | None:
    # BCC_KERNEL_SOURCE overrides everything in bcc, so it does here too.
    source = env.get("BCC_KERNEL_SOURCE")
    if not source:
        return None
    tree = resolve_in_root(root, source)
    if not (tree / KCONFIG).is_file():
        return None
    headers_release = _release_of(tree)
    path = outside(root, tree)
    reason = f"BCC_KERNEL_SOURCE={source} (headers {headers_release or 'unknown'})"
    return KernelHeaders(
        release,
        path,
        path,
        headers_release,
        exact=headers_release == release,
        in_use=True,
        reason=reason,
    )


def _from_modules_dir(root: Path, release: str, env: Mapping[str, str]) -> KernelHeaders | None:
    moddir = f"lib/modules/{release}"
    build = resolve_in_root(root, f"{moddir}/build")
    source = resolve_in_root(root, f"{moddir}/source")
    # bcc: the source tree when both exist, else build (or $BCC_KERNEL_MODULES_SUFFIX).
    if build.is_dir() and source.is_dir():
        tree, via = source, "source"
    else:
        via = env.get("BCC_KERNEL_MODULES_SUFFIX", "build")
        tree = resolve_in_root(root, f"{moddir}/{via}")
    if not (tree / KCONFIG).is_file():
        return None
    headers_release = _release_of(build if build.is_dir() else tree)
    exact = headers_release == release
    link = f"/{moddir}/build and source symlinks" if via == "source" else f"/{moddir}/{via} symlink"
    if exact:
        reason = f"kernel {release} headers at {outside(root, tree)}"
    else:
        reason = (
            f"kernel {release} has no headers; bcc uses Debian "
            f"{headers_release or 'unknown'} headers via {link}"
        )
    return KernelHeaders(
        release,
        outside(root, tree),
        outside(root, build),
        headers_release,
        exact=exact,
        in_use=True,
        reason=reason,
    )


def _release_of(tree: Path) -> str | None:
    """The kernel release a headers tree was built for (utsrelease.h, else its Debian name)."""
    uts = tree / "include/generated/utsrelease.h"
    if uts.is_file():
        match = re.search(r'UTS_RELEASE\s+"([^"]+)"', uts.read_text(errors="replace"))
        if match:
            return match.group(1)
    name = tree.name
    if name.startswith("linux-headers-"):
        return name.removeprefix("linux-headers-")
    return None


_DEBIAN_TREE = re.compile(r"^linux-headers-(?P<abi>\d+\.\d+\.\d+-\d+)-(?P<flavour>[\w-]+)$")


def _candidate(root: Path, release: str, arch: str) -> KernelHeaders:
    """The best /usr/src/linux-headers-<abi>-<arch> tree with its matching -common tree."""
    trees = []
    for tree in (root / "usr/src").glob(f"linux-headers-*{arch}"):
        match = _DEBIAN_TREE.match(tree.name)
        common = tree.with_name(f"linux-headers-{match['abi']}-common") if match else None
        if match and tree.is_dir() and common is not None and (common / KCONFIG).is_file():
            headers_release = tree.name.removeprefix("linux-headers-")
            # Exact release first, then newest ABI, then the plain flavour over cloud/rt.
            key = (headers_release == release, _version_key(match["abi"]), match["flavour"] == arch)
            trees.append((key, tree, common, headers_release))
    if not trees:
        reason = (
            f"no headers for kernel {release} in /lib/modules/{release}, "
            f"no /{KHEADERS}, no /usr/src/linux-headers-*-{arch}"
        )
        return KernelHeaders(release, None, None, None, exact=False, in_use=False, reason=reason)
    _, tree, common, headers_release = max(trees, key=lambda t: t[0])
    reason = (
        f"kernel {release} has no headers linked; Debian {headers_release} "
        f"headers in /usr/src can be linked at /lib/modules/{release}/build"
    )
    return KernelHeaders(
        release,
        outside(root, common),
        outside(root, tree),
        headers_release,
        exact=headers_release == release,
        in_use=False,
        reason=reason,
    )


def _version_key(abi: str) -> tuple[int, ...]:
    return tuple(int(n) for n in re.findall(r"\d+", abi))


def ensure_kernel_headers(
    root: Path = Path("/"),
    release: str | None = None,
    machine: str | None = None,
    env: Mapping[str, str] | None = None,
) -> HeadersSetup:
    """Link /lib/modules/<release>/{build,source} to substitute headers when bcc has none.

    Returns the headers found afterwards and the actions taken (none when bcc already had
    headers or no substitute exists; `headers.reason` then explains why probes stay off).
    """
    root = Path(root)
    release = release or os.uname().release
    machine = machine or os.uname().machine
    headers = find_kernel_headers(root, release, machine, env)
    if headers.in_use or headers.path is None or headers.build is None:
        return HeadersSetup(headers, ())
    moddir = root / "lib/modules" / release
    moddir.mkdir(parents=True, exist_ok=True)
    actions = []
    for name, target in (("build", headers.build), ("source", headers.path)):
        actions.append(_replace_link(root, moddir / name, target))
    return HeadersSetup(find_kernel_headers(root, release, machine, env), tuple(actions))


def _replace_link(root: Path, link: Path, target: str) -> str:
    # Never delete a real directory: it may be someone's kernel build tree.
    if link.exists() and not link.is_symlink():
        return f"left {outside(root, link)} alone: it is not a symlink"
    if link.is_symlink():
        link.unlink()
    link.symlink_to(target)
    return f"linked {outside(root, link)} -> {target}"


def ensure_tracefs(root: Path = Path("/")) -> str | None:
    """Mount tracefs at /sys/kernel/tracing when its events/ directory is missing.

    Returns what was done (None when tracefs was already there); raises OSError naming the
    mount when the kernel refuses, so the caller can say why probes are off.
    """
    from observe_rt.host import libc  # ctypes libc: only needed when a mount is due

    target = Path(root) / TRACEFS
    if (target / "events").is_dir():
        return None
    libc.mount("tracefs", str(target), "tracefs", libc.MS_NOSUID | libc.MS_NODEV | libc.MS_NOEXEC)
    return f"mounted tracefs at {target}"


BPFFS = Path("/sys/fs/bpf")


def ensure_bpffs(pin_dir: Path, mount_point: Path = BPFFS) -> str | None:
    """Mount bpffs at /sys/fs/bpf when it is not there (systemd does it on most hosts), and
    make `pin_dir` on it. Returns what was mounted (None when nothing was); raises OSError."""
    from observe_rt.host import libc

    done = None
    with open("/proc/self/mounts") as mounts:
        mounted = any(f[1] == str(mount_point) and f[2] == "bpf" for f in map(str.split, mounts))
    if not mounted:
        mount_point.mkdir(parents=True, exist_ok=True)
        libc.mount("bpf", str(mount_point), "bpf", libc.MS_NOSUID | libc.MS_NODEV | libc.MS_NOEXEC)
        done = f"mounted bpffs at {mount_point}"
    Path(pin_dir).mkdir(mode=0o700, parents=True, exist_ok=True)
    return done
