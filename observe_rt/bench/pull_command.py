"""`observe-rt bench pull`: options, the run, and the rich table (or --json)."""

from __future__ import annotations

import argparse

from observe_rt.bench import common

# Imported at every `observe-rt` start: rich and the benchmark modules load only when it runs.
DEFAULT_RUNS = 5
DEFAULT_WARMUP = 1
DEFAULT_SIZE_MB = 100
HELP = (
    "cold pull + unpack of a ~100 MB 5-layer image from a local registry, observe-rt vs "
    "containerd (ctr images pull): wall time, peak memory and ratios"
)


def _size(text: str) -> float:
    value = float(text)
    if not 0.1 <= value <= 10_000:
        raise argparse.ArgumentTypeError("must be between 0.1 and 10000")
    return int(value) if value.is_integer() else value


OPTIONS = (
    common.Option("--runs", common.count(1), DEFAULT_RUNS, "measured pulls per puller",
                  always=True),
    common.Option("--warmup", common.count(0), DEFAULT_WARMUP, "unmeasured pulls per puller first"),
    common.Option("--size-mb", _size, DEFAULT_SIZE_MB, "compressed image size in MB"),
)  # fmt: skip


def register(benchmarks) -> None:
    common.add_benchmark(benchmarks, "pull", HELP, OPTIONS, run_pull)


def run_pull(args: argparse.Namespace) -> int:
    return common.run(args, "pull", OPTIONS, root_reason="containerd mounts overlay snapshots",
                      cleaned="containerd, registry, mounts and temp files", measure=_measure,
                      render=render)  # fmt: skip


def _measure(args: argparse.Namespace, errors) -> dict:
    from observe_rt.bench import pull_report
    from observe_rt.bench.pull import PULLERS, PullBench

    total = (args.runs + args.warmup) * len(PULLERS)
    with errors.status(f"building and pushing a {args.size_mb} MB image"):
        bench = PullBench(args.size_mb)
    with bench, common.progress(errors, total, "pulls") as advance:
        runs = bench.measure(args.runs, args.warmup, advance)
        return pull_report.build_report(runs, bench.reference, bench.image, args.warmup, args.runs)


def command_line(args: argparse.Namespace) -> str:
    return common.command_line("pull", args, OPTIONS)


def render(result: dict, console) -> None:
    from observe_rt.bench import pull_report

    tables = (
        ("cold pull + unpack, wall time, s", pull_report.WALL_COLUMNS,
         pull_report.wall_rows(result), 1),
        ("peak memory, MiB (median of runs)", pull_report.MEMORY_COLUMNS,
         pull_report.memory_rows(result), 2),
    )  # fmt: skip
    notes = (
        *pull_report.summary_lines(result),
        pull_report.image_line(result),
        f"{result['runs']} runs per puller after {result['warmup']} warm-up; {result['order']}; "
        f"{result['cold']}.",
        f"Measured by: {result['command']}",
    )
    common.render(console, tables, notes)
