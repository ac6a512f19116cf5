"""`observe-rt daemon`: the command line of the CRI server (see server.py).

Only argparse at import time: every observe-rt command builds this parser.
"""

from __future__ import annotations

import argparse

DEFAULT_CONFIG_FILE = "/etc/observe-rt/config.toml"


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("daemon", help="serve the CRI on a unix socket")
    p.add_argument("--config", help=f"TOML file (default {DEFAULT_CONFIG_FILE})")
    p.add_argument("--socket")
    p.add_argument("--state-dir")
    p.add_argument("--run-dir")
    p.add_argument("--cni-conf-dir")
    p.add_argument("--cgroup-parent")
    p.add_argument("--log-level", choices=("debug", "info", "warning", "error"))
    p.set_defaults(func=_daemon)


def _daemon(args) -> int:
    import faulthandler
    import logging
    import signal
    import sys
    import time

    from observe_rt import config as config_module
    from observe_rt.server import JsonFormatter, serve

    cfg = config_module.load(
        args.config, socket=args.socket, state_dir=args.state_dir, run_dir=args.run_dir,
        cni_conf_dir=args.cni_conf_dir, cgroup_parent=args.cgroup_parent,
        log_level=args.log_level,
    )  # fmt: skip
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter())
    logging.basicConfig(level=cfg.log_level.upper(), handlers=[handler], force=True)
    logging.Formatter.converter = time.gmtime
    # `kill -USR1 <pid>` writes every thread's stack to stderr: how to see a hung call or a
    # deadlock on a live node (the reliability tests' watchdog uses it too).
    faulthandler.register(signal.SIGUSR1, all_threads=True)
    return serve(cfg)
