"""Helpers for the `observe-rt bench` tests: run a benchmark as a command (JSON, table, or
interrupted), find what a session left behind, parse options and render reports."""

from __future__ import annotations

import glob
import io
import json
import os
import re
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


def run_bench(*argv: str, timeout: float, stderr: list | None = None) -> str:
    """`observe-rt bench ARGV...` to completion; its stdout (it must succeed). Its stderr is
    appended to `stderr` when given."""
    out = subprocess.run(
        [OBSERVE_RT, "bench", *argv], capture_output=True, text=True, timeout=timeout, check=False
    )
    assert out.returncode == 0, out.stderr
    if stderr is not None:
        stderr.append(out.stderr)
    return out.stdout


def run_json(*argv: str, timeout: float, stderr: list | None = None) -> dict:
    """`observe-rt bench ARGV... --json`: the report."""
    return json.loads(run_bench(*argv, "--json", timeout=timeout, stderr=stderr))


def interrupt(
    *argv: str,
    ready: Callable[[], bool],
    wait: float,
    exit_timeout: float,
    sig: int = signal.SIGTERM,
    settle: float = 0.0,
    group: bool = False,
) -> str:
    """Start `observe-rt bench ARGV...`, send `sig` `settle` seconds after `ready()` holds (to
    its whole process group with `group`, as Ctrl-C would), and check that it says it was
    interrupted and exits 130; its stderr."""
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
    return err


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


CRI_MARK = "/tmp/ocb-"  # the temp dir prefix of bench cri / compare sessions (bench/cri.py)


def cri_bench_processes() -> set[tuple[int, str]]:
    """Daemons, shims and registries of bench cri/compare sessions (their arguments name the
    session's temp dir), not the bench commands themselves."""
    return processes(lambda argv, text: CRI_MARK in text and " bench " not in f" {text} ")


SESSION_LINE = re.compile(r"session ([0-9a-f]+): (/tmp/ocb-\S+)")


def cri_session(stderr: str) -> tuple[str, str]:
    """(tag, temp dir) of the session a bench cri/compare run printed on stderr."""
    found = SESSION_LINE.search(stderr)
    assert found, f"no session line in: {stderr[-2000:]}"
    return found.group(1), found.group(2)


def bridges() -> set[str]:
    out = subprocess.run(["ip", "-o", "link", "show"], capture_output=True, text=True, check=True)
    names = {line.split(":")[1].strip().split("@")[0] for line in out.stdout.splitlines()}
    return {name for name in names if name.startswith("ocb")}


def cri_leftovers(tag: str, tmp: str) -> dict:
    """What the bench cri/compare session `tag` (temp dir `tmp`) left behind, told apart from
    other engineers' sessions running at the same time by its tag and temp dir."""
    cgroups = glob.glob(f"/sys/fs/cgroup/*/observe-rt-bench-cri-{tag}")
    return {
        "dir": os.path.exists(tmp),
        "processes": {p for p in cri_bench_processes() if tmp in p[1]},
        "mounts": mounts(tmp),
        "bridges": {name for name in bridges() if name.startswith(f"ocb{tag}")},
        "cgroups": set(cgroups + glob.glob(f"/sys/fs/cgroup/observe-rt-bench-cri-{tag}")),
        "cni_cache": set(glob.glob(f"/var/lib/cni/results/ocb-{tag}-*")),
    }


NOTHING_LEFT = {"dir": False, "processes": set(), "mounts": [], "bridges": set(),
                "cgroups": set(), "cni_cache": set()}  # fmt: skip


def containerd_shim_sockets() -> set[str]:
    """containerd's shim sockets (named by a hash: not attributable to a session)."""
    return set(glob.glob("/run/containerd/s/*"))


def assert_no_new_shim_sockets(before: set[str]) -> None:
    """No new containerd shim socket, unless another bench session ran meanwhile."""
    others = glob.glob(f"{CRI_MARK}*")
    if not others:
        assert containerd_shim_sockets() <= before


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
