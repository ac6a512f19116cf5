"""Run every fuzz target (or the ones named) for a fixed time each and sum up.

    python -m tests.fuzz.run --seconds 60            # `make fuzz`
    python -m tests.fuzz.run --seconds 5 reference   # one target, briefly

Each target runs in its own process (libFuzzer stops a process at its first crash). The table
gives executions, new corpus inputs and crashes per target; crash inputs are copied to
<work>/crashes/<target>/ and their tracebacks printed. The exit status is 1 when any target
crashed. --json writes the figures for the README.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path

FUZZ_DIR = Path(__file__).parent
REPO = FUZZ_DIR.parent.parent
TARGETS = sorted(p.stem.removeprefix("fuzz_") for p in FUZZ_DIR.glob("fuzz_*.py"))
_STAT = re.compile(r"^stat::(\w+):\s+(\d+)", re.MULTILINE)


@dataclass
class TargetRun:
    target: str
    seconds: int
    executions: int
    new_inputs: int
    crashes: int
    returncode: int
    output_tail: str

    @property
    def ok(self) -> bool:
        return self.returncode == 0 and self.crashes == 0


def run_target(target: str, seconds: int, work: Path) -> TargetRun:
    """One libFuzzer run of `target`, stopped after `seconds` (or at its first crash)."""
    crashes = work / "crashes" / target
    crashes.mkdir(parents=True, exist_ok=True)
    command = [
        sys.executable, "-m", f"tests.fuzz.fuzz_{target}",
        f"-max_total_time={seconds}", "-timeout=30", "-rss_limit_mb=2048",
        "-print_final_stats=1", f"-artifact_prefix={crashes}/", "-close_fd_mask=1",
    ]  # fmt: skip
    scratch = work / "scratch" / target  # corpus, rootfs and snapshot dirs of the run
    env = {"OBSERVE_RT_FUZZ_WORK": str(scratch), "PYTHONPATH": str(REPO)}
    proc = subprocess.run(
        command, cwd=REPO, env={**_base_env(), **env}, capture_output=True, text=True,
        errors="replace", timeout=seconds * 3 + 120,
    )  # fmt: skip
    shutil.rmtree(scratch, ignore_errors=True)
    stats = {name: int(value) for name, value in _STAT.findall(proc.stderr)}
    found = [p for p in crashes.iterdir() if p.name.startswith(("crash-", "timeout-", "oom-"))]
    return TargetRun(target, seconds, stats.get("number_of_executed_units", 0),
                     stats.get("new_units_added", 0), len(found), proc.returncode,
                     _crash_report(proc.stderr))  # fmt: skip


def _crash_report(stderr: str) -> str:
    """The traceback and the crash input from libFuzzer's output, else its last lines."""
    start = stderr.find("=== Uncaught Python exception")
    return stderr[start : start + 6000] if start >= 0 else stderr[-4000:]


def _base_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("targets", nargs="*", default=TARGETS, help=f"of {', '.join(TARGETS)}")
    parser.add_argument("--seconds", type=int, default=60, help="per target (default 60)")
    parser.add_argument("--work", help="scratch corpus and crashes (default: a temp dir)")
    parser.add_argument("--json", help="write the figures to this file")
    args = parser.parse_args(argv)
    work = Path(args.work or tempfile.mkdtemp(prefix="observe-rt-fuzz-"))
    runs = []
    print(f"{'target':<12} {'seconds':>7} {'executions':>11} {'new inputs':>10} {'crashes':>7}")
    for target in args.targets:
        run = run_target(target, args.seconds, work)
        runs.append(run)
        print(f"{target:<12} {run.seconds:>7} {run.executions:>11} {run.new_inputs:>10} "
              f"{run.crashes:>7}", flush=True)  # fmt: skip
        if not run.ok:
            print(run.output_tail, file=sys.stderr)
    total = sum(r.executions for r in runs)
    print(f"{'total':<12} {'':>7} {total:>11} {'':>10} {sum(r.crashes for r in runs):>7}")
    if any(r.crashes for r in runs):
        print(f"crash inputs under {work / 'crashes'}")
    if args.json:
        figures = [{k: v for k, v in asdict(r).items() if k != "output_tail"} for r in runs]
        Path(args.json).write_text(json.dumps(figures, indent=2) + "\n")
    if not args.work and all(r.crashes == 0 for r in runs):
        shutil.rmtree(work, ignore_errors=True)
    return 0 if all(r.ok for r in runs) else 1


if __name__ == "__main__":
    sys.exit(main())
