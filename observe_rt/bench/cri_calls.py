"""Helpers for `bench cri --exec` and `--stats-containers`: the daemon's metrics URL from its
log, /metrics scrapes, and a process's CPU time from /proc/<pid>/stat (pure parts unit-tested)."""

from __future__ import annotations

import os
import re
import time
from dataclasses import dataclass

# observe_rt/server.py logs this once the exporter listens (metrics_address "127.0.0.1:0").
METRICS_LINE = re.compile(r"Prometheus metrics on (http://127\.0\.0\.1:\d+/metrics)")


def metrics_url(log_text: str) -> str | None:
    """The last metrics URL the daemon logged (a restarted daemon logs a new one)."""
    found = METRICS_LINE.findall(log_text)
    return found[-1] if found else None


def cpu_ticks(stat_text: str) -> int:
    """utime + stime (clock ticks, every thread) from a /proc/<pid>/stat line."""
    fields = stat_text.rsplit(")", 1)[1].split()  # the command may hold spaces and ")"
    return int(fields[11]) + int(fields[12])  # fields 14 and 15 of proc(5)


def read_cpu_ticks(pid: int) -> int | None:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return cpu_ticks(f.read())
    except (OSError, IndexError, ValueError):
        return None


@dataclass(frozen=True)
class CpuWindow:
    """A process's CPU time over an idle window."""

    ticks: int  # clock ticks used in the window
    clk_tck: int
    window_s: float

    @property
    def cpu_ms(self) -> float:
        return self.ticks * 1000 / self.clk_tck


def cpu_entry(window: CpuWindow, interval_s: float | None = None) -> dict:
    """The report's figures; with a collector `interval_s`, also the cost per tick."""
    entry = {
        "window_s": window.window_s,
        "cpu_ms": round(window.cpu_ms, 3),
        "cpu_ms_per_s": round(window.cpu_ms / window.window_s, 3),
        "clock_tick_ms": round(1000 / window.clk_tck, 3),
    }
    if interval_s:
        ticks = max(1, round(window.window_s / interval_s))
        entry |= {"collector_ticks": ticks, "cpu_ms_per_tick": round(window.cpu_ms / ticks, 3)}
    return entry


def clock_ticks_per_s() -> int:
    return os.sysconf("SC_CLK_TCK")


def scrape(url: str, timeout: float = 10.0) -> tuple[float, int]:
    """One GET of `url`, read to the end: (milliseconds, bytes). No proxy: loopback only."""
    import urllib.request

    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    start = time.perf_counter_ns()
    with opener.open(url, timeout=timeout) as response:
        body = response.read()
    return (time.perf_counter_ns() - start) / 1e6, len(body)


def scrape_text(url: str, timeout: float = 10.0) -> str:
    """The body of one GET of `url` (loopback only), as text."""
    import urllib.request

    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    with opener.open(url, timeout=timeout) as response:
        return response.read().decode(errors="replace")
