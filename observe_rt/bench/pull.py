"""`bench pull`: cold pull + unpack of one image from a loopback registry, observe-rt vs containerd.

One session (use as a context manager: clean-up always runs):

    tmp/registry-*/       docker-registry on 127.0.0.1:PORT, holding bench/app:1
    tmp/image/            the image's layers, built from host files (removed once pushed)
    tmp/hosts.d/          an empty hosts.toml dir: observe-rt uses no host configuration
    tmp/pull-N/           one pull's store: observe-rt's --root, or a containerd daemon's base

Each pull is cold and measured from outside, in a fresh child process:
  observe-rt  `observe-rt images --root tmp/pull-N ... pull REF`; wall time of the child and
              its peak RSS (ru_maxrss from wait4: the whole pull runs in that process).
  containerd  a fresh daemon per pull (not timed), then `ctr images pull --plain-http REF`,
              which fetches through ctr and unpacks in the daemon; wall time of ctr, peak RSS
              of the daemon (VmHWM) and of ctr (ru_maxrss).
After each pull the store is removed (a daemon is stopped and its mounts undone first) and the
disks are synced, untimed, so no pull pays for another's writeback. Pullers alternate, the order
flipping every iteration; the registry's blobs are in the page cache for all of them alike.
"""

from __future__ import annotations

import contextlib
import os
import select
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from observe_rt import __version__
from observe_rt.bench.common import Session, clean_env, round_robin, signals_ignored
from observe_rt.bench.containerd import Containerd, ContainerdPaths, find_containerd, unmount_under
from observe_rt.bench.pull_image import build_bench_image, push_bench_image
from observe_rt.bench.registry import RunningRegistry, start_registry
from observe_rt.bench.runtimes import last_line, observe_rt_argv

PULLERS = ("observe-rt", "containerd")
PULL_TIMEOUT = 900.0


class PullError(Exception):
    """One pull failed; the message says which command and why."""


@dataclass(frozen=True)
class PullSample:
    wall_s: float
    peak_rss_kib: int  # observe-rt: the pull process; containerd: the daemon (VmHWM)
    client_rss_kib: int | None = None  # containerd only: ctr's own peak


@dataclass
class PullerRun:
    name: str
    version: str = ""
    command: list[str] = field(default_factory=list)
    samples: list[PullSample] = field(default_factory=list)
    reason: str | None = None

    @property
    def active(self) -> bool:
        return self.reason is None


def timed_run(argv: list[str], log: Path, env=None, timeout: float = PULL_TIMEOUT):
    """Run `argv` to completion: (wall seconds, peak RSS KiB of the child and what it reaped)."""
    with open(log, "wb") as out:
        start = time.perf_counter()
        process = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=out,
                                   stderr=subprocess.STDOUT, env=env)  # fmt: skip
    try:
        fd = os.pidfd_open(process.pid)
        try:
            ready, _, _ = select.select([fd], [], [], timeout)
        finally:
            os.close(fd)
        if not ready:
            process.kill()
        _, status, usage = os.wait4(process.pid, 0)
        wall = time.perf_counter() - start
    except BaseException:
        with contextlib.suppress(OSError):
            process.kill()
        process.wait()
        raise
    process.returncode = os.waitstatus_to_exitcode(status)  # reaped here, not by Popen
    if not ready:
        raise PullError(f"{Path(argv[0]).name} timed out after {timeout:.0f}s")
    if process.returncode != 0:
        why = last_line(log.read_text(errors="replace")) or f"exit {process.returncode}"
        raise PullError(f"{Path(argv[0]).name} failed: {why}")
    return wall, usage.ru_maxrss


def observe_rt_pull(root: Path | str, hosts_dir: Path | str, reference: str) -> list[str]:
    """The observe-rt pull command: a private store, no hosts.toml, no trust policy file."""
    return [*observe_rt_argv(), "images", "--root", str(root), "--hosts-dir", str(hosts_dir),
            "--policy", "", "pull", reference]  # fmt: skip


class PullBench(Session):
    def __init__(self, size_mb: float, pullers: tuple[str, ...] = PULLERS) -> None:
        self.tmp = Path(tempfile.mkdtemp(prefix="observe-rt-bench-pull-"))
        self.env = clean_env()
        self.registry: RunningRegistry | None = None
        self.daemon: Containerd | None = None
        self.containerd: ContainerdPaths | None = None
        self.runs = [PullerRun(name) for name in pullers]
        try:
            self.registry = start_registry(self.tmp, access_log=False)
            built = build_bench_image(self.tmp / "image", size_mb)
            self.reference = push_bench_image(built, self.registry.url)
            self.image = built.summary()
            shutil.rmtree(self.tmp / "image")  # the registry has its own copy
            (self.tmp / "hosts.d").mkdir()
            for run in self.runs:
                self._prepare(run)
        except BaseException:
            self.close()
            raise

    def _prepare(self, run: PullerRun) -> None:
        if run.name == "observe-rt":
            run.version = f"observe-rt {__version__}"
            run.command = observe_rt_pull("<fresh dir>", "<empty dir>", self.reference)
        elif run.name == "containerd":
            found = find_containerd()
            if isinstance(found, str):
                run.reason = found
                return
            self.containerd = found
            run.version = found.version
            run.command = [found.ctr, "--address", "<fresh daemon>", "images", "pull",
                           "--plain-http", self.reference]  # fmt: skip
        else:
            run.reason = f"unknown puller {run.name!r} (known: {', '.join(PULLERS)})"

    def measure(self, runs: int, warmup: int, progress: Callable[[], None] | None = None):
        """Warm up, then measure, alternating pullers; a puller that fails is dropped."""
        return round_robin(self.runs, runs, warmup, self._one, progress)

    def _one(self, run: PullerRun, iteration: int, label: str) -> PullSample | None:
        base = self.tmp / f"pull-{iteration}-{run.name}"
        os.sync()  # the previous pull's writeback is not this pull's cost
        try:
            if run.name == "observe-rt":
                return self._observe_rt(base)
            return self._containerd(base)
        except (PullError, RuntimeError, OSError) as err:
            run.reason = f"{label}: {err}"
            return None
        finally:
            self._discard(base)

    def _observe_rt(self, root: Path) -> PullSample:
        argv = observe_rt_pull(root, self.tmp / "hosts.d", self.reference)
        wall, rss = timed_run(argv, self.tmp / "observe-rt.log", self.env)
        return PullSample(wall, rss)

    def _containerd(self, base: Path) -> PullSample:
        assert self.containerd is not None
        self.daemon = Containerd.start(self.containerd, base, self.env)
        argv = self.daemon.ctr("images", "pull", "--plain-http", self.reference)
        wall, client_rss = timed_run(argv, self.tmp / "ctr.log", self.env)
        return PullSample(wall, self.daemon.peak_rss_kib(), client_rss)

    def _discard(self, base: Path) -> None:
        if self.daemon is not None:
            self.daemon.stop()
            self.daemon = None
        unmount_under(base)
        shutil.rmtree(base, ignore_errors=True)

    def close(self) -> None:
        """Stop containerd and the registry, undo mounts, remove the temp dir; a second Ctrl-C or
        SIGTERM can't cut it short."""
        with signals_ignored(signal.SIGINT, signal.SIGTERM):
            if self.daemon is not None:
                self.daemon.stop()
                self.daemon = None
            if self.registry is not None:
                self.registry.stop()
            unmount_under(self.tmp)
            shutil.rmtree(self.tmp, ignore_errors=True)
