"""ProbeManager's plan-compile-attach flow and its degraded modes, on a fake bcc program."""

from __future__ import annotations

import struct
from pathlib import Path

import pytest

from observe_rt.probes import loader, manager, oom, process, tcp
from observe_rt.probes.manager import LAYOUTS, SPECS, ProbeManager
from observe_rt.probes.syscalls import STATS_KEY, STATS_VALUE

SIZES = {name: size for layout in LAYOUTS.values() for name, size in layout.items()}


class FakeMap:
    def __init__(self, name: str) -> None:
        self.key_size, self.value_size = SIZES.get(name, (8, 8))
        self.entries: dict[bytes, bytes] = {}

    def items(self):
        return list(self.entries.items())

    def __iter__(self):
        return iter(list(self.entries))

    def get(self, key):
        return self.entries.get(key)

    def set(self, key, value):
        self.entries[key] = value

    def delete(self, key):
        return self.entries.pop(key, None) is not None


class FakeProgram:
    built: list[FakeProgram] = []
    fail_when: str | None = None  # compiling a text containing this fails

    def __init__(self, text: str, cflags: list[str]) -> None:
        FakeProgram.built.append(self)
        if self.fail_when and self.fail_when in text:
            raise loader.BccUnavailable("BPF compile/load failed: boom")
        self.text, self.cflags = text, cflags
        self.maps: dict[str, FakeMap] = {}
        self.attached: list[tuple[str, str]] = []
        self.handlers: dict = {}
        self.queued: list[tuple[str, bytes]] = []
        self.closed = False

    def attach(self, tracepoint, function, raw=False):
        self.attached.append((tracepoint, function))

    def detach(self, functions):
        names = set(functions)
        self.attached = [a for a in self.attached if a[1] not in names]

    def map(self, name):
        return self.maps.setdefault(name, FakeMap(name))

    def open_events(self, name, handle, ringbuf, perf_pages=64):
        self.handlers[name] = handle

    def poll(self, timeout_ms):
        for name, record in self.queued:
            self.handlers[name](record)
        self.queued.clear()

    def close(self):
        self.closed = True


def write_tracefs(root: Path, missing: tuple[str, ...] = ()) -> Path:
    wanted: dict[str, set[str]] = {}
    for spec in SPECS.values():
        for hook in spec.hooks:
            wanted.setdefault(hook.tracepoint, set()).update(hook.fields)
        for feature in spec.features:
            wanted.setdefault(feature.tracepoint, set()).update(feature.fields)
    for name, fields in wanted.items():
        if name in missing:
            continue
        directory = root / "events" / name.replace(":", "/")
        directory.mkdir(parents=True)
        lines = [
            f"\tfield:u64 {field};\toffset:{8 + 8 * i};\tsize:8;\tsigned:0;"
            for i, field in enumerate(sorted(fields))
        ]
        (directory / "format").write_text("format:\n" + "\n".join(lines) + "\n")
    return root


@pytest.fixture
def fake_bcc(monkeypatch):
    FakeProgram.built = []
    FakeProgram.fail_when = None
    monkeypatch.setattr(loader, "import_bcc", lambda: object())
    monkeypatch.setattr(loader, "ringbuf_supported", lambda: True)
    monkeypatch.setattr(loader, "Program", FakeProgram)
    return FakeProgram


def make(tmp_path, missing=(), **kw) -> ProbeManager:
    tracefs = write_tracefs(tmp_path / "tracing", missing)
    return ProbeManager(tracefs=tracefs, prepare_host=False, **kw)


def key(cgroup_id: int) -> bytes:
    return struct.pack("=Q", cgroup_id)


def test_without_bcc_everything_still_answers(monkeypatch, tmp_path):
    def no_bcc():
        raise loader.BccUnavailable("cannot import bcc: ModuleNotFoundError: No module named 'bcc'")

    monkeypatch.setattr(loader, "import_bcc", no_bcc)
    probes = make(tmp_path)
    status = probes.start()
    assert not status.available and "cannot import bcc" in status.reason
    assert [p.name for p in status.probes] == ["syscalls", "oom", "tcp", "process"]
    assert all(not p.up and "cannot import bcc" in p.reason for p in status.probes)
    probes.track(5)
    counters = probes.drain_counters()
    assert list(counters) == [5] and counters[5].syscalls == {}
    assert probes.poll_events(10) == []
    assert probes.lost_events() == dict.fromkeys(SPECS, 0)
    probes.untrack(5)
    probes.stop()


