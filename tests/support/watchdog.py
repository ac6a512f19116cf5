"""See inside a test daemon that hangs: every thread's stack, on demand or when a call stalls.

The daemon registers faulthandler on SIGUSR1 (observe_rt/daemon.py), so `dump_stacks` is
`kill -USR1` plus reading what it appended to the daemon's log.

    with Watchdog(daemon, stall_after=120) as watchdog:
        watchdog.call(client.start_container, cid)   # tracked while in flight
    # leaving the block fails the test, with the daemon's stacks, if any call stalled
"""

from __future__ import annotations

import itertools
import os
import signal
import threading
import time

import pytest

_IDLE_POOL_WORKER = "concurrent/futures/thread.py"


def dump_stacks(daemon, wait: float = 2.0) -> str:
    """Every thread's Python stack in the daemon, as faulthandler writes them."""
    start = daemon.log.stat().st_size
    os.kill(daemon.process.pid, signal.SIGUSR1)
    deadline = time.monotonic() + wait
    text = ""
    while time.monotonic() < deadline:
        time.sleep(0.2)
        text = daemon.log.read_bytes()[start:].decode(errors="replace")
        if "Current thread" in text and text.rstrip().endswith("in <module>"):
            break
    return text


def idle_pool_workers(stacks: str) -> int:
    """Threads of the gRPC worker pool waiting for work: the pool grows up to its bound on
    demand and keeps them, which is not a leak."""
    blocks = stacks.split("Thread 0x")[1:]
    return sum(1 for block in blocks if _top_frame(block).find(_IDLE_POOL_WORKER) >= 0)


def _top_frame(block: str) -> str:
    lines = [line for line in block.splitlines()[1:] if line.strip().startswith("File")]
    return lines[0] if lines else ""


class Watchdog:
    """Fails the test when a tracked call runs longer than `stall_after` seconds, with the
    daemon's thread stacks taken at that moment (a deadlock shows as threads waiting on locks).
    """

    def __init__(self, daemon, stall_after: float) -> None:
        self.daemon = daemon
        self.stall_after = stall_after
        self.stalled: list[str] = []
        self.stacks = ""
        self._in_flight: dict[int, tuple[str, float]] = {}
        self._ids = itertools.count()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._monitor = threading.Thread(target=self._watch, name="watchdog", daemon=True)

    def __enter__(self) -> Watchdog:
        self._monitor.start()
        return self

    def __exit__(self, *exc_info) -> None:
        self._stop.set()
        self._monitor.join()
        if self.stalled:
            pytest.fail(
                f"calls stalled for more than {self.stall_after:.0f} s: {self.stalled}\n"
                f"daemon threads at that moment:\n{self.stacks}"
            )

    def call(self, fn, *args, **kwargs):
        key = next(self._ids)
        with self._lock:
            self._in_flight[key] = (getattr(fn, "__name__", str(fn)), time.monotonic())
        try:
            return fn(*args, **kwargs)
        finally:
            with self._lock:
                self._in_flight.pop(key, None)

    def _watch(self) -> None:
        while not self._stop.wait(1.0):
            now = time.monotonic()
            with self._lock:
                late = [name for name, since in self._in_flight.values()
                        if now - since > self.stall_after]  # fmt: skip
            if late and not self.stalled:
                self.stalled = late
                self.stacks = dump_stacks(self.daemon)
