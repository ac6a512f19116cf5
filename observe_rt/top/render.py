"""The screen of `observe-rt top`, a pure function of (Frame, UiState, height).

    ┌ header ──── node CPU and memory, pods and containers by state, probes, lost, uptime ┐
    │ container table (sorted, filtered; the selected row highlighted)                    │
    │ detail pane: top syscalls │ OOM kills, last exit, flows, execs   (Enter toggles)   │
    │ events ticker: OOM kills, exits, restarts, probe errors (newest first)              │
    └ footer ───── keys, sort, filter, daemon errors ─────────────────────────────────────┘

No I/O and no clock here: times are shown relative to frame.fetched_ns, so a test renders a
fixed Frame into a fixed-size Console and compares text.
"""

from __future__ import annotations

import os
import time
from collections.abc import Mapping, Sequence

from rich import box
from rich.console import Group, RenderableType
from rich.panel import Panel
from rich.text import Text

from observe_rt.top.keys import FOOTER
from observe_rt.top.model import Frame, Row, UiState, selected_row, visible_rows

HEADER_LINES = 2
DETAIL_LINES = 9
EVENT_LINES = 5
TABLE_CHROME = 4  # panel border (2) + column header + its rule
# (heading, "<" left or ">" right, width); the first column takes what the others leave.
COLUMNS = (
    ("NAMESPACE/POD/CONTAINER", "<", 0), ("STATE", "<", 7), ("RST", ">", 3), ("CPU%", ">", 5),
    ("CPU%LIM", ">", 7), ("MEM", ">", 8), ("MEM%LIM", ">", 7), ("OOM", ">", 4),
    ("SYSC/s", ">", 7), ("ERR/s", ">", 6), ("TOP SYSCALL", "<", 14), ("TCP", ">", 5),
    ("RX/s", ">", 8), ("TX/s", ">", 8),
)  # fmt: skip
NAME_WIDTH = 30  # narrow terminals lose columns from the right before names are cut
STATE_STYLE = {"RUNNING": "green", "EXITED": "red", "CREATED": "yellow", "UNKNOWN": "magenta"}
EVENT_STYLE = {"oom": "bold red", "exit": "yellow", "restart": "cyan", "probe": "magenta"}


def _fixed_lines(detail: bool) -> int:
    """Lines of everything but the table's rows: panels with borders, and the footer."""
    return HEADER_LINES + 2 + EVENT_LINES + 2 + 1 + (DETAIL_LINES + 2 if detail else 0)


def natural_height(frame: Frame, ui: UiState) -> int:
    """The height at which every visible row fits (--once into a file or a pipe)."""
    rows = visible_rows(frame, ui)
    detail = ui.detail and bool(rows)
    return _fixed_lines(detail) + TABLE_CHROME + max(len(rows), 1)


def render(frame: Frame, ui: UiState, height: int) -> RenderableType:
    """The whole screen in exactly `height` lines (fewer table rows when it is small)."""
    rows = visible_rows(frame, ui)
    selected = selected_row(rows, ui)
    detail = ui.detail and selected is not None
    table_rows = max(height - _fixed_lines(detail) - TABLE_CHROME, 1)
    parts: list[RenderableType] = [
        Panel(header(frame), box=box.SQUARE, title="observe-rt top", title_align="left"),
        Panel(ContainerTable(rows, selected, table_rows), box=box.SQUARE,
              height=table_rows + TABLE_CHROME,
              title=f"containers ({len(rows)}/{len(frame.rows)})", title_align="left"),
    ]  # fmt: skip
    if detail:
        parts.append(Panel(DetailPane(frame, selected), box=box.SQUARE, height=DETAIL_LINES + 2,
                           title=f"detail: {selected.key}", title_align="left"))  # fmt: skip
    parts.append(Panel(ticker(frame.events, frame.fetched_ns, EVENT_LINES), box=box.SQUARE,
                       height=EVENT_LINES + 2, title="events", title_align="left"))  # fmt: skip
    parts.append(footer(frame, ui))
    return Group(*parts)


# --- header ------------------------------------------------------------------------------------


def header(frame: Frame) -> Text:
    node = frame.node
    cpu = node.get("cpu_percent")
    used, total = node.get("memory_used_bytes"), node.get("memory_total_bytes")
    text = Text()
    text.append("node ", style="bold")
    text.append(f"CPU {_num(cpu, '.0f')}% of {node.get('cpus', '?')} cores  ")
    if total:
        text.append(f"mem {human_bytes(used)}/{human_bytes(total)} ({100 * used / total:.0f}%)  ")
    text.append(f"pods {_states(frame.pods)}  containers {_states(frame.container_states)}")
    text.append("\n")
    probes = frame.probes
    up = probes.get("up", {})
    if probes.get("available"):
        names = " ".join(f"{n}{'' if ok else '(down)'}" for n, ok in sorted(up.items()))
        text.append(f"probes {names}", style="green" if all(up.values()) else "yellow")
    else:
        text.append(f"probes off: {probes.get('reason', 'unknown')}", style="yellow")
    lost = probes.get("events_lost", 0)
    text.append(f"  events lost {lost}", style="red" if lost else "")
    text.append(f"  daemon up {duration(frame.uptime_s)}")
    return text


