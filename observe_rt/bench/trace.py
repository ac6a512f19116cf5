"""`observe-rt bench trace`: pod start latency with OpenTelemetry tracing off vs on.

Both daemons are observe-rt; the traced one has sampling 1.0 and exports over OTLP/gRPC to a
live receiver on 127.0.0.1 (bench/trace_session.py). Imported at every `observe-rt` start, so
the session, gRPC and rich load only when the benchmark runs.
"""

from __future__ import annotations

import argparse

from observe_rt.bench import common

DEFAULT_PODS = 20
DEFAULT_WARMUP = 2
HELP = (
    "pod start (RunPodSandbox + CreateContainer + StartContainer) with tracing off vs on "
    "(sampling 1.0, exporting to a live OTLP/gRPC receiver on 127.0.0.1)"
)
OPTIONS = (
    common.Option("--pods", common.count(1), DEFAULT_PODS, "measured pods per daemon",
                  always=True),
    common.Option("--warmup", common.count(0), DEFAULT_WARMUP,
                  "pods per daemon started and removed first"),
)  # fmt: skip


def register(benchmarks) -> None:
    common.add_benchmark(benchmarks, "trace", HELP, OPTIONS, run_trace)


def run_trace(args: argparse.Namespace) -> int:
    return common.run(
        args, "trace", OPTIONS, root_reason="the daemons create namespaces, cgroups and mounts",
        cleaned="pods, daemons, shims, mounts, bridges, cgroups, the receiver and temp files",
        measure=_measure, render=render,
    )  # fmt: skip


def _measure(args: argparse.Namespace, errors) -> dict:
    from observe_rt.bench.trace_session import TraceBench, build_report

    total = (2 * args.warmup + 2 * args.pods) * 2
    with errors.status("starting the registry, the receiver and both daemons, pulling images"):
        bench = TraceBench()
    errors.print(bench.describe(), markup=False, highlight=False)
    with bench, common.progress(errors, total, "pod starts and teardowns") as advance:
        runs = bench.measure(args.pods, args.warmup, advance)
        return build_report(runs, args.pods, args.warmup, bench.exported(), common.host_info(),
                            bench.cpu_ms_per_pod)  # fmt: skip


def render(result: dict, console) -> None:
    from observe_rt.bench import trace_session as report

    title = f"pod start: {result['start']}, ms"
    notes = (
        *report.notes(result),
        f"{result['pods']} pods per daemon after {result['warmup']} warm-up pods; "
        f"{result['order']}. × off: median over the untraced daemon's; RSS: the daemon's, "
        "MiB, with every pod up; CPU: the daemon's CPU ms per pod over every start and "
        "teardown (warm-ups too).",
        f"Measured by: {result['command']}",
    )
    common.render(console, ((title, report.COLUMNS, report.rows(result), 1),), notes)
