"""`observe-rt top`: the full-screen live view, or one frame (--once) or one document (--json).

    fetch (source.py) ─> Frame (model.py) ─> render(frame, ui, height) (render.py) ─> rich Live
                 keys from a cbreak terminal (keys.py) ─> new UiState ─┘

The loop fetches every --refresh seconds and redraws at once after a key. It reads the daemon
only (its read API and the CRI); when the daemon is down the screen says so and the next
refresh tries again. Ctrl-C or q leaves the terminal as it was.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import select
import sys
import termios
import time
import tty
from dataclasses import replace

from observe_rt.top.model import SORT_KEYS, Frame, UiState, selected_row, visible_rows

HELP = (
    "live view of the node's containers: CPU, memory, OOM kills, syscalls, flows (reads the daemon)"
)


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = 0.0
    if not 0.1 <= value <= 3600:
        raise argparse.ArgumentTypeError(f"{text!r}: give seconds between 0.1 and 3600")
    return value


def register(sub) -> None:
    from observe_rt.client import DEFAULT_SOCKET, SOCKET_ENV
    from observe_rt.top.source import API_ENV, DEFAULT_API

    parser = sub.add_parser("top", help=HELP, description=HELP)
    parser.add_argument("--socket", help=f"the daemon's CRI socket (default ${SOCKET_ENV} or "
                        f"{DEFAULT_SOCKET})")  # fmt: skip
    parser.add_argument("--api", help=f"the daemon's metrics address, which also serves "
                        f"/api/v1/view (default ${API_ENV} or {DEFAULT_API})")  # fmt: skip
    parser.add_argument("--refresh", type=_seconds, default=1.0, help="seconds between refreshes")
    parser.add_argument("--sort", choices=SORT_KEYS, default="cpu", help="initial sort column")
    parser.add_argument("--filter", default="", help="show only rows containing this text")
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--once", action="store_true", help="print one frame and exit")
    mode.add_argument("--json", action="store_true", help="print the daemon's view as JSON")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from observe_rt.client import DEFAULT_SOCKET, SOCKET_ENV
    from observe_rt.top.source import API_ENV, DEFAULT_API, DaemonDown, DaemonSource, snapshot_json

    api = args.api or os.environ.get(API_ENV) or DEFAULT_API
    socket = args.socket or os.environ.get(SOCKET_ENV) or DEFAULT_SOCKET
    if args.json:
        try:
            print(snapshot_json(api))
        except DaemonDown as err:
            print(f"observe-rt top: {err}", file=sys.stderr)
            return 1
        return 0
    ui = UiState(sort=args.sort, filter=args.filter, refresh_s=args.refresh)
    source = DaemonSource(api, socket)
    try:
        return print_once(source, ui) if args.once else live(source, ui)
    finally:
        source.close()


def print_once(source, ui: UiState) -> int:
    from rich.console import Console

    from observe_rt.top import render

    frame = source.fetch(Frame())
    if frame.error:
        print(f"observe-rt top: {frame.error}", file=sys.stderr)
        return 1
    rows = visible_rows(frame, ui)
    if rows:  # a second look, for the first row's last exit (the detail pane)
        ui = replace(ui, selected=rows[0].key)
        frame = source.fetch(frame, rows[0])
    console = Console()
    height = console.size.height if console.is_terminal else render.natural_height(frame, ui)
    console.print(render.render(frame, ui, height))
    return 0


def live(source, ui: UiState) -> int:
    from rich.console import Console
    from rich.live import Live

    from observe_rt.top import keys, render

    console = Console()
    frame, next_fetch = Frame(), 0.0
    with cbreak(sys.stdin) as read_keys, Live(console=console, screen=True,
                                              auto_refresh=False) as screen:  # fmt: skip
        while True:
            if time.monotonic() >= next_fetch:
                frame = source.fetch(frame, selected_row(visible_rows(frame, ui), ui))
                next_fetch = time.monotonic() + ui.refresh_s
                ui = _keep_selection(frame, ui)
            screen.update(render.render(frame, ui, console.size.height), refresh=True)
            for key in read_keys(max(next_fetch - time.monotonic(), 0.0)):
                result = keys.handle(ui, key, visible_rows(frame, ui))
                if result == keys.QUIT:
                    return 0
                ui = result


def _keep_selection(frame: Frame, ui: UiState) -> UiState:
    """Select the first row until the user picks one; keep a pick while its row exists."""
    rows = visible_rows(frame, ui)
    if rows and ui.selected not in {r.key for r in rows}:
        return replace(ui, selected=rows[0].key)
    return ui


@contextlib.contextmanager
def cbreak(stream):
    """A key reader: cbreak mode (keys arrive at once, Ctrl-C still signals) on a terminal;
    without one (a pipe), it only waits."""
    if not stream.isatty():
        yield lambda timeout: time.sleep(timeout) or []
        return
    from observe_rt.top.keys import decode

    fd = stream.fileno()
    saved = termios.tcgetattr(fd)

    def read(timeout: float) -> list[str]:
        ready, _, _ = select.select([fd], [], [], timeout)
        return decode(os.read(fd, 64)) if ready else []

    try:
        tty.setcbreak(fd)
        yield read
    except KeyboardInterrupt:
        pass
    finally:
        termios.tcsetattr(fd, termios.TCSADRAIN, saved)
