"""Summaries of timing samples: percentiles, min/max, and ratios against a baseline runtime."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass


def percentile(samples: Sequence[float], q: float) -> float:
    """The q-th percentile (0..100), interpolating linearly between closest ranks.

    The same definition as numpy's default and statistics.quantiles(method="inclusive"),
    so p50 is the usual median and p95 of 50 runs lies between the 47th and 48th smallest.
    """
    if not samples:
        raise ValueError("percentile of no samples")
    if not 0 <= q <= 100:
        raise ValueError(f"percentile {q} is outside 0..100")
    ordered = sorted(samples)
    rank = (len(ordered) - 1) * q / 100
    low, high = math.floor(rank), math.ceil(rank)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


@dataclass(frozen=True)
class Summary:
    runs: int
    median: float
    p95: float
    minimum: float
    maximum: float


def summarize(samples: Sequence[float]) -> Summary:
    return Summary(
        runs=len(samples),
        median=percentile(samples, 50),
        p95=percentile(samples, 95),
        minimum=min(samples),
        maximum=max(samples),
    )


def ratio(value: float, baseline: float | None) -> float | None:
    """value / baseline, or None when there is no usable baseline."""
    if baseline is None or baseline <= 0:
        return None
    return value / baseline


def spread(samples: Sequence[float]) -> float | None:
    """The interquartile range relative to the median, in percent: how much the middle half
    of the runs moved (robust to a few outliers, unlike the standard deviation)."""
    median = percentile(samples, 50)
    if median <= 0:
        return None
    return (percentile(samples, 75) - percentile(samples, 25)) / median * 100
