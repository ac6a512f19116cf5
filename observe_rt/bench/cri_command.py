"""`observe-rt bench cri`: options, the run, and the rich tables (or --json)."""

from __future__ import annotations

import argparse
import json
import os
import shlex
import signal

from observe_rt.errors import FailedPrecondition

# Imported at every `observe-rt` start: rich, gRPC and the benchmark modules load only when it runs.
DEFAULT_PODS = 20
DEFAULT_WARMUP = 2
HELP = (
    "pod start (RunPodSandbox + CreateContainer + StartContainer) and teardown through the CRI, "
    "daemon and per-pod shim memory: observe-rt vs containerd + runc"
)


def register(benchmarks, count) -> None:
    cri = benchmarks.add_parser("cri", help=HELP)
    options = (
        ("--pods", count(1), DEFAULT_PODS, "measured pods per runtime, all up at once"),
        ("--warmup", count(0), DEFAULT_WARMUP, "pods per runtime started and removed first"),
    )
    for flag, kind, default, text in options:
        cri.add_argument(flag, type=kind, default=default, help=f"{text} (default {default})")
    cri.add_argument("--json", action="store_true", help="print the report as JSON")
    cri.set_defaults(func=run_cri)


def run_cri(args: argparse.Namespace) -> int:
    from rich.console import Console

    from observe_rt.bench import cri_report
    from observe_rt.bench.command import _interrupt, _progress
    from observe_rt.bench.cri import RUNTIMES, CriBench, host_info

    if os.geteuid() != 0:
        raise FailedPrecondition("bench cri needs root: the runtimes create namespaces, cgroups "
                                 "and mounts")  # fmt: skip
    console, errors = Console(), Console(stderr=True)
    previous = signal.signal(signal.SIGTERM, _interrupt)  # `timeout`, CI: same path as Ctrl-C
    try:
        with errors.status("starting the registry and the runtimes, pulling images"):
            bench = CriBench()
        total = (2 * args.warmup + 2 * args.pods) * len(RUNTIMES)
        with bench, _progress(errors, total, "pod starts and teardowns") as advance:
            runs = bench.measure(args.pods, args.warmup, advance)
            images = {"container": bench.images.busybox, "command": ["sleep", "3600"],
                      "sandbox_image": bench.images.pause}  # fmt: skip
            result = cri_report.build_report(runs, images, args.warmup, args.pods, host_info())
    except KeyboardInterrupt:
        errors.print("interrupted: pods, daemons, shims, mounts, bridges, cgroups and temp files "
                     "removed")  # fmt: skip
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
    words = ["observe-rt", "bench", "cri", "--pods", str(args.pods)]
    if args.warmup != DEFAULT_WARMUP:
        words += ["--warmup", str(args.warmup)]
    return shlex.join(words)


def render(result: dict, console) -> None:
    from observe_rt.bench import cri_report as report
    from observe_rt.bench.pull_command import _table

    tables = (
        (f"pod start: {result['start']}, ms", report.TIMING_COLUMNS,
         report.timing_rows(result, "start"), 1),
        (f"pod teardown: {result['teardown']}, ms", report.TIMING_COLUMNS,
         report.timing_rows(result, "teardown"), 1),
        ("median per CRI call, ms", report.STEP_COLUMNS, report.step_rows(result), 1),
        (report.memory_title(result), report.MEMORY_COLUMNS, report.memory_rows(result), 2),
    )  # fmt: skip
    for title, columns, rows, text_columns in tables:
        console.print(_table(title, columns, rows, text_columns=text_columns))
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
        f"Measured by: {result['command']}",
    )
    for line in notes:
        console.print(line, markup=False, highlight=False)
