"""Writable-layer usage (bytes, inodes) measured in the background, never on the tick path.

Walking a container's upper directory costs one lstat per file, so it must not run every
tick. LayerUsage keeps one figure per directory and a background thread rescans each at most
every `rescan` seconds (a new directory is scanned at once). The collector calls track() with
the directories it wants and reads get(); both only touch a dict under a lock.

Bytes are allocated blocks (st_blocks * 512, as du and containerd's fs.DiskUsage count them),
hard links once; inodes count every entry including the directory itself.
"""

from __future__ import annotations

import logging
import os
import stat
import threading
import time
from collections.abc import Iterable

log = logging.getLogger("observe_rt.collect")


def disk_usage(root: str) -> tuple[int, int]:
    """(bytes, inodes) under `root`; entries that vanish during the walk are skipped."""
    seen: set[tuple[int, int]] = set()
    total = 0
    stack = [root]
    first = True
    while stack:
        path = stack.pop()
        try:
            st = os.lstat(path)
        except OSError:
            if first:
                raise
            continue
        first = False
        if (st.st_dev, st.st_ino) in seen:
            continue
        seen.add((st.st_dev, st.st_ino))
        total += st.st_blocks * 512
        if stat.S_ISDIR(st.st_mode):
            try:
                with os.scandir(path) as entries:
                    stack.extend(e.path for e in entries)
            except OSError:
                continue
    return total, len(seen)


class LayerUsage:
    """Cached disk usage of tracked directories, refreshed by one background thread."""

    def __init__(self, rescan: float = 10.0, poll: float = 0.5) -> None:
        self.rescan = rescan
        self.poll = poll
        self._lock = threading.Lock()
        self._wanted: set[str] = set()
        self._figures: dict[str, tuple[int, int, int]] = {}  # dir -> bytes, inodes, time_ns
        self._scanned_at: dict[str, float] = {}  # dir -> monotonic time of the last scan
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.errors = 0

    def track(self, directories: Iterable[str]) -> None:
        """Measure exactly these directories from now on."""
        wanted = {d for d in directories if d}
        with self._lock:
            new = wanted - self._wanted
            self._wanted = wanted
            for gone in set(self._figures) - wanted:
                self._figures.pop(gone, None)
                self._scanned_at.pop(gone, None)
        if new:
            self._wake.set()

    def get(self, directory: str) -> tuple[int, int, int] | None:
        """(bytes, inodes, scan time in ns) of the last scan, or None before the first."""
        with self._lock:
            return self._figures.get(directory)

    def _due(self) -> list[str]:
        now = time.monotonic()
        with self._lock:
            return sorted(
                d for d in self._wanted if now - self._scanned_at.get(d, -1e18) >= self.rescan
            )

    def scan_due(self) -> int:
        """Rescan every tracked directory whose figure is older than `rescan`; how many."""
        scanned = 0
        for directory in self._due():
            try:
                usage = disk_usage(directory)
            except OSError as err:
                self.errors += 1
                log.debug("layer usage: cannot scan %s: %s", directory, err)
                usage = None
            with self._lock:
                self._scanned_at[directory] = time.monotonic()
                if usage is not None and directory in self._wanted:
                    self._figures[directory] = (usage[0], usage[1], time.time_ns())
            scanned += 1
        return scanned

    def start(self) -> None:
        if self._thread is None:
            self._stop.clear()
            self._thread = threading.Thread(target=self._run, name="layer-usage", daemon=True)
            self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.scan_due()
            except Exception:  # never let the thread die
                log.exception("layer usage scan failed")
            self._wake.wait(self.poll)
            self._wake.clear()