def test_start_compiles_once_and_attaches_every_hook(fake_bcc, tmp_path):
    probes = make(tmp_path)
    probes.track(7)  # before start: written to the map at load
    status = probes.start()
    assert status.available and status.output == "ringbuf"
    assert all(p.up for p in status.probes), status
    assert len(fake_bcc.built) == 1
    program = fake_bcc.built[0]
    assert "-DUSE_RINGBUF" in program.cflags
    attached = {function for _, function in program.attached}
    assert {"sc_enter", "oom_victim_exit", "proc_exit", "tcp_destroy"} <= attached
    assert ("sched:sched_process_exit", "oom_victim_exit") in program.attached
    assert ("sched:sched_process_exit", "proc_exit") in program.attached
    assert program.map("tracked").entries == {key(7): b"\x01"}
    assert probes.start() is status  # idempotent
    probes.stop()
    assert program.closed and not probes.status().available


def test_a_probe_that_does_not_compile_is_dropped_alone(fake_bcc, tmp_path):
    fake_bcc.fail_when = '#line 1 "tcpflow.c"'
    status = make(tmp_path).start()
    assert status.available
    states = {p.name: p for p in status.probes}
    assert not states["tcp"].up and "boom" in states["tcp"].reason
    assert states["syscalls"].up and states["oom"].up and states["process"].up
    final = fake_bcc.built[-1]
    assert "tcpflow.c" not in final.text and '#line 1 "oomkill.c"' in final.text


def test_missing_tracepoint_disables_only_its_probe(fake_bcc, tmp_path):
    status = make(tmp_path, missing=("oom:mark_victim", "sock:sock_send_length")).start()
    states = {p.name: p for p in status.probes}
    assert not states["oom"].up and "oom:mark_victim not found" in states["oom"].reason
    assert states["tcp"].up and any("tcp_send_length" in n for n in states["tcp"].notes)
    assert "oomkill.c" not in fake_bcc.built[-1].text


def test_no_probe_left(fake_bcc, tmp_path):
    probes = make(tmp_path, missing=("raw_syscalls:sys_enter",), enabled=("syscalls",))
    status = probes.start()
    assert not status.available and "no probe can load" in status.reason
    assert fake_bcc.built == []


def test_perf_output_when_asked(fake_bcc, tmp_path):
    status = make(tmp_path, output="perf").start()
    assert status.output == "perf"
    assert "-DUSE_RINGBUF" not in fake_bcc.built[0].cflags


def test_counters_only_for_tracked_and_purged_on_untrack(fake_bcc, tmp_path):
    probes = make(tmp_path)
    probes.start()
    program = fake_bcc.built[0]
    stats = STATS_VALUE.pack(23, 0, 100, *([0] * 32))
    program.map("sc_stats").set(STATS_KEY.pack(7, 309, 0), stats)
    program.map("sc_stats").set(STATS_KEY.pack(8, 309, 0), stats)  # leftover, untracked
    program.map("tcp_totals").set(key(7), tcp.TOTALS.pack(100, 50, 0, 0, 0, 1, 0))
    probes.track(7)
    counters = probes.drain_counters()
    assert list(counters) == [7]
    assert counters[7].calls(309) == 23 and counters[7].tcp.bytes_sent == 100
    assert probes.counted_cgroups() == {7, 8}
    probes.untrack(7)
    assert key(7) not in program.map("tracked").entries
    assert probes.counted_cgroups() == {8}
    assert probes.drain_counters() == {}


def test_events_are_decoded_sorted_and_bad_records_counted(fake_bcc, tmp_path):
    probes = make(tmp_path)
    probes.start()
    program = fake_bcc.built[0]
    exit_late = process.EXIT.pack(2, 10, 2_000, 7, 0, 0, b"true")
    kill_early = oom.EVENT.pack(1_000, 7, 1, 2, 3, 4, 10, 11, b"hog", 7, 1_500)
    program.queued += [("proc_events", exit_late), ("oom_events", kill_early)]
    program.queued.append(("proc_events", struct.pack("=I", 99) + bytes(60)))  # unknown kind
    program.queued.append(("tcp_events", b"short"))  # undecodable
    events = probes.poll_events(0)
    assert [type(e).__name__ for e in events] == ["OomKill", "ProcessExit"]
    lost = probes.lost_events()
    assert lost["process"] == 1 and lost["tcp"] == 1 and lost["oom"] == 0


def test_lost_events_sum_the_cpus(fake_bcc, tmp_path):
    probes = make(tmp_path)
    probes.start()
    lost_map = fake_bcc.built[0].map("lost_events")
    lost_map.set(struct.pack("=I", 2), struct.pack("=2Q", 3, 4))  # tcp, two CPUs
    assert probes.lost_events()["tcp"] == 7


def test_unknown_probe_name():
    with pytest.raises(ValueError, match="unknown probe"):
        ProbeManager(enabled=("syscalls", "disk"))


def test_manager_module_keeps_probe_ids_in_step_with_common_h():
    common = (loader.BPF_DIR / "common.h").read_text()
    for name, index in manager.PROBE_IDS.items():
        assert f"#define PROBE_{name.upper()} {index}" in common
