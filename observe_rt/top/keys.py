"""Keys of `observe-rt top`: bytes from a raw terminal -> key names -> a new UiState.

    q quit   ↑/↓ or k/j select   s next sort   / filter (Enter keeps it, Esc clears it)
    Enter    detail pane on/off

Pure functions: the Live loop (app.py) reads bytes and applies them; tests apply names.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace

from observe_rt.top.model import SORT_KEYS, Row, UiState

QUIT = "quit"
SEQUENCES = {
    b"\x1b[A": "up", b"\x1bOA": "up", b"\x1b[B": "down", b"\x1bOB": "down",
    b"\x1b[5~": "pageup", b"\x1b[6~": "pagedown", b"\x1b[H": "home", b"\x1b[F": "end",
}  # fmt: skip
NAMED = {b"\r": "enter", b"\n": "enter", b"\x1b": "escape", b"\x7f": "backspace",
         b"\x08": "backspace", b"\x03": "ctrl-c"}  # fmt: skip
FOOTER = "q quit  ↑↓/jk select  s sort  / filter  enter detail"


def decode(data: bytes) -> list[str]:
    """Split what one read returned into key names ("a", "up", "enter", ...)."""
    keys, i = [], 0
    while i < len(data):
        for sequence, name in SEQUENCES.items():
            if data.startswith(sequence, i):
                keys.append(name)
                i += len(sequence)
                break
        else:
            byte = data[i : i + 1]
            keys.append(NAMED.get(byte) or byte.decode("latin-1"))
            i += 1
    return keys


def handle(ui: UiState, key: str, rows: Sequence[Row]) -> UiState | str:
    """The state after `key`, or QUIT. `rows` are the visible rows, in screen order."""
    if key == "ctrl-c":
        return QUIT
    if ui.editing:
        return _edit_filter(ui, key)
    if key in ("q", "Q"):
        return QUIT
    if key in ("up", "k", "down", "j", "pageup", "pagedown", "home", "end"):
        return _move(ui, key, rows)
    if key == "s":
        return replace(ui, sort=SORT_KEYS[(SORT_KEYS.index(ui.sort) + 1) % len(SORT_KEYS)])
    if key == "S":
        return replace(ui, sort=SORT_KEYS[(SORT_KEYS.index(ui.sort) - 1) % len(SORT_KEYS)])
    if key == "/":
        return replace(ui, editing=True)
    if key == "enter":
        return replace(ui, detail=not ui.detail)
    if key == "escape":
        return replace(ui, filter="")
    return ui


def _edit_filter(ui: UiState, key: str) -> UiState:
    if key == "enter":
        return replace(ui, editing=False)
    if key == "escape":
        return replace(ui, editing=False, filter="")
    if key == "backspace":
        return replace(ui, filter=ui.filter[:-1])
    if len(key) == 1 and key.isprintable():
        return replace(ui, filter=ui.filter + key)
    return ui


def _move(ui: UiState, key: str, rows: Sequence[Row]) -> UiState:
    if not rows:
        return ui
    keys = [r.key for r in rows]
    index = keys.index(ui.selected) if ui.selected in keys else 0
    step = {"up": -1, "k": -1, "down": 1, "j": 1, "pageup": -10, "pagedown": 10}
    if key == "home":
        index = 0
    elif key == "end":
        index = len(keys) - 1
    else:
        index = min(max(index + step[key], 0), len(keys) - 1)
    return replace(ui, selected=keys[index])
