"""`observe-rt bench pull`: options, the run, and the rich table (or --json)."""

from __future__ import annotations

import argparse
import json
import os
import shlex
import signal

from observe_rt.errors import FailedPrecondition

# Imported at every `observe-rt` start: rich and the benchmark modules load only when it runs.
DEFAULT_RUNS = 5
DEFAULT_WARMUP = 1
DEFAULT_SIZE_MB = 100
HELP = (
    "cold pull + unpack of a ~100 MB 5-layer image from a local registry, observe-rt vs "
    "containerd (ctr images pull): wall time, peak memory and ratios"
)


def register(benchmarks, count) -> None:
    pull = benchmarks.add_parser("pull", help=HELP)
    options = (
        ("--runs", count(1), DEFAULT_RUNS, "measured pulls per puller"),
        ("--warmup", count(0), DEFAULT_WARMUP, "unmeasured pulls per puller first"),
        ("--size-mb", _size, DEFAULT_SIZE_MB, "compressed image size in MB"),
    )
    for flag, kind, default, text in options:
        pull.add_argument(flag, type=kind, default=default, help=f"{text} (default {default})")
    pull.add_argument("--json", action="store_true", help="print the report as JSON")
    pull.set_defaults(func=run_pull)


def _size(text: str) -> float:
    value = float(text)
    if not 0.1 <= value <= 10_000:
        raise argparse.ArgumentTypeError("must be between 0.1 and 10000")
    return int(value) if value.is_integer() else value


def run_pull(args: argparse.Namespace) -> int:
    from rich.console import Console

    from observe_rt.bench import pull_report
    from observe_rt.bench.command import _interrupt, _progress
    from observe_rt.bench.pull import PULLERS, PullBench

    if os.geteuid() != 0:
        raise FailedPrecondition("bench pull needs root: containerd mounts overlay snapshots")
    console, errors = Console(), Console(stderr=True)
    total = (args.runs + args.warmup) * len(PULLERS)
    previous = signal.signal(signal.SIGTERM, _interrupt)  # `timeout`, CI: same path as Ctrl-C
    try:
        with errors.status(f"building and pushing a {args.size_mb} MB image"):
            bench = PullBench(args.size_mb)
        with bench, _progress(errors, total, "pulls") as advance:
            runs = bench.measure(args.runs, args.warmup, advance)
            result = pull_report.build_report(
                runs, bench.reference, bench.image, args.warmup, args.runs
            )
    except KeyboardInterrupt:
        errors.print("interrupted: containerd, registry, mounts and temp files removed")
        return 130
    finally:
        signal.signal(signal.SIGTERM, previous)
    result["command"] = command_line(args)
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        render(result, console)
    return 0


def command_line(args: argparse.Namespace) -> str:
    words = ["observe-rt", "bench", "pull", "--runs", str(args.runs)]
    if args.warmup != DEFAULT_WARMUP:
        words += ["--warmup", str(args.warmup)]
    if args.size_mb != DEFAULT_SIZE_MB:
        words += ["--size-mb", str(args.size_mb)]
    return shlex.join(words)


def render(result: dict, console) -> None:
    from observe_rt.bench import pull_report

    console.print(_table("cold pull + unpack, wall time, s", pull_report.WALL_COLUMNS,
                         pull_report.wall_rows(result), text_columns=1))  # fmt: skip
    console.print(_table("peak memory, MiB (median of runs)", pull_report.MEMORY_COLUMNS,
                         pull_report.memory_rows(result), text_columns=2))  # fmt: skip
    notes = (
        *pull_report.summary_lines(result),
        pull_report.image_line(result),
        f"{result['runs']} runs per puller after {result['warmup']} warm-up; {result['order']}; "
        f"{result['cold']}.",
        f"Measured by: {result['command']}",
    )
    for line in notes:
        console.print(line, markup=False, highlight=False)


def _table(title: str, columns, rows, text_columns: int):
    """A rich table: the first `text_columns` columns left-aligned, the figures right-aligned."""
    from rich.table import Table

    table = Table(title=title)
    for index, column in enumerate(columns):
        justify = "left" if index < text_columns else "right"
        table.add_column(column, justify=justify, no_wrap=True)
    for row in rows:
        table.add_row(*row)
    return table
