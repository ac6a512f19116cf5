"""The `observe-rt` command line: one subcommand per entry point.

Each subcommand lives in the module that implements it and registers itself through a
`register(subparsers)` function, so this file stays a table of contents.
"""

from __future__ import annotations

import argparse
import sys

from observe_rt import __version__
from observe_rt.errors import ObserveRtError


def build_parser() -> argparse.ArgumentParser:
    from observe_rt import daemon
    from observe_rt.bench import command as bench_command
    from observe_rt.client import cli as client_cli
    from observe_rt.doctor import command as doctor_command
    from observe_rt.oci import images_cli
    from observe_rt.runtime import oci_cli
    from observe_rt.top import app as top_app

    parser = argparse.ArgumentParser(
        prog="observe-rt", description="A CRI container runtime with eBPF observability built in."
    )
    parser.add_argument("--version", action="version", version=f"observe-rt {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    daemon.register(sub)
    doctor_command.register(sub)
    oci_cli.register(sub)
    images_cli.register(sub)
    client_cli.register(sub)  # ps, pods, logs, inspect, version
    bench_command.register(sub)
    top_app.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except ObserveRtError as err:
        print(f"observe-rt {args.command}: {err}", file=sys.stderr)
        return 1
