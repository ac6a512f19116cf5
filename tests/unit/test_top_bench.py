"""`observe-rt bench top`: options, the command line that reproduces a run, and the table."""

from __future__ import annotations

from observe_rt.bench import top
from tests.support.bench import assert_rejected, parse, rendered


def _entry(cpu_ms: float, window_s: float = 30.0) -> dict:
    return {"window_s": window_s, "cpu_ms": cpu_ms, "cpu_ms_per_s": round(cpu_ms / window_s, 3),
            "clock_tick_ms": 10.0}  # fmt: skip


def test_options_and_command_line():
    args = parse("top")
    assert (args.containers, args.seconds, args.refresh, args.json) == (100, 30, 1.0, False)
    assert top.command_line(args) == "observe-rt bench top --containers 100"
    args = parse("top", "--containers", "5", "--seconds", "3", "--refresh", "0.5")
    assert top.command_line(args) == (
        "observe-rt bench top --containers 5 --seconds 3 --refresh 0.5"
    )
    assert_rejected("top", ["--containers", "0"], ["--seconds", "x"], ["--refresh", "fast"])


def test_table_shows_cpu_per_second_and_share_of_a_core():
    report = {"containers": 100, "refresh_s": 1.0, "screen": [50, 160], "top": _entry(300.0),
              "daemon_idle": _entry(3600.0), "daemon_with_top": _entry(4200.0),
              "command": "observe-rt bench top --containers 100"}  # fmt: skip
    text = rendered(top.render, report, 120)
    assert "100 containers, top refreshing every 1s on a 160x50 terminal" in text
    assert "observe-rt top" in text and "10.0" in text and "1.00%" in text
    assert "daemon, nobody watching" in text and "120.0" in text and "12.00%" in text
    assert "daemon, top watching" in text and "140.0" in text and "14.00%" in text
    assert "Measured by: observe-rt bench top --containers 100" in text
