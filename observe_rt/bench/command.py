"""`observe-rt bench` lists the benchmarks; `observe-rt bench oci` runs the lifecycle benchmark,
`observe-rt bench pull` the image pull benchmark (bench/pull_command.py)."""

from __future__ import annotations

import argparse
import json
import os
import shlex
import signal

from observe_rt.bench import cri_command, pull_command
from observe_rt.errors import FailedPrecondition

# Registration runs on every `observe-rt` start, including each `observe-rt oci` step the
# benchmark times, so rich and the benchmark modules are imported only when a benchmark runs.
DEFAULT_RUNTIMES = ("observe-rt", "observe-rt-lib", "runc", "crun")
DEFAULT_RUNS = 50
DEFAULT_WARMUP = 3

BENCHMARKS = {
    "oci": "create + start + wait + delete of /bin/true with observe-rt, runc and crun: "
    "median, p95, min, max and ratio to runc",
    "pull": pull_command.HELP,
    "cri": cri_command.HELP,
}


def register(sub) -> None:
    parser = sub.add_parser("bench", help="benchmarks (`observe-rt bench` lists them)")
    parser.set_defaults(func=list_benchmarks)
    benchmarks = parser.add_subparsers(dest="benchmark", metavar="BENCHMARK")
    oci = benchmarks.add_parser("oci", help=BENCHMARKS["oci"])
    oci.add_argument(
        "--runs",
        type=_count(1),
        default=DEFAULT_RUNS,
        help=f"measured lifecycles per runtime (default {DEFAULT_RUNS})",
    )
    oci.add_argument(
        "--warmup",
        type=_count(0),
        default=DEFAULT_WARMUP,
        help=f"unmeasured lifecycles per runtime first (default {DEFAULT_WARMUP})",
    )
    oci.add_argument(
        "--runtimes",
        type=_names,
        default=list(DEFAULT_RUNTIMES),
        help=f"comma-separated (default {','.join(DEFAULT_RUNTIMES)})",
    )
    oci.add_argument("--json", action="store_true", help="print the report as JSON")
    oci.set_defaults(func=run_oci)  # fmt: skip
    pull_command.register(benchmarks, _count)
    cri_command.register(benchmarks, _count)


def _count(minimum: int):
    def parse(text: str) -> int:
        value = int(text)
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be at least {minimum}")
        return value

    return parse


def _names(text: str) -> list[str]:
    names = [name.strip() for name in text.split(",") if name.strip()]
    if not names:
        raise argparse.ArgumentTypeError("name at least one runtime")
    return list(dict.fromkeys(names))  # keep order, drop repeats


def list_benchmarks(args: argparse.Namespace) -> int:
    print("Benchmarks (run `observe-rt bench NAME --help` for options):")
    for name, text in BENCHMARKS.items():
        print(f"  {name:<6} {text}")
    return 0


def run_oci(args: argparse.Namespace) -> int:
    from rich.console import Console

    from observe_rt.bench import report
    from observe_rt.bench.oci import OciBench

    if os.geteuid() != 0:
        raise FailedPrecondition("bench oci needs root: it creates namespaces and cgroups")
    console, errors = Console(), Console(stderr=True)
    total = (args.runs + args.warmup) * len(args.runtimes)
    # SIGTERM (`timeout`, a CI runner) takes the same clean-up path as Ctrl-C.
    previous = signal.signal(signal.SIGTERM, _interrupt)
    try:
        with OciBench(args.runtimes) as bench, _progress(errors, total) as advance:
            runs = bench.measure(args.runs, args.warmup, advance)
            result = report.build_report(runs, bench.workload, args.warmup, args.runs)
    except KeyboardInterrupt:
        errors.print("interrupted: containers, cgroups and temp files removed")
        return 130
    finally:
        signal.signal(signal.SIGTERM, previous)
    result["command"] = _command_line(args)
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        render(result, console)
    return 0


def _interrupt(signum, _frame) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


class _progress:
    """A transient progress bar on a terminal; a no-op otherwise (pipes, --json into files)."""

    def __init__(self, console, total: int, label: str = "lifecycles") -> None:
        from rich.progress import Progress

        self.bar = Progress(console=console, transient=True) if console.is_terminal else None
        self.total, self.label = total, label

    def __enter__(self):
        if self.bar is None:
            return None
        self.bar.start()
        task = self.bar.add_task(self.label, total=self.total)
        return lambda: self.bar.advance(task)

    def __exit__(self, *exc) -> None:
        if self.bar is not None:
            self.bar.stop()


def _command_line(args: argparse.Namespace) -> str:
    words = ["observe-rt", "bench", "oci", "--runs", str(args.runs)]
    if args.warmup != DEFAULT_WARMUP:
        words += ["--warmup", str(args.warmup)]
    if args.runtimes != list(DEFAULT_RUNTIMES):
        words += ["--runtimes", ",".join(args.runtimes)]
    return shlex.join(words)


def render(result: dict, console) -> None:
    from observe_rt.bench import report

    console.print(_table(
        f"{' '.join(result['workload'])}: create → start → wait → delete, ms",
        report.COLUMNS, report.table_rows(result),
    ))  # fmt: skip
    console.print(_table("median per step, ms", report.STEP_COLUMNS, report.step_rows(result)))
    for line in report.unavailable_lines(result):
        console.print(line, markup=False, highlight=False)
    notes = (
        f"{result['runs']} runs per runtime after {result['warmup']} warm-ups; {result['order']}.",
        f"Lifecycle: {result['lifecycle']}.",
        f"Measured by: {result['command']}",
    )
    for line in notes:
        console.print(line, markup=False, highlight=False)


def _table(title: str, columns, rows):
    from rich.table import Table

    table = Table(title=title)
    for index, column in enumerate(columns):
        table.add_column(column, justify="left" if index == 0 else "right", no_wrap=True)
    for row in rows:
        table.add_row(*row)
    return table
