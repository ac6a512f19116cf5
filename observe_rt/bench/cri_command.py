"""`observe-rt bench cri`: options, the run, and the rich tables (or --json)."""

from __future__ import annotations

import argparse

from observe_rt.bench import common

# Imported at every `observe-rt` start: rich, gRPC and the benchmark modules load only when it runs.
DEFAULT_PODS = 20
DEFAULT_WARMUP = 2
HELP = (
    "pod start (RunPodSandbox + CreateContainer + StartContainer) and teardown through the CRI, "
    "daemon and per-pod shim memory: observe-rt vs containerd + runc"
)
OPTIONS = (
    common.Option("--pods", common.count(1), DEFAULT_PODS,
                  "measured pods per runtime, all up at once", always=True),
    common.Option("--warmup", common.count(0), DEFAULT_WARMUP,
                  "pods per runtime started and removed first"),
    common.Option("--exec", common.count(0), 0,
                  "ExecSync(`true`) calls timed into one container per runtime; 0: none"),
    common.Option("--stats-containers", common.count(0), 0,
                  "containers up (one per pod) while ListContainerStats, /metrics and the "
                  "daemons' idle CPU are measured; 0: none"),
)  # fmt: skip


def register(benchmarks) -> None:
    common.add_benchmark(benchmarks, "cri", HELP, OPTIONS, run_cri)


def run_cri(args: argparse.Namespace) -> int:
    return common.run(
        args, "cri", OPTIONS, root_reason="the runtimes create namespaces, cgroups and mounts",
        cleaned="pods, daemons, shims, mounts, bridges, cgroups and temp files",
        measure=_measure, render=render,
    )  # fmt: skip


def _measure(args: argparse.Namespace, errors) -> dict:
    from observe_rt.bench import cri_report
    from observe_rt.bench.cri import RUNTIMES, CriBench

    per_runtime = 2 * args.warmup + 2 * args.pods + args.exec + 2 * args.stats_containers
    total = per_runtime * len(RUNTIMES)
    with errors.status("starting the registry and the runtimes, pulling images"):
        bench = CriBench()
    errors.print(bench.describe(), markup=False, highlight=False)
    with bench, common.progress(errors, total, "pod starts and teardowns") as advance:
        runs = bench.measure(args.pods, args.warmup, advance)
        if args.exec:
            bench.measure_exec(args.exec, advance)
        if args.stats_containers:
            bench.measure_stats(args.stats_containers, advance)
        images = {"container": bench.images.busybox, "command": ["sleep", "3600"],
                  "sandbox_image": bench.images.pause}  # fmt: skip
        return cri_report.build_report(runs, images, args.warmup, args.pods, common.host_info(),
                                       args.exec, args.stats_containers)  # fmt: skip


def command_line(args: argparse.Namespace) -> str:
    return common.command_line("cri", args, OPTIONS)


def render(result: dict, console) -> None:
    from observe_rt.bench import cri_report as report

    tables = (
        (f"pod start: {result['start']}, ms", report.TIMING_COLUMNS,
         report.timing_rows(result, "start"), 1),
        (f"pod teardown: {result['teardown']}, ms", report.TIMING_COLUMNS,
         report.timing_rows(result, "teardown"), 1),
        ("median per CRI call, ms", report.STEP_COLUMNS, report.step_rows(result), 1),
        (report.memory_title(result), report.MEMORY_COLUMNS, report.memory_rows(result), 2),
    )  # fmt: skip
    titles = report.phase_titles(result)
    if "exec" in titles:
        tables += ((titles["exec"], report.CALL_COLUMNS, report.exec_rows(result), 1),)
    if "list_stats" in titles:
        tables += (
            (titles["list_stats"], report.CALL_COLUMNS, report.list_stats_rows(result), 1),
            (titles["cost"], report.COST_COLUMNS, report.cost_rows(result), 1),
        )  # fmt: skip
    workload, warmup = result["workload"], result["warmup"]
    notes = (
        *report.summary_lines(result),
        "Memory: daemon = the observe-rt daemon / containerd process; shim / pod = all shim "
        "processes' sum over the pods up (N = processes); pause / pod = containerd's sandbox "
        "processes (observe-rt's shim holds the pod's namespaces itself).",
        f"Pod: one container `{' '.join(workload['command'])}` from {workload['container']}; "
        f"containerd's sandbox image {workload['sandbox_image']}.",
        f"{result['pods']} pods per runtime after {warmup} warm-up pod{'s' * (warmup != 1)}; "
        f"{result['order']}; memory read with every pod up.",
        *report.phase_lines(result),
        f"Measured by: {result['command']}",
    )
    common.render(console, tables, notes)
