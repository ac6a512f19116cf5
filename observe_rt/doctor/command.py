"""`observe-rt doctor`: check every host feature the runtime relies on.

Prints one line per check (OK / WARN / FAIL with a one-line fix) as a table or `--json`.
Exits 1 only when something required to run containers is missing; missing probe features
(BPF, bcc, tracepoints, kprobes, headers) and optional extras are warnings and exit 0.
The hidden `--root PATH` reads another tree instead of / and skips the active probes (tests).
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path


def register(sub) -> None:
    parser = sub.add_parser("doctor", help="check the host features observe-rt relies on")
    parser.add_argument("--json", action="store_true", help="print a JSON list instead of a table")
    parser.add_argument("--root", type=Path, default=None, help=argparse.SUPPRESS)
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    # Imported here: every observe-rt command builds this parser, few run the doctor.
    from rich.console import Console

    from observe_rt.doctor import probes, report
    from observe_rt.doctor.model import Probes, exit_code

    root: Path | None = args.root
    if root is None:
        outcomes, env = probes.run_all(), os.environ
    else:
        # A fixture tree: the real kernel's answers would not describe it.
        outcomes, env = Probes(skipped_because="--root given"), {}
    checks = report.collect(root or Path("/"), outcomes, os.uname().machine, env)
    if args.json:
        print(report.to_json(checks))
    else:
        report.render_table(checks, Console())
    return exit_code(checks)
