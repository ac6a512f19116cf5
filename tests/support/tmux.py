"""Drive a terminal program in a private tmux server: send keys, read the screen.

    with TmuxSession("ort-top-ab12", ["observe-rt", "top"], width=160, height=50) as pane:
        pane.send("s")
        screen = pane.wait_for(lambda text: "sort: mem" in text)

Each session runs on its own tmux socket (-L), so tests never touch a user's tmux server; the
pane stays after its program exits (remain-on-exit), so its last screen can still be read.
"""

from __future__ import annotations

import contextlib
import shlex
import subprocess
import time
from collections.abc import Callable, Sequence


class TmuxSession:
    def __init__(self, name: str, argv: Sequence[str], width: int = 160, height: int = 50) -> None:
        self.name = name
        self.argv = list(argv)
        self.width, self.height = width, height

    def tmux(self, *args: str, check: bool = True) -> str:
        done = subprocess.run(["tmux", "-L", self.name, *args], capture_output=True, text=True,
                              timeout=30, check=False)  # fmt: skip
        if check and done.returncode != 0:
            raise RuntimeError(f"tmux {' '.join(args)}: {done.stderr.strip()}")
        return done.stdout

    def __enter__(self) -> TmuxSession:
        # pytest exports COLUMNS=80 and LINES=24; they would win over the pane's real size.
        command = shlex.join(["env", "-u", "COLUMNS", "-u", "LINES", *self.argv])
        self.tmux("-f", "/dev/null", "new-session", "-d", "-s", self.name, "-x", str(self.width),
                  "-y", str(self.height), command)  # fmt: skip
        self.tmux("set-option", "-t", self.name, "remain-on-exit", "on")
        return self

    def __exit__(self, *exc) -> None:
        with contextlib.suppress(Exception):
            self.tmux("kill-server", check=False)

    def send(self, *keys: str) -> None:
        """tmux key names: "s", "Enter", "Escape", "Down", "C-c"; text is sent as it is."""
        self.tmux("send-keys", "-t", self.name, *keys)

    def screen(self) -> str:
        return self.tmux("capture-pane", "-p", "-t", self.name)

    def exited(self) -> bool:
        return self.tmux("display-message", "-p", "-t", self.name, "#{pane_dead}").strip() == "1"

    def wait_for(self, ready: Callable[[str], object], timeout: float = 60, what: str = "") -> str:
        """Poll the screen until `ready(screen)` is true; the last screen on timeout."""
        deadline = time.monotonic() + timeout
        while True:
            text = self.screen()
            if ready(text):
                return text
            if time.monotonic() > deadline:
                raise AssertionError(f"not on screen after {timeout:.0f}s: {what}\n{text}")
            time.sleep(0.5)
