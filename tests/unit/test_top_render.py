"""observe-rt top: the screen is a pure function of a frame, rendered into a fixed-size console."""

from __future__ import annotations

import re
from dataclasses import replace

from rich.console import Console

from observe_rt.top.model import LastExit, UiState, failed
from observe_rt.top.render import render
from tests.support.top_sample import NOW_NS, SECOND, sample_frame

WIDTH, HEIGHT = 150, 40


def screen(frame, ui: UiState, width: int = WIDTH, height: int = HEIGHT) -> list[str]:
    console = Console(width=width, height=height, record=True, color_system=None,
                      force_terminal=False, legacy_windows=False)  # fmt: skip
    console.print(render(frame, ui, height))
    return console.export_text().rstrip("\n").split("\n")


def table_names(lines: list[str]) -> list[str]:
    return [line.split()[1] for line in lines if line.startswith("│ demo/")]


def test_screen_has_exactly_the_console_height_and_every_part():
    lines = screen(sample_frame(), UiState(selected="demo/tcp-client/client"))
    text = "\n".join(lines)
    assert len(lines) == HEIGHT
    assert all(len(line) <= WIDTH for line in lines)
    assert "node CPU 62% of 2 cores  mem 2.0Gi/8.0Gi (25%)" in text
    assert "pods ready 3  containers exited 1 running 4" in text
    assert "probes oom process syscalls tcp  events lost 0  daemon up 2m05s" in text
    assert "containers (4/4)" in text
    assert "detail: demo/tcp-client/client" in text
    assert "sort: cpu" in lines[-1] and "q quit" in lines[-1]


def test_rows_in_cpu_order_with_their_figures():
    lines = screen(sample_frame(), UiState())
    names = table_names(lines)
    assert names[0] == "demo/shop/cpu-burner"
    burner = next(line for line in lines if "cpu-burner" in line).split()
    # name, state, restarts, CPU%, CPU%LIM, MEM ...
    assert burner[1:7] == ["demo/shop/cpu-burner", "running", "0", "25.0", "100", "1.0Mi"]
    hog = next(line for line in lines if "memory-hog" in line).split()
    assert hog[2:4] == ["running", "1"]  # one restart
    assert hog[7:10] == ["83", "1", "9000"]  # MEM%LIM, OOM kills, syscalls/s


def test_detail_pane_shows_syscalls_flows_execs_and_last_exit():
    frame = sample_frame()
    client = screen(frame, UiState(selected="demo/tcp-client/client"))
    text = "\n".join(client)
    assert "openat" in text and "ENOENT:30" in text
    assert "flow 2s ago active 10.9.0.4:41000 → 10.9.0.3:8080 ↑83B ↓256.2Ki 4.0ms" in text
    assert "exec 1s ago  pid 77 /bin/wget" in text
    exit_ = LastExit("hog0", 0, "OOMKilled", 137, "OOM killer stopped pid 4242 (sh)",
                     NOW_NS - 19 * SECOND)  # fmt: skip
    hog = "\n".join(screen(replace(frame, last_exit=exit_),
                           UiState(selected="demo/shop/memory-hog")))  # fmt: skip
    assert "OOM  20s ago  OOM killer stopped pid 4242 (sh), rss 49 MiB" in hog
    assert "exit 19s ago  attempt 0: OOMKilled code 137" in hog


def test_events_ticker_newest_first():
    lines = screen(sample_frame(), UiState())
    kinds = [m.group(1) for line in lines if (m := re.match(r"│ \d\d:\d\d:\d\d (\w+)", line))]
    assert kinds == ["RESTART", "EXIT", "OOM"]


def test_small_screen_scrolls_to_keep_the_selection_visible():
    ui = UiState(sort="name", selected="demo/tcp-server/server", detail=False)
    lines = screen(sample_frame(), ui, height=18)
    assert len(lines) == 18
    names = table_names(lines)
    assert names[-1] == "demo/tcp-server/server" and len(names) < 4


def test_filter_and_hidden_detail():
    lines = screen(sample_frame(), UiState(filter="tcp-", detail=False, editing=True))
    assert table_names(lines) == ["demo/tcp-client/client", "demo/tcp-server/server"]
    assert "containers (2/4)" in "\n".join(lines)
    assert not any("detail:" in line for line in lines)
    assert "filter: tcp-" in lines[-1]


def test_daemon_down_keeps_the_last_frame_and_says_so():
    frame = failed(sample_frame(), "http://127.0.0.1:9464/api/v1/view: Connection refused", 0)
    lines = screen(frame, UiState())
    assert "daemon unreachable: http://127.0.0.1:9464/api/v1/view: Connection refused" in lines[-1]
    assert "(retrying)" in lines[-1]
    assert table_names(lines)[0] == "demo/shop/cpu-burner"


def test_empty_frame_renders():
    from observe_rt.top.model import Frame

    lines = screen(Frame(error="connection refused"), UiState())
    text = "\n".join(lines)
    assert len(lines) == HEIGHT
    assert "containers (0/0)" in text and "probes off" in text


def test_narrow_terminal_drops_columns_from_the_right_before_cutting_names():
    lines = screen(sample_frame(), UiState(sort="name"), width=80)
    assert all(len(line) <= 80 for line in lines)
    heading = next(line for line in lines if "NAMESPACE/POD/CONTAINER" in line)
    assert "MEM%LIM" in heading and "TX/s" not in heading and "TOP SYSCALL" not in heading
    assert table_names(lines) == ["demo/shop/cpu-burner", "demo/shop/memory-hog",
                                  "demo/tcp-client/client", "demo/tcp-server/server"]  # fmt: skip
