"""The log2 latency histogram of bpf/syscalls.c, in user space.

The kernel side files a latency of v ns under slot bpf_log2l(v) (clamped to SLOTS - 1):
bpf_log2l(0) = bpf_log2l(1) = 1 and bpf_log2l(v) = floor(log2(v)) + 1 otherwise, so slot k
(k >= 1) holds latencies below 2**k ns, slot 0 stays empty and the last slot also holds
everything longer (it is the +Inf bucket). Keep SLOTS equal to SC_SLOTS in syscalls.c.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

SLOTS = 32


def slot_of(ns: int) -> int:
    """The slot the kernel files a latency of `ns` under (mirror of bpf_log2l + clamp)."""
    slot = max(ns, 1).bit_length()
    return min(slot, SLOTS - 1)


def upper_bound_ns(slot: int) -> float:
    """Exclusive upper bound of `slot` in ns; +inf for the overflow slot."""
    return math.inf if slot >= SLOTS - 1 else float(2**slot)


# The buckets Prometheus gets: every other slot from 1 us to 1 s (4x apart) and +Inf, so a
# histogram is 12 series, not 31: enough for a heatmap and quantiles, a third of the bytes.
EXPORT_SLOTS = (*range(10, SLOTS - 1, 2), SLOTS - 1)


def cumulative_buckets(
    counts: Sequence[int], slots: Sequence[int] = range(1, SLOTS)
) -> list[tuple[float, int]]:
    """[(le seconds, cumulative count)] at the given slots' bounds, ending with (+inf, total)."""
    buckets, running, wanted = [], 0, set(slots)
    for slot in range(1, SLOTS):
        running += counts[slot] if slot < len(counts) else 0
        if slot in wanted:
            buckets.append((upper_bound_ns(slot) / 1e9, running))
    running += counts[0] if counts else 0
    buckets[-1] = (math.inf, running)
    return buckets


def quantile_ns(counts: Sequence[int], q: float) -> float:
    """Upper bound (ns) of the slot holding quantile q; 0 when empty."""
    total = sum(counts)
    if total == 0:
        return 0.0
    rank, running = q * total, 0
    for slot, count in enumerate(counts):
        running += count
        if running >= rank and count:
            return upper_bound_ns(slot)
    return upper_bound_ns(len(counts) - 1)


def merge(a: Sequence[int], b: Sequence[int]) -> tuple[int, ...]:
    """Slot-wise sum (e.g. several containers of one pod)."""
    size = max(len(a), len(b))
    return tuple((a[i] if i < len(a) else 0) + (b[i] if i < len(b) else 0) for i in range(size))
