"""`observe-rt oci ...`: the runc-compatible command line of the executor."""

from __future__ import annotations

import argparse
import json
import os
import signal

from observe_rt.errors import AlreadyExists, InvalidArgument
from observe_rt.runtime.state import DEFAULT_ROOT


def _executor(args):
    """Imported on use, so `observe-rt --help` and the other commands skip its import cost."""
    from observe_rt.runtime.executor import Executor

    return Executor(args.root)


def register(sub: argparse._SubParsersAction) -> None:
    oci = sub.add_parser("oci", help="run OCI bundles (the runc-compatible subset)")
    oci.add_argument("--root", default=DEFAULT_ROOT, help=f"state root (default {DEFAULT_ROOT})")
    commands = oci.add_subparsers(dest="oci_command", required=True, metavar="COMMAND")

    create = commands.add_parser("create", help="create a container, init blocked until start")
    create.add_argument("id")
    create.add_argument("--bundle", "-b", default=".", help="bundle directory (config.json)")
    create.add_argument("--pid-file", help="write the container's host pid here")
    create.set_defaults(func=_create)

    for name, func, text in (
        ("start", _start, "run the created container's process"),
        ("state", _state, "print the container's state as JSON"),
    ):
        p = commands.add_parser(name, help=text)
        p.add_argument("id")
        p.set_defaults(func=func)

    kill = commands.add_parser("kill", help="send a signal to the container (default TERM)")
    kill.add_argument("id")
    kill.add_argument("signal", nargs="?", default="TERM")
    kill.add_argument("--all", "-a", action="store_true", help="signal every process in it")
    kill.set_defaults(func=_kill)

    delete = commands.add_parser(
        "delete", help="delete a stopped (or, with --force, any) container"
    )
    delete.add_argument("id")
    delete.add_argument("--force", "-f", action="store_true")
    delete.set_defaults(func=_delete)

    run = commands.add_parser("run", help="create, start and wait; exits with the workload's code")
    run.add_argument("id")
    run.add_argument("--bundle", "-b", default=".")
    run.set_defaults(func=_run)

    spec = commands.add_parser("spec", help="write a default config.json (containerd defaults)")
    spec.add_argument("--bundle", "-b", default=".", help="where to write config.json")
    spec.add_argument("--no-seccomp", action="store_true", help="leave linux.seccomp out")
    spec.set_defaults(func=_spec)

    listing = commands.add_parser("list", help="list containers")
    listing.add_argument("--format", "-f", choices=("table", "json"), default="table")
    listing.set_defaults(func=_list)


def parse_signal(text: str) -> int:
    """TERM, SIGTERM or 15 -> 15."""
    if text.isdigit():
        number = int(text)
        if 0 < number < signal.NSIG:
            return number
    else:
        name = text.upper() if text.upper().startswith("SIG") else f"SIG{text.upper()}"
        if isinstance(getattr(signal, name, None), signal.Signals):
            return int(getattr(signal, name))
    raise InvalidArgument(f"signal {text!r}: unknown signal")


def _create(args) -> int:
    _executor(args).create(args.id, args.bundle, args.pid_file)
    return 0


def _start(args) -> int:
    _executor(args).start(args.id)
    return 0


def _state(args) -> int:
    print(json.dumps(_executor(args).state(args.id), indent=2))
    return 0


def _kill(args) -> int:
    _executor(args).kill(args.id, parse_signal(args.signal), args.all)
    return 0


def _delete(args) -> int:
    _executor(args).delete(args.id, args.force)
    return 0


def _run(args) -> int:
    return _executor(args).run(args.id, args.bundle)


def _spec(args) -> int:
    from observe_rt.runtime.seccomp_default import runtime_default_profile
    from observe_rt.runtime.spec_default import default_spec

    path = os.path.join(args.bundle, "config.json")
    if os.path.exists(path):
        raise AlreadyExists(f"{path} exists; remove it first")
    profile = None if args.no_seccomp else runtime_default_profile()
    with open(path, "w") as f:
        json.dump(default_spec(seccomp=profile), f, indent=2)
    return 0


def _list(args) -> int:
    states = _executor(args).list()
    if args.format == "json":
        print(json.dumps(states, indent=2))
        return 0
    print(f"{'ID':<24} {'PID':>8} {'STATUS':<9} {'BUNDLE':<40} CREATED")
    for s in states:
        print(f"{s['id']:<24} {s['pid']:>8} {s['status']:<9} {s['bundle']:<40} {s['created']}")
    return 0
