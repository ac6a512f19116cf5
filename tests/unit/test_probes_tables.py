"""Syscall name tables, errno names and the log2 latency histogram math (no kernel)."""

from __future__ import annotations

import math

import pytest

from observe_rt.probes import histogram
from observe_rt.probes.syscall_names import (
    MACHINES,
    errno_name,
    numbers,
    syscall_name,
    table,
)


@pytest.mark.parametrize(
    ("machine", "nr", "name"),
    [
        ("x86_64", 0, "read"),
        ("x86_64", 2, "open"),
        ("x86_64", 59, "execve"),
        ("x86_64", 231, "exit_group"),
        ("x86_64", 257, "openat"),
        ("x86_64", 309, "getcpu"),
        ("x86_64", 334, "rseq"),
        ("x86_64", 435, "clone3"),
        ("x86_64", 469, "file_setattr"),
        ("aarch64", 56, "openat"),
        ("aarch64", 63, "read"),
        ("aarch64", 79, "newfstatat"),
        ("aarch64", 94, "exit_group"),
        ("aarch64", 168, "getcpu"),
        ("aarch64", 173, "getppid"),
        ("aarch64", 221, "execve"),
        ("aarch64", 260, "wait4"),
        ("aarch64", 435, "clone3"),
    ],
)
def test_known_numbers(machine, nr, name):
    assert syscall_name(nr, machine) == name
    assert numbers(machine)[name] == nr


def test_tables_are_complete_and_unique():
    assert len(table("x86_64")) > 370
    assert len(table("aarch64")) > 320
    for machine in MACHINES:
        names = list(table(machine).values())
        assert len(names) == len(set(names)), machine
    # aarch64 has no legacy open(2): libc's open() is openat there.
    assert "open" not in numbers("aarch64")
    # the gap x86_64 keeps for x32 and the arch-specific aarch64 range stay unnamed
    assert 400 not in table("x86_64")
    assert 250 not in table("aarch64")


def test_unknown_numbers_and_machines():
    assert syscall_name(9999, "x86_64") == "syscall_9999"
    assert table("sparc") == {}
    assert syscall_name(1, "sparc") == "syscall_1"


def test_errno_names():
    assert errno_name(2) == "ENOENT"
    assert errno_name(13) == "EACCES"
    assert errno_name(512) == "ERESTARTSYS"
    assert errno_name(4000) == "E4000"


# --- histogram ----------------------------------------------------------------------


def bpf_log2l(v: int) -> int:
    """bcc's helper, transcribed: floor(log2) of the high or low 32 bits, plus one."""

    def log2(x: int) -> int:
        return x.bit_length() - 1 if x else 0

    hi = v >> 32
    return log2(hi) + 32 + 1 if hi else log2(v) + 1


@pytest.mark.parametrize("ns", [0, 1, 2, 3, 4, 7, 8, 1000, 2**31, 2**32 - 1, 2**32, 2**40])
def test_slot_matches_bcc_log2l(ns):
    assert histogram.slot_of(ns) == min(bpf_log2l(ns), histogram.SLOTS - 1)


def test_slot_bounds():
    # slot k holds latencies below 2**k ns
    for ns in (1, 5, 999, 123_456, 2**29):
        slot = histogram.slot_of(ns)
        assert ns < histogram.upper_bound_ns(slot)
        assert slot == 1 or ns >= histogram.upper_bound_ns(slot - 1)
    assert histogram.upper_bound_ns(histogram.SLOTS - 1) == math.inf
    assert histogram.slot_of(10**12) == histogram.SLOTS - 1


def test_cumulative_buckets_end_with_total():
    counts = [0] * histogram.SLOTS
    counts[histogram.slot_of(500)] = 3  # 500 ns -> below 512 ns
    counts[histogram.slot_of(3_000_000)] = 2
    counts[-1] = 1  # overflow
    buckets = histogram.cumulative_buckets(counts)
    assert len(buckets) == histogram.SLOTS - 1
    assert buckets[-1] == (math.inf, 6)
    le_512ns = dict(buckets)[512 / 1e9]
    assert le_512ns == 3
    values = [count for _, count in buckets]
    assert values == sorted(values)
    exported = histogram.cumulative_buckets(counts, histogram.EXPORT_SLOTS)
    assert [le for le, _ in exported[:2]] == [2**10 / 1e9, 2**12 / 1e9]  # 1 us, 4 us
    assert exported[0][1] == 3 and exported[-1] == (math.inf, 6)


def test_quantile_and_merge():
    counts = [0] * histogram.SLOTS
    counts[10] = 90  # < 1024 ns
    counts[20] = 10  # < ~1 ms
    assert histogram.quantile_ns(counts, 0.5) == 1024
    assert histogram.quantile_ns(counts, 0.99) == 2**20
    assert histogram.quantile_ns([0] * 4, 0.5) == 0
    assert histogram.merge([1, 2], [3, 4, 5]) == (4, 6, 5)
