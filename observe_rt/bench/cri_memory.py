"""Resident memory of runtime processes, from /proc/PID/smaps_rollup, and finding those processes.

    Rss   pages of the process in RAM, shared ones counted in full (what `ps` shows)
    Pss   each shared page divided by the number of processes mapping it: the sum of Pss over
          all processes is the memory they really use, so per-pod Pss is a shim's fair share

Processes are found by their command line, which names the session's private dirs:
  observe-rt  `python -m observe_rt.pod.shim --dir <run_dir>/pods/<id>/shim ...`
  containerd  `containerd-shim-runc-v2 -namespace k8s.io -id <sandbox id> -address <socket>`
Every function takes a /proc root so it can be tested on a fixture tree.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

PROC = "/proc"
OBSERVE_RT_SHIM_MODULE = "observe_rt.pod.shim"
CONTAINERD_SHIM = "containerd-shim-runc-v2"


@dataclass(frozen=True)
class Usage:
    rss_kib: int
    pss_kib: int


def parse_smaps_rollup(text: str) -> Usage:
    """Rss and Pss (KiB) from a smaps_rollup text."""
    values = {}
    for line in text.splitlines():
        fields = line.split()
        if len(fields) >= 2 and fields[0] in ("Rss:", "Pss:"):
            values[fields[0][:-1]] = int(fields[1])
    if set(values) != {"Rss", "Pss"}:
        raise ValueError("smaps_rollup has no Rss or no Pss line")
    return Usage(values["Rss"], values["Pss"])


def read_usage(pid: int, proc: str = PROC) -> Usage | None:
    """The process's usage, or None when it is gone."""
    try:
        with open(f"{proc}/{pid}/smaps_rollup") as f:
            return parse_smaps_rollup(f.read())
    except (FileNotFoundError, ProcessLookupError):
        return None


def command_lines(proc: str = PROC) -> dict[int, list[str]]:
    """pid -> argv of every process with a command line (kernel threads have none)."""
    found = {}
    for entry in os.listdir(proc):
        if not entry.isdigit():
            continue
        try:
            raw = Path(proc, entry, "cmdline").read_bytes()
        except OSError:
            continue
        if raw:
            found[int(entry)] = [
                arg.decode(errors="replace") for arg in raw.rstrip(b"\0").split(b"\0")
            ]
    return found


def _option(argv: list[str], *names: str) -> str | None:
    """The value of `-name value`, `--name value` or `--name=value` in argv."""
    for index, arg in enumerate(argv):
        for name in names:
            if arg == name and index + 1 < len(argv):
                return argv[index + 1]
            if arg.startswith(name + "="):
                return arg[len(name) + 1 :]
    return None


def is_observe_rt_shim(argv: list[str], run_dir: str | Path) -> bool:
    """A pod shim of the observe-rt daemon whose run dir is `run_dir`."""
    if OBSERVE_RT_SHIM_MODULE not in argv:
        return False
    shim_dir = _option(argv, "--dir") or ""
    return shim_dir.startswith(str(run_dir).rstrip("/") + "/")


def is_containerd_shim(argv: list[str], address: str | Path) -> bool:
    """A runc v2 shim serving the containerd daemon listening on `address`."""
    if not argv or os.path.basename(argv[0]) != CONTAINERD_SHIM:
        return False
    return _option(argv, "-address", "--address") == str(address)


def find_processes(match: Callable[[list[str]], bool], proc: str = PROC) -> list[int]:
    return sorted(pid for pid, argv in command_lines(proc).items() if match(argv))


def usages(pids: Iterable[int], proc: str = PROC) -> list[Usage]:
    """Usage of each process that is still there."""
    return [usage for pid in pids if (usage := read_usage(pid, proc)) is not None]
