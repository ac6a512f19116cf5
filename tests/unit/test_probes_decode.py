"""Decoding of map entries and event records, built with ctypes mirrors of the C structs.

ctypes lays structures out like the C compiler (natural alignment), so these mirrors check
the struct formats in the probe modules independently of them.
"""

from __future__ import annotations

import ctypes as ct
import socket
import sys

from observe_rt.probes import histogram, oom, process, syscalls, tcp
from observe_rt.probes.events import ContainerCounters, SyscallStats
from observe_rt.probes.loader import _raw
from observe_rt.probes.syscall_names import syscall_name


class ScKey(ct.Structure):
    _fields_ = [("cgroup_id", ct.c_uint64), ("nr", ct.c_uint32), ("pad", ct.c_uint32)]


class ScStats(ct.Structure):
    _fields_ = [
        ("calls", ct.c_uint64),
        ("errors", ct.c_uint64),
        ("total_ns", ct.c_uint64),
        ("hist", ct.c_uint64 * histogram.SLOTS),
    ]


class OomKill(ct.Structure):
    _fields_ = [
        ("kill_ns", ct.c_uint64),
        ("trigger_cgroup_id", ct.c_uint64),
        ("total_vm_kb", ct.c_uint64),
        ("anon_rss_kb", ct.c_uint64),
        ("file_rss_kb", ct.c_uint64),
        ("shmem_rss_kb", ct.c_uint64),
        ("victim_pid", ct.c_uint32),
        ("trigger_pid", ct.c_uint32),
        ("comm", ct.c_char * 16),
    ]


class OomEvent(ct.Structure):
    _fields_ = [("kill", OomKill), ("victim_cgroup_id", ct.c_uint64), ("exit_ns", ct.c_uint64)]


class FlowEvent(ct.Structure):
    _fields_ = [
        ("close_ns", ct.c_uint64),
        ("cgroup_id", ct.c_uint64),
        ("duration_ns", ct.c_uint64),
        ("bytes_sent", ct.c_uint64),
        ("bytes_received", ct.c_uint64),
        ("retransmits", ct.c_uint32),
        ("resets", ct.c_uint32),
        ("states", ct.c_uint32),
        ("direction", ct.c_uint32),
        ("family", ct.c_uint16),
        ("sport", ct.c_uint16),
        ("dport", ct.c_uint16),
        ("pad", ct.c_uint16),
        ("saddr", ct.c_uint8 * 16),
        ("daddr", ct.c_uint8 * 16),
    ]


class ExecEvent(ct.Structure):
    _fields_ = [
        ("kind", ct.c_uint32),
        ("pid", ct.c_uint32),
        ("time_ns", ct.c_uint64),
        ("cgroup_id", ct.c_uint64),
        ("old_pid", ct.c_uint32),
        ("pad", ct.c_uint32),
        ("comm", ct.c_char * 16),
        ("filename", ct.c_char * process.FILENAME_LEN),
    ]


class ExitEvent(ct.Structure):
    _fields_ = [
        ("kind", ct.c_uint32),
        ("pid", ct.c_uint32),
        ("time_ns", ct.c_uint64),
        ("cgroup_id", ct.c_uint64),
        ("status", ct.c_int32),
        ("pad", ct.c_uint32),
        ("comm", ct.c_char * 16),
    ]


def test_sizes_match_the_c_structs():
    assert syscalls.STATS_KEY.size == ct.sizeof(ScKey)
    assert syscalls.STATS_VALUE.size == ct.sizeof(ScStats)
    assert oom.EVENT.size == ct.sizeof(OomEvent)
    assert oom.KILL.size == ct.sizeof(OomKill)
    assert tcp.FLOW_EVENT.size == ct.sizeof(FlowEvent) == 96
    assert process.EXEC.size == ct.sizeof(ExecEvent)
    assert process.EXIT.size == ct.sizeof(ExitEvent)


def test_syscall_stats_and_errors():
    stats = ScStats(calls=23, errors=23, total_ns=4600)
    stats.hist[8] = 23
    cgroup_id, decoded = syscalls.decode_stats(bytes(ScKey(42, 257)), bytes(stats))
    assert cgroup_id == 42
    assert decoded == SyscallStats(257, 23, 23, 4600, tuple([0] * 8 + [23] + [0] * 23))
    assert decoded.name == syscall_name(257)
    assert decoded.returned == 23
    error = syscalls.decode_error(bytes(ScKey(42, 257, 2)), (23).to_bytes(8, "little"))
    assert error == (42, 257, 2, 23)


def test_oom_event_is_charged_to_the_victim_cgroup():
    kill = OomKill(1000, 7, 33884, 32640, 548, 0, 4242, 4243, b"memhog")
    event = oom.decode_event(bytes(OomEvent(kill, 9, 2000)), offset_ns=10)
    assert event.cgroup_id == 9 and event.trigger_cgroup_id == 7
    assert (event.victim_pid, event.trigger_pid, event.victim_comm) == (4242, 4243, "memhog")
    assert event.time_ns == 1010
    assert event.rss_kb == 32640 + 548
    assert event.attribution == "victim"


