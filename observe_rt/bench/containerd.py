"""A private containerd daemon for `bench pull`: own root, state, socket and minimal config.

    daemon = Containerd.start(paths, base)      # waits until `ctr version` answers
    ... ctr --address <base>/containerd.sock images pull --plain-http REF ...
    daemon.peak_rss_kib()                       # VmHWM: the daemon's peak RSS since it started
    daemon.stop()                               # SIGTERM (then SIGKILL), unmount, nothing left

The CRI plugin is disabled (a pull needs none of it); the snapshotter is the default overlayfs.
Everything containerd writes stays under `base`: its root (content, snapshots, tmpmounts),
its state, the opt plugin's directory and the sockets. A fresh daemon per pull makes VmHWM the
high-water mark of that pull alone (plus the daemon's own start-up, as for any real node).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from observe_rt.host import libc

# Root's PATH usually has these, but `sudo` or a service may not.
_EXTRA_PATH = ("/usr/local/bin", "/usr/bin", "/usr/local/sbin", "/usr/sbin")
READY_TIMEOUT = 30.0
STOP_TIMEOUT = 10.0


@dataclass(frozen=True)
class ContainerdPaths:
    containerd: str
    ctr: str
    version: str


def find_containerd() -> ContainerdPaths | str:
    """containerd and ctr, or why they are unavailable."""
    found = {}
    for name in ("containerd", "ctr"):
        path = shutil.which(name) or shutil.which(name, path=os.pathsep.join(_EXTRA_PATH))
        if path is None:
            return f"{name} not found on PATH"
        found[name] = path
    try:
        out = subprocess.run([found["containerd"], "--version"], capture_output=True, text=True,
                             timeout=10)  # fmt: skip
    except (OSError, subprocess.TimeoutExpired) as err:
        return f"containerd --version failed: {err}"
    if out.returncode != 0:
        return f"containerd --version failed: {out.stderr.strip() or out.returncode}"
    return ContainerdPaths(found["containerd"], found["ctr"], _short_version(out.stdout))


def _short_version(text: str) -> str:
    """`containerd github.com/containerd/containerd 1.6.20~ds1 REV` -> `containerd 1.6.20~ds1`."""
    words = text.split()
    return f"containerd {words[2]}" if len(words) >= 3 else text.strip() or "unknown"


def config_toml(base: Path) -> str:
    """A minimal containerd config keeping every path under `base` (version 2 format)."""
    return f"""version = 2
root = "{base / "root"}"
state = "{base / "state"}"
disabled_plugins = ["io.containerd.grpc.v1.cri"]

[grpc]
  address = "{base / "containerd.sock"}"

[ttrpc]
  address = "{base / "containerd.sock.ttrpc"}"

[debug]
  address = ""

[metrics]
  address = ""

[plugins."io.containerd.internal.v1.opt"]
  path = "{base / "opt"}"
"""


def parse_vm_hwm(status: str) -> int:
    """VmHWM (peak resident set size, KiB) from a /proc/PID/status text."""
    for line in status.splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    raise ValueError("no VmHWM line in the process status")


def unescape_mount_path(field: str) -> str:
    """mountinfo escapes space, tab, newline and backslash as octal (\\040 ...)."""
    out, i = [], 0
    while i < len(field):
        if field[i] == "\\" and field[i + 1 : i + 4].isdigit():
            out.append(chr(int(field[i + 1 : i + 4], 8)))
            i += 4
        else:
            out.append(field[i])
            i += 1
    return "".join(out)


def mounts_under(mountinfo: str, prefix: str | Path) -> list[str]:
    """Mount points at or below `prefix` in a mountinfo text, deepest (and latest) first."""
    prefix = str(prefix).rstrip("/")
    found = []
    for line in mountinfo.splitlines():
        fields = line.split()
        if len(fields) < 5:
            continue
        point = unescape_mount_path(fields[4])
        if point == prefix or point.startswith(prefix + "/"):
            found.append(point)
    return [point for _, point in sorted(enumerate(found), key=lambda p: (-p[1].count("/"), -p[0]))]


def unmount_under(prefix: str | Path) -> list[str]:
    """Detach every mount at or below `prefix`; returns what was unmounted."""
    with open("/proc/self/mountinfo") as f:
        points = mounts_under(f.read(), prefix)
    done = []
    for point in points:
        with contextlib.suppress(OSError):
            libc.umount2(point, libc.MNT_DETACH)
            done.append(point)
    return done


class Containerd:
    def __init__(self, paths: ContainerdPaths, base: Path, process: subprocess.Popen) -> None:
        self.paths, self.base, self.process = paths, base, process

    @property
    def address(self) -> str:
        return str(self.base / "containerd.sock")

    @property
    def log(self) -> Path:
        return self.base / "containerd.log"

    def ctr(self, *args: str) -> list[str]:
        return [self.paths.ctr, "--address", self.address, *args]

    @classmethod
    def start(cls, paths: ContainerdPaths, base: Path, env=None) -> Containerd:
        base.mkdir(parents=True)
        (base / "config.toml").write_text(config_toml(base))
        with open(base / "containerd.log", "wb") as log:
            # Its own session: a Ctrl-C reaches us, and we stop it in order (unmount, remove).
            process = subprocess.Popen(
                [paths.containerd, "--config", str(base / "config.toml")],
                stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, env=env,
                start_new_session=True,
            )  # fmt: skip
        daemon = cls(paths, base, process)
        try:
            daemon._wait_ready(env)
        except BaseException:
            daemon.stop()
            raise
        return daemon

    def _wait_ready(self, env) -> None:
        deadline = time.monotonic() + READY_TIMEOUT
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"containerd exited at start: {self._log_tail()}")
            if os.path.exists(self.address):
                probe = subprocess.run(self.ctr("version"), capture_output=True, env=env,
                                       timeout=READY_TIMEOUT)  # fmt: skip
                if probe.returncode == 0:
                    return
            time.sleep(0.02)
        raise RuntimeError(f"containerd not ready after {READY_TIMEOUT:.0f}s: {self._log_tail()}")

    def _log_tail(self) -> str:
        try:
            lines = self.log.read_text(errors="replace").strip().splitlines()
        except OSError:
            return "no log"
        return lines[-1] if lines else "empty log"

    def peak_rss_kib(self) -> int:
        with open(f"/proc/{self.process.pid}/status") as f:
            return parse_vm_hwm(f.read())

    def stop(self) -> None:
        """Stop the daemon and its session, then unmount what it left under its base."""
        if self.process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()
        unmount_under(self.base)