def _states(states: Mapping[str, int]) -> str:
    if not states:
        return "0"
    return " ".join(f"{state.lower()} {count}" for state, count in sorted(states.items()))


# --- container table ---------------------------------------------------------------------------


class ContainerTable:
    """The container table as fixed-width text lines: a rich Table measures every cell on each
    frame, which cost ~100 ms for 25 rows, 10% of a core at one frame a second."""

    def __init__(self, rows: Sequence[Row], selected: Row | None, height: int) -> None:
        self.rows, self.selected, self.height = rows, selected, height

    def __rich_console__(self, console, options):
        columns = fitting_columns(options.max_width)
        widths = [options.max_width - sum(w + 1 for _, _, w in columns[1:]) - 1]
        widths += [w for _, _, w in columns[1:]]
        heading = Text(style="bold", no_wrap=True)
        for (name, align, _), width in zip(columns, widths, strict=True):
            heading.append(_fit(name, width, align) + " ")
        yield _cropped(heading, options.max_width)
        yield Text("─" * options.max_width, style="dim")
        for row in _window(self.rows, self.selected, self.height):
            line = Text(no_wrap=True)
            shown = cells(row)[: len(columns)]
            for (value, style), (_, align, _), width in zip(shown, columns, widths, strict=True):
                line.append(_fit(value, width, align), style=style)
                line.append(" ")
            if self.selected is not None and row.key == self.selected.key:
                line.stylize("reverse")
            yield _cropped(line, options.max_width)


def fitting_columns(width: int) -> Sequence[tuple[str, str, int]]:
    """COLUMNS, without the rightmost ones while the name column would be under NAME_WIDTH."""
    columns = list(COLUMNS)
    while len(columns) > 4 and width - sum(w + 1 for _, _, w in columns[1:]) - 1 < NAME_WIDTH:
        columns.pop()
    return columns


def _fit(value: str, width: int, align: str) -> str:
    if len(value) > width:
        value = value[: width - 1] + "…"
    return value.ljust(width) if align == "<" else value.rjust(width)


def _cropped(text: Text, width: int) -> Text:
    text.truncate(width)
    return text


def _window(rows: Sequence[Row], selected: Row | None, height: int) -> Sequence[Row]:
    """`height` rows that include the selected one (scrolled as little as needed)."""
    index = rows.index(selected) if selected in rows else 0
    start = max(index - height + 1, 0)
    return rows[start : start + height]


def cells(row: Row) -> list[tuple[str, str]]:
    """(text, style) per column of COLUMNS."""
    return [
        (row.key, ""),
        (row.state.lower(), STATE_STYLE.get(row.state, "")),
        (str(row.restarts), ""),
        (_num(row.cpu_percent, ".1f"), ""),
        (_num(row.cpu_limit_percent, ".0f"), ""),
        (human_bytes(row.memory_bytes), ""),
        (_num(row.memory_limit_percent, ".0f"), ""),
        (str(row.oom_kills), "bold red" if row.oom_kills else ""),
        (_num(row.syscalls_per_s, ".0f"), ""),
        (_num(row.errors_per_s, ".0f"), "red" if row.errors_per_s else ""),
        (row.top_syscall or "-", ""),
        (_num(row.tcp_connections, "d"), ""),
        (human_bytes(row.rx_per_s), ""),
        (human_bytes(row.tx_per_s), ""),
    ]


# --- detail pane -------------------------------------------------------------------------------