class FakeMap:
    def __init__(self, entries=None):
        self.entries = dict(entries or {})

    def items(self):
        return list(self.entries.items())

    def __iter__(self):
        return iter(list(self.entries))

    def delete(self, key):
        return self.entries.pop(key, None) is not None


class FakeProgram:
    def __init__(self, **maps):
        self.maps = {name: FakeMap(entries) for name, entries in maps.items()}

    def map(self, name):
        return self.maps[name]


def test_stale_kills_are_flushed_once_by_trigger_cgroup():
    young = OomKill(9_000, 7, 0, 0, 0, 0, 1, 2, b"young")
    old = OomKill(1_000, 7, 0, 0, 0, 0, 3, 4, b"old")
    untracked = OomKill(1_000, 8, 0, 0, 0, 0, 5, 6, b"host")
    pid = oom.PID_KEY.pack
    program = FakeProgram(
        oom_pending={pid(1): bytes(young), pid(3): bytes(old), pid(5): bytes(untracked)}
    )
    kills = oom.flush_stale(program, now_ns=10_000, max_age_ns=5_000, tracked={7}, offset_ns=0)
    assert [(k.victim_pid, k.cgroup_id, k.attribution) for k in kills] == [(3, 7, "trigger")]
    assert list(program.maps["oom_pending"]) == [pid(1)]  # the host kill is dropped too
    assert oom.flush_stale(program, 10_000, 5_000, {7}, 0) == []


def flow(family: int, saddr: bytes, daddr: bytes, **kw) -> bytes:
    event = FlowEvent(family=family, **kw)
    ct.memmove(event.saddr, saddr, len(saddr))
    ct.memmove(event.daddr, daddr, len(daddr))
    return bytes(event)


def test_flow_events_v4_and_v6():
    record = flow(
        socket.AF_INET, bytes([127, 0, 0, 1]), bytes([10, 1, 2, 3]),
        close_ns=500, cgroup_id=5, duration_ns=300, bytes_sent=100_000, bytes_received=50_000,
        retransmits=2, resets=1, states=(1 << 2) | (1 << 1) | (1 << 7), direction=1,
        sport=40000, dport=8080,
    )  # fmt: skip
    event = tcp.decode_event(record, offset_ns=1)
    assert (event.saddr, event.sport, event.daddr, event.dport) == (
        "127.0.0.1", 40000, "10.1.2.3", 8080,
    )  # fmt: skip
    assert event.direction == "active" and event.time_ns == 501
    assert (event.bytes_sent, event.bytes_received, event.duration_ns) == (100_000, 50_000, 300)
    assert event.states == ("ESTABLISHED", "SYN_SENT", "CLOSE")
    local, remote = (socket.inet_pton(socket.AF_INET6, a) for a in ("::1", "fd00::2"))
    v6 = tcp.decode_event(flow(socket.AF_INET6, local, remote, direction=2))
    assert (v6.saddr, v6.daddr, v6.direction) == ("::1", "fd00::2", "passive")


def test_tcp_totals():
    totals = tcp.decode_totals(tcp.TOTALS.pack(1, 2, 3, 4, 5, 6, 7))
    assert totals.bytes_sent == 1 and totals.connections_passive == 7


def test_process_events_and_exit_status():
    exec_record = ExecEvent(1, 77, 100, 5, 76, 0, b"sh", b"/bin/sh")
    event = process.decode_event(bytes(exec_record), offset_ns=0)
    assert (event.pid, event.old_pid, event.comm, event.filename) == (77, 76, "sh", "/bin/sh")
    exited = process.decode_event(bytes(ExitEvent(2, 77, 200, 5, 3 << 8, 0, b"sh")))
    assert (exited.exit_code, exited.signal) == (3, None)
    killed = process.decode_event(bytes(ExitEvent(2, 77, 200, 5, 9, 0, b"sh")))
    assert (killed.exit_code, killed.signal) == (None, 9)
    unknown = process.decode_event(bytes(ExitEvent(2, 77, 200, 5, -1, 0, b"sh")))
    assert (unknown.exit_code, unknown.signal) == (None, None)
    assert process.decode_event(bytes(ExitEvent(kind=9))) is None


def test_raw_bytes_of_batch_entries():
    # A batch lookup yields plain ints for u64 keys/values and ctypes objects for structs.
    assert _raw(ct.c_uint64, 7) == (7).to_bytes(8, sys.byteorder)
    assert _raw(ScKey, ScKey(1, 2)) == bytes(ScKey(1, 2))


def test_container_counters_helpers():
    counters = ContainerCounters(
        5,
        syscalls={1: SyscallStats(1, calls=10), 0: SyscallStats(0, calls=30)},
        syscall_errors={(2, 2): 4},
    )
    assert counters.calls(1) == 10 and counters.calls(99) == 0
    assert counters.errors(2, 2) == 4 and counters.errors(2, 13) == 0
    assert [s.nr for s in counters.top_syscalls(1)] == [0]
    assert counters.named_errors() == {(syscall_name(2), "ENOENT"): 4}
