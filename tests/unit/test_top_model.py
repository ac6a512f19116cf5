"""observe-rt top: rows from the daemon's view + the CRI listing, sorting, filtering, keys."""

from __future__ import annotations

from dataclasses import replace

from observe_rt.top import keys
from observe_rt.top.model import CriListing, UiState, build_frame, selected_row, visible_rows
from tests.support.top_sample import NOW_NS, sample_doc, sample_frame, sample_listing


def test_one_row_per_container_name_with_restarts_and_ooms_over_attempts():
    frame = sample_frame()
    rows = {r.key: r for r in frame.rows}
    assert sorted(rows) == ["demo/shop/cpu-burner", "demo/shop/memory-hog",
                            "demo/tcp-client/client", "demo/tcp-server/server"]  # fmt: skip
    hog = rows["demo/shop/memory-hog"]
    assert (hog.container_id, hog.restarts, hog.attempts) == ("hog1", 1, ("hog1", "hog0"))
    assert hog.oom_kills == 1  # attempt 0's kill, from the events (its cgroup is gone)
    assert round(hog.memory_limit_percent) == 83  # 40 of 48 MiB
    burner = rows["demo/shop/cpu-burner"]
    assert (burner.cpu_percent, burner.cpu_limit_percent) == (25.0, 100.0)  # 0.5 of 2 cores
    assert rows["demo/tcp-client/client"].tcp_connections == 12


def test_exited_container_keeps_its_cri_state_without_live_figures():
    doc = sample_doc()
    doc["containers"] = [c for c in doc["containers"] if c["id"] != "server0"]
    listing = sample_listing()
    exited = tuple(
        replace(c, state="EXITED") if c.id == "server0" else c for c in listing.containers
    )
    listing = replace(listing, containers=exited)
    server = next(r for r in build_frame(doc, listing, NOW_NS).rows if r.name == "server")
    assert server.state == "EXITED"
    assert server.cpu_percent is None and server.memory_bytes is None


def test_without_the_cri_rows_come_from_the_view_alone():
    frame = build_frame(sample_doc(), CriListing(error="socket: UNAVAILABLE"), NOW_NS)
    assert frame.cri_error == "socket: UNAVAILABLE"
    assert {r.name for r in frame.rows} == {"cpu-burner", "memory-hog", "client", "server"}


def test_sorts_and_filter():
    frame = sample_frame()
    by = {sort: [r.name for r in visible_rows(frame, UiState(sort=sort))] for sort in
          ("cpu", "mem", "syscalls", "errors", "oom", "net", "name")}  # fmt: skip
    assert by["cpu"][0] == "cpu-burner"
    assert by["mem"][0] == "memory-hog"
    assert by["syscalls"][0] == "memory-hog"
    assert by["errors"][0] == "client"
    assert by["oom"][0] == "memory-hog"
    assert by["net"][0] == "client"
    assert by["name"] == ["cpu-burner", "memory-hog", "client", "server"]
    assert [r.name for r in visible_rows(frame, UiState(filter="TCP-"))] == ["client", "server"]
    assert visible_rows(frame, UiState(filter="nothing-matches")) == []


def test_keys_decode_arrows_and_plain_bytes():
    assert keys.decode(b"\x1b[Aj\x1b[B/\r\x1bq") == ["up", "j", "down", "/", "enter", "escape",
                                                    "q"]  # fmt: skip


def test_keys_move_sort_filter_detail_quit():
    rows = visible_rows(sample_frame(), UiState(sort="name"))
    ui = UiState(sort="name", selected=rows[0].key)
    ui = keys.handle(ui, "j", rows)
    assert ui.selected == rows[1].key
    ui = keys.handle(keys.handle(ui, "down", rows), "down", rows)
    assert keys.handle(ui, "down", rows).selected == rows[-1].key  # stops at the end
    assert keys.handle(ui, "k", rows).selected == rows[2].key
    assert keys.handle(UiState(sort="cpu"), "s", rows).sort == "mem"
    assert keys.handle(UiState(sort="name"), "s", rows).sort == "cpu"  # wraps around
    editing = keys.handle(ui, "/", rows)
    assert editing.editing
    for key in "hog":
        editing = keys.handle(editing, key, rows)
    assert keys.handle(editing, "q", rows).filter == "hogq"  # q is text while typing
    kept = keys.handle(keys.handle(editing, "backspace", rows), "enter", rows)
    assert (kept.filter, kept.editing) == ("ho", False)
    assert keys.handle(kept, "escape", rows).filter == ""
    assert keys.handle(kept, "enter", rows).detail is not kept.detail
    assert keys.handle(kept, "q", rows) == keys.QUIT
    assert keys.handle(editing, "ctrl-c", rows) == keys.QUIT


def test_selection_falls_back_to_the_first_row():
    rows = visible_rows(sample_frame(), UiState())
    assert selected_row(rows, UiState(selected="gone/row/x")) == rows[0]
    assert selected_row([], UiState()) is None
