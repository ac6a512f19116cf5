"""`observe-rt bench compare`: options, the run, the table (what `make bench` runs)."""

from __future__ import annotations

import argparse
from pathlib import Path

from observe_rt.bench import common
from observe_rt.bench.endpoint_command import PHASE_OPTIONS, TABLE_WIDTH

HELP = ("the CRI benchmark on observe-rt and containerd + runc side by side (interleaved), "
        "plus the eBPF probes' overhead; writes JSON to --results-dir")  # fmt: skip
OPTIONS = (
    *PHASE_OPTIONS,
    common.Option("--probe-rounds", common.count(0), 3,
                  "observe-rt restarts with probes on and off each; 0: skip the probe rows"),
    common.Option("--syscalls", common.count(1000), 2_000_000, "getppid calls per run"),
    common.Option("--http-seconds", float, 3.0, "seconds of HTTP load per run"),
    common.Option("--http-workers", common.count(1), 4, "HTTP load processes"),
    common.Option("--results-dir", Path, Path("bench-results"), "where the JSON goes"),
)  # fmt: skip


def register(benchmarks) -> None:
    common.add_benchmark(benchmarks, "compare", HELP, OPTIONS, run_compare)


def run_compare(args: argparse.Namespace) -> int:
    return common.run(args, "compare", OPTIONS,
                      root_reason="the runtimes create namespaces, cgroups and mounts",
                      cleaned="pods, daemons, shims, registry, mounts, bridges, cgroups and "
                      "temp files", measure=_measure, render=render)  # fmt: skip


def _measure(args: argparse.Namespace, errors) -> dict:
    from observe_rt.bench.compare import measure, write_results

    report = measure(args, common.narrator(errors))
    report["command"] = common.command_line("compare", args, OPTIONS)
    path = write_results(report, args.results_dir)
    errors.print(f"results: {path}")
    return report


def render(result: dict, console) -> None:
    from observe_rt.bench import endpoint_report as report

    names = " vs ".join(result["targets"])
    title = f"CRI benchmark {result['date']}: {names}"
    notes = [f"{name}: unavailable: {reason}"
             for name, reason in result.get("unavailable_endpoints", {}).items()]  # fmt: skip
    notes += report.notes(result)
    if result["probes"].get("available"):
        notes.append("Probe rows (observe-rt only): medians over the rounds; their ratio is "
                     "probes on / probes off.")  # fmt: skip
    notes.append(f"Measured by: {result['command']}")
    if not console.is_terminal:  # a pipe or a log: wide enough for every column
        console.width = max(console.width, TABLE_WIDTH)
    common.render(console, ((title, report.columns(result), report.table_rows(result), 2),),
                  notes)  # fmt: skip
