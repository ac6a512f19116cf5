"""`observe-rt top` command: options, --once and --json output, and the daemon-down answers
(a fake source for --once; a closed loopback port for the real fetch)."""

from __future__ import annotations

import io
import socket

import pytest

from observe_rt import cli
from observe_rt.top import app
from observe_rt.top.model import Frame, UiState, failed
from observe_rt.top.source import DaemonDown, fetch_view
from tests.support.top_sample import sample_frame


class FakeSource:
    def __init__(self, frame: Frame) -> None:
        self.frame = frame
        self.selected = []

    def fetch(self, previous, selected=None):
        self.selected.append(selected.key if selected else None)
        return self.frame


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_options():
    args = cli.build_parser().parse_args(["top", "--refresh", "0.5", "--sort", "mem", "--once"])
    assert (args.refresh, args.sort, args.once, args.json) == (0.5, "mem", True, False)
    for bad in (["--refresh", "0"], ["--refresh", "soon"], ["--sort", "size"],
                ["--once", "--json"]):  # fmt: skip
        with pytest.raises(SystemExit):
            cli.build_parser().parse_args(["top", *bad])


def test_once_prints_every_row_and_the_first_rows_detail(capsys):
    source = FakeSource(sample_frame())
    assert app.print_once(source, UiState(sort="name")) == 0
    out = capsys.readouterr().out
    for key in ("demo/shop/cpu-burner", "demo/shop/memory-hog", "demo/tcp-client/client",
                "demo/tcp-server/server"):  # fmt: skip
        assert key in out
    assert "detail: demo/shop/cpu-burner" in out
    assert source.selected == [None, "demo/shop/cpu-burner"]  # second look: its last exit


def test_once_with_the_daemon_down_says_so(capsys):
    source = FakeSource(failed(Frame(), "http://127.0.0.1:1/api/v1/view: refused", 0))
    assert app.print_once(source, UiState()) == 1
    assert "refused" in capsys.readouterr().err


def test_json_and_fetch_with_nothing_listening(capsys):
    api = f"http://127.0.0.1:{_closed_port()}"
    with pytest.raises(DaemonDown, match="is `observe-rt daemon` running"):
        fetch_view(api, timeout=5)
    assert cli.main(["top", "--json", "--api", api]) == 1
    assert "is `observe-rt daemon` running" in capsys.readouterr().err


def test_selection_follows_the_first_row_until_one_is_picked():
    frame = sample_frame()
    assert app._keep_selection(frame, UiState()).selected == "demo/shop/cpu-burner"
    picked = UiState(selected="demo/tcp-server/server")
    assert app._keep_selection(frame, picked) == picked


def test_without_a_terminal_keys_only_wait():
    with app.cbreak(io.StringIO()) as read_keys:
        assert read_keys(0.01) == []
