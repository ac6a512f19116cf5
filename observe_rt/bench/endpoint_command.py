"""`observe-rt bench --endpoint unix:///path/cri.sock`: the CRI benchmark of any runtime.

Runs every phase of endpoint_phases.py against one endpoint (observe-rt, containerd, CRI-O
...) and prints one column of figures, or the report as JSON. Without --image it starts a
loopback registry with the bench busybox image and pulls that through the endpoint (a runtime
that refuses plain HTTP on 127.0.0.1 needs --image of an image it can pull or already has).
The pods it makes carry the label observe-rt-bench=<session> and are removed at the end, also
after Ctrl-C or SIGTERM. `make bench` (compare.py) runs the same phases on observe-rt and
containerd side by side.
"""

from __future__ import annotations

import argparse
import ipaddress
from urllib.parse import urlsplit

from observe_rt.bench import common

TABLE_WIDTH = 132  # columns of the table when printed into a pipe or a log

DEFAULT_LEVELS = (10, 100)


def _levels(text: str) -> tuple[int, ...]:
    try:
        levels = tuple(sorted({int(word) for word in text.split(",") if word.strip()}))
    except ValueError:
        raise argparse.ArgumentTypeError("comma-separated container counts, e.g. 10,100") from None
    if not levels or levels[0] < 1:
        raise argparse.ArgumentTypeError("container counts must be at least 1")
    return levels


def _loopback_url(text: str) -> str:
    """A /metrics URL on this machine: the benchmark never sends traffic elsewhere."""
    parts = urlsplit(text)
    host = parts.hostname or ""
    try:
        loopback = host == "localhost" or ipaddress.ip_address(host).is_loopback
    except ValueError:
        loopback = False
    if parts.scheme != "http" or not loopback:
        raise argparse.ArgumentTypeError("expected http://127.0.0.1:PORT/metrics (loopback only)")
    return text


# Shared with `bench compare` (make bench): the phases' knobs.
PHASE_OPTIONS = (
    common.Option("--pods", common.count(1), 20, "serial pods (start, then teardown)"),
    common.Option("--warmup", common.count(0), 2, "unmeasured repetitions before each phase"),
    common.Option("--parallel", common.count(1), 5, "pods started at once"),
    common.Option("--parallel-rounds", common.count(1), 3, "rounds of --parallel pods"),
    common.Option("--repetitions", common.count(1), 20,
                  "lifecycle rounds, ExecSync calls and calls per List* level"),
    common.Option("--levels", _levels, DEFAULT_LEVELS, "containers up for the List* calls",
                  show=lambda levels: ",".join(map(str, levels))),
    common.Option("--containers-per-pod", common.count(1), 10,
                  "containers per pod while the List* levels are up"),
)  # fmt: skip
OPTIONS = (
    common.Option("--endpoint", str, None, "the CRI socket, unix:///path (runs the benchmark)",
                  always=True),
    common.Option("--image", str, None, "the containers' image (needs sh and sleep; "
                  "default: bench busybox from a loopback registry)"),
    common.Option("--metrics-url", _loopback_url, None,
                  "observe-rt's /metrics, to time its scrape at the top level"),
    *PHASE_OPTIONS,
)  # fmt: skip


def add_options(parser: argparse.ArgumentParser) -> None:
    """The endpoint benchmark's options live on `observe-rt bench` itself."""
    for option in OPTIONS:
        shown = option.show(option.default) if option.default is not None else "none"
        parser.add_argument(option.flag, type=option.kind, default=option.default,
                            help=f"{option.text} (default {shown})")  # fmt: skip
    parser.add_argument("--json", action="store_true", help="print the report as JSON")


def options_given(args: argparse.Namespace) -> list[str]:
    """The endpoint options set to something else than their default."""
    given = [o.flag for o in OPTIONS if getattr(args, o.dest, o.default) != o.default]
    return given + (["--json"] if getattr(args, "json", False) else [])


def settings(args: argparse.Namespace, session: str):
    from observe_rt.bench.endpoint_phases import Settings

    return Settings(session=session, pods=args.pods, warmup=args.warmup, parallel=args.parallel,
                    parallel_rounds=args.parallel_rounds, repetitions=args.repetitions,
                    levels=tuple(args.levels),
                    containers_per_pod=args.containers_per_pod)  # fmt: skip


def run_endpoint(args: argparse.Namespace) -> int:
    return common.run(args, "", OPTIONS, root_reason="it finds the daemon's and shims' memory "
                      "in /proc and talks to a root-owned socket", cleaned="the pods it made",
                      measure=_measure, render=render)  # fmt: skip


def _measure(args: argparse.Namespace, errors) -> dict:
    from observe_rt.bench.endpoint_phases import run_phases
    from observe_rt.bench.endpoint_report import build_report
    from observe_rt.bench.endpoint_session import EndpointSession

    say = common.narrator(errors)
    with EndpointSession(args.endpoint, args.image, args.metrics_url) as session:
        target = session.prepare(say)
        run_phases([target], settings(args, session.tag), say)
        return build_report([target], settings(args, session.tag), None, common.host_info(),
                            {"endpoint": args.endpoint})  # fmt: skip


def render(result: dict, console) -> None:
    from observe_rt.bench import endpoint_report as report

    title = f"CRI benchmark: {', '.join(result['targets'])}"
    tables = ((title, report.columns(result), report.table_rows(result), 2),)
    if not console.is_terminal:  # a pipe or a log: wide enough for every column
        console.width = max(console.width, TABLE_WIDTH)
    common.render(console, tables, (*report.notes(result), f"Measured by: {result['command']}"))
