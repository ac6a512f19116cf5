"""Helpers for the `observe-rt bench` tests: run a benchmark as a command (JSON, table, or
interrupted), find what a session left behind, parse options and render reports."""

from __future__ import annotations

import glob
import io
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from observe_rt import cli

OBSERVE_RT = str(Path(sys.executable).with_name("observe-rt"))

# --- the command --------------------------------------------------------------------------------


def run_bench(*argv: str, timeout: float) -> str:
    """`observe-rt bench ARGV...` to completion; its stdout (it must succeed)."""
    out = subprocess.run(
        [OBSERVE_RT, "bench", *argv], capture_output=True, text=True, timeout=timeout, check=False
    )
    assert out.returncode == 0, out.stderr
    return out.stdout


def run_json(*argv: str, timeout: float) -> dict:
    """`observe-rt bench ARGV... --json`: the report."""
    return json.loads(run_bench(*argv, "--json", timeout=timeout))


def interrupt(
    *argv: str,
    ready: Callable[[], bool],
    wait: float,
    exit_timeout: float,
    sig: int = signal.SIGTERM,
    settle: float = 0.0,
    group: bool = False,
) -> None:
    """Start `observe-rt bench ARGV...`, send `sig` `settle` seconds after `ready()` holds (to
    its whole process group with `group`, as Ctrl-C would), and check that it says it was
    interrupted and exits 130."""
    bench = subprocess.Popen(
        [OBSERVE_RT, "bench", *argv],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=group,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + wait
        while not ready():
            if time.monotonic() >= deadline or bench.poll() is not None:
                pytest.fail(f"the bench never got ready: {bench.communicate()[1]}")
            time.sleep(0.05)
        time.sleep(settle)
        if group:
            os.killpg(bench.pid, sig)
        else:
            bench.send_signal(sig)
        _, err = bench.communicate(timeout=exit_timeout)
    finally:
        if bench.poll() is None:
            bench.kill()
            bench.wait()
    assert bench.returncode == 130, err
    assert "interrupted" in err


# --- what a session leaves behind ---------------------------------------------------------------


def processes(keep: Callable[[list[str], str], bool]) -> set[tuple[int, str]]:
    """(pid, command line) of every process for which `keep(argv, command line)` holds."""
    found = set()
    for path in glob.glob("/proc/[0-9]*/cmdline"):
        try:
            argv = Path(path).read_bytes().decode(errors="replace").split("\0")
        except OSError:
            continue
        text = " ".join(argv)
        if keep(argv, text):
            found.add((int(path.split("/")[2]), text))
    return found


def mounts(mark: str) -> list[str]:
    """Our mount table's lines that name `mark`."""
    return [line for line in Path("/proc/self/mountinfo").read_text().splitlines() if mark in line]


# --- options and rendering, in process ----------------------------------------------------------


def parse(*argv: str):
    """`observe-rt bench ARGV...` parsed."""
    return cli.build_parser().parse_args(["bench", *argv])


def assert_rejected(benchmark: str, *bad: list[str]) -> None:
    """Each option list in `bad` is refused by `observe-rt bench BENCHMARK`."""
    for options in bad:
        with pytest.raises(SystemExit):
            parse(benchmark, *options)


def rendered(render, report: dict, width: int) -> str:
    """What `render(report, console)` prints on a `width`-column console."""
    from rich.console import Console

    console = Console(file=io.StringIO(), width=width)
    render(report, console)
    return console.file.getvalue()
