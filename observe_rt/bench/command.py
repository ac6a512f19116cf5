"""`observe-rt bench`: the dispatcher.

    observe-rt bench                              lists the benchmarks
    observe-rt bench --endpoint unix:///x.sock    the CRI benchmark of any runtime
                                                  (endpoint_command.py)
    observe-rt bench NAME ...                     one benchmark: oci (here), pull, cri, compare

A new benchmark is a module with `HELP` and `register(benchmarks)` (see cri_command.py): add
one line to BENCHMARKS and one to register() below.
"""

from __future__ import annotations

import argparse

from observe_rt.bench import (
    common,
    compare_command,
    cri_command,
    endpoint_command,
    pull_command,
    top,
)
from observe_rt.bench import trace as trace_command
from observe_rt.errors import InvalidArgument

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
    "compare": compare_command.HELP,
    "trace": trace_command.HELP,
    "top": top.HELP,
}


def _names(text: str) -> list[str]:
    names = [name.strip() for name in text.split(",") if name.strip()]
    if not names:
        raise argparse.ArgumentTypeError("name at least one runtime")
    return list(dict.fromkeys(names))  # keep order, drop repeats


OPTIONS = (
    common.Option("--runs", common.count(1), DEFAULT_RUNS, "measured lifecycles per runtime",
                  always=True),
    common.Option("--warmup", common.count(0), DEFAULT_WARMUP,
                  "unmeasured lifecycles per runtime first"),
    common.Option("--runtimes", _names, list(DEFAULT_RUNTIMES), "comma-separated", show=",".join),
)  # fmt: skip


def register(sub) -> None:
    parser = sub.add_parser(
        "bench",
        help="benchmarks (`observe-rt bench` lists them)",
        description="With --endpoint: the CRI benchmark of that runtime.",
    )
    endpoint_command.add_options(parser)
    parser.set_defaults(func=bench_root)
    benchmarks = parser.add_subparsers(dest="benchmark", metavar="BENCHMARK")
    common.add_benchmark(benchmarks, "oci", BENCHMARKS["oci"], OPTIONS, run_oci)
    pull_command.register(benchmarks)
    cri_command.register(benchmarks)
    compare_command.register(benchmarks)
    trace_command.register(benchmarks)
    top.register(benchmarks)


def bench_root(args: argparse.Namespace) -> int:
    """`observe-rt bench --endpoint ...` runs the CRI benchmark; without it, the list."""
    if args.endpoint is not None:
        return endpoint_command.run_endpoint(args)
    given = endpoint_command.options_given(args)
    if given:
        raise InvalidArgument(f"{', '.join(given)} need --endpoint unix:///path/cri.sock "
                              "(or name a benchmark: `observe-rt bench` lists them)")  # fmt: skip
    return list_benchmarks(args)


def list_benchmarks(args: argparse.Namespace) -> int:
    print("observe-rt bench --endpoint unix:///path/cri.sock: the CRI benchmark of any runtime")
    print("Benchmarks (run `observe-rt bench NAME --help` for options):")
    for name, text in BENCHMARKS.items():
        print(f"  {name:<8} {text}")
    return 0


def run_oci(args: argparse.Namespace) -> int:
    return common.run(args, "oci", OPTIONS, root_reason="it creates namespaces and cgroups",
                      cleaned="containers, cgroups and temp files", measure=_measure,
                      render=render)  # fmt: skip


def _measure(args: argparse.Namespace, errors) -> dict:
    from observe_rt.bench import report
    from observe_rt.bench.oci import OciBench

    total = (args.runs + args.warmup) * len(args.runtimes)
    with OciBench(args.runtimes) as bench, common.progress(errors, total, "lifecycles") as advance:
        runs = bench.measure(args.runs, args.warmup, advance)
        return report.build_report(runs, bench.workload, args.warmup, args.runs)


def command_line(args: argparse.Namespace) -> str:
    return common.command_line("oci", args, OPTIONS)


def render(result: dict, console) -> None:
    from observe_rt.bench import report

    tables = (
        (f"{' '.join(result['workload'])}: create → start → wait → delete, ms", report.COLUMNS,
         report.table_rows(result), 1),
        ("median per step, ms", report.STEP_COLUMNS, report.step_rows(result), 1),
    )  # fmt: skip
    notes = (
        *report.unavailable_lines(result),
        f"{result['runs']} runs per runtime after {result['warmup']} warm-ups; {result['order']}.",
        f"Lifecycle: {result['lifecycle']}.",
        f"Measured by: {result['command']}",
    )
    common.render(console, tables, notes)