class DetailPane:
    """Top syscalls on the left (at most half), what happened to the container on the right; as
    plain text lines, like ContainerTable, to keep a frame cheap."""

    def __init__(self, frame: Frame, row: Row) -> None:
        self.frame, self.row = frame, row

    def __rich_console__(self, console, options):
        left_width = min(SYSCALLS_WIDTH, options.max_width // 2)
        left = syscall_lines(self.row.detail.get("syscalls", []))
        right = activity(self.frame, self.row).split()
        for index in range(max(len(left), len(right))):
            line = left[index].copy() if index < len(left) else Text()
            line.truncate(left_width, pad=True)
            line.append("  ")
            if index < len(right):
                line.append_text(right[index])
            yield _cropped(line, options.max_width)


SYSCALL_COLUMNS = (("SYSCALL", "<", 14), ("/s", ">", 6), ("CALLS", ">", 7),
                   ("ERRORS", "<", 12), ("MEAN", ">", 7), ("P99<", ">", 7))  # fmt: skip
SYSCALLS_WIDTH = sum(width + 1 for _, _, width in SYSCALL_COLUMNS) - 1


def syscall_lines(syscalls: Sequence[Mapping]) -> list[Text]:
    if not syscalls:
        return [Text("no syscall counts (probes off, or not running)", style="dim")]
    heading = " ".join(_fit(name, width, align) for name, align, width in SYSCALL_COLUMNS)
    lines = [Text(heading, style="bold")]
    for s in syscalls[: DETAIL_LINES - 1]:
        errnos = " ".join(f"{e}:{n}" for e, n in sorted(s.get("errnos", {}).items()))
        values = (s["name"], _num(s.get("per_s"), ".0f"), str(s["calls"]),
                  errnos or str(s.get("errors", 0)), nanos(s.get("mean_ns")),
                  nanos(s.get("p99_ns")))  # fmt: skip
        line = Text()
        for value, (name, align, width) in zip(values, SYSCALL_COLUMNS, strict=True):
            line.append(
                _fit(value, width, align), style="red" if name == "ERRORS" and errnos else ""
            )
            line.append(" ")
        lines.append(line)
    return lines


def activity(frame: Frame, row: Row) -> Text:
    """OOM kills with their victim, the last exit, recent flows and execs; newest first."""
    now = frame.fetched_ns
    text = Text(overflow="ellipsis", no_wrap=True)
    ooms = [e for e in frame.events if e.get("kind") == "oom" and _is(row, e)]
    for event in ooms[-2:][::-1]:
        text.append(f"OOM  {ago(event['time_ns'], now)}  {event['text']}\n", style="bold red")
    exit_ = frame.last_exit
    if exit_ is not None and exit_.container_id in row.attempts:
        message = f"  {exit_.message}" if exit_.message else ""
        text.append(f"exit {ago(exit_.finished_at_ns, now)}  attempt {exit_.attempt}: "
                    f"{exit_.reason or 'exited'} code {exit_.exit_code}{message}\n",
                    style="yellow")  # fmt: skip
    for flow in list(row.detail.get("flows", []))[-3:][::-1]:
        sent, received = human_bytes(flow["bytes_sent"]), human_bytes(flow["bytes_received"])
        took = nanos(flow["duration_ns"])
        text.append(f"flow {ago(flow['time_ns'], now)} {flow['direction']} {flow['local']} → "
                    f"{flow['peer']} ↑{sent} ↓{received} {took}\n")  # fmt: skip
    for ex in list(row.detail.get("execs", []))[-3:][::-1]:
        # busybox re-execs its applets through /proc/self/exe: the comm names the applet.
        program = ex["filename"]
        if ex.get("comm") and os.path.basename(program) != ex["comm"]:
            program = f"{ex['comm']} ({program})"
        text.append(f"exec {ago(ex['time_ns'], now)}  pid {ex['pid']} {program}\n")
    if not text:
        text.append("no OOM kills, exits, flows or execs seen", style="dim")
    text.rstrip()
    return text


def _is(row: Row, event: Mapping) -> bool:
    return (event.get("namespace"), event.get("pod"), event.get("name")) == (
        row.namespace,
        row.pod,
        row.name,
    )


# --- events ticker and footer ------------------------------------------------------------------


def ticker(events: Sequence[Mapping], now_ns: int, lines: int) -> Text:
    text = Text(no_wrap=True, overflow="ellipsis")
    for event in list(events)[-lines:][::-1]:
        who = "/".join(
            p for p in (event.get("namespace"), event.get("pod"), event.get("name")) if p
        )
        kind = event.get("kind", "")
        text.append(f"{clock(event.get('time_ns', 0))} ")
        text.append(f"{kind.upper():<7}", style=EVENT_STYLE.get(kind, ""))
        text.append(f" {who + '  ' if who else ''}{event.get('text', '')}\n")
    if not events:
        text.append("no OOM kills, exits, restarts or probe errors yet", style="dim")
    text.rstrip()
    return text


def footer(frame: Frame, ui: UiState) -> Text:
    text = Text(no_wrap=True, overflow="ellipsis")
    if frame.error:
        text.append(f"daemon unreachable: {frame.error} (retrying)  ", style="bold white on red")
    elif frame.cri_error:
        text.append(f"CRI: {frame.cri_error}  ", style="yellow")
    text.append(FOOTER, style="dim")
    text.append(f"  sort: {ui.sort}", style="bold")
    if ui.editing or ui.filter:
        text.append(f"  filter: {ui.filter}{'▏' if ui.editing else ''}", style="bold cyan")
    text.append(f"  every {ui.refresh_s:g}s")
    return text


# --- formatting --------------------------------------------------------------------------------


def _num(value, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def human_bytes(value) -> str:
    if value is None:
        return "-"
    for unit in ("B", "Ki", "Mi", "Gi"):
        if abs(value) < 1024 or unit == "Gi":
            return f"{value:.0f}{unit}" if unit == "B" else f"{value:.1f}{unit}"
        value /= 1024
    return "-"


def nanos(value) -> str:
    if value is None:
        return "-"
    for unit, scale in (("s", 1e9), ("ms", 1e6), ("µs", 1e3)):
        if value >= scale:
            return f"{value / scale:.1f}{unit}"
    return f"{value:.0f}ns"


def duration(seconds: float) -> str:
    seconds = int(seconds)
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"


def ago(time_ns: int, now_ns: int) -> str:
    if not time_ns:
        return "?"
    return duration(max(now_ns - time_ns, 0) / 1e9) + " ago"


def clock(time_ns: int) -> str:
    return time.strftime("%H:%M:%S", time.localtime(time_ns / 1e9)) if time_ns else "--:--:--"
