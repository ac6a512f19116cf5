"""Turn benchmark runs into a JSON-ready report, and that report into table rows.

Rows are computed from the plain report dict (not from live objects) so the table and the
`--json` output can never disagree, and both can be tested without running anything.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

from observe_rt.bench.oci import RuntimeRun
from observe_rt.bench.runtimes import STEPS
from observe_rt.bench.stats import ratio, summarize

BASELINE = "runc"
LIFECYCLE = "create --pid-file, start, wait (pidfd + subreaper reap), delete"
ORDER = "round-robin, one lifecycle per runtime per iteration, order rotated each iteration"
COLUMNS = ("Runtime", "Runs", "Median", "p95", "Min", "Max", f"× {BASELINE}")
STEP_COLUMNS = ("Runtime", *STEPS)


def runtime_entry(run: RuntimeRun) -> dict:
    """One runtime's figures (milliseconds, 3 decimals) or why it is unavailable."""
    if not run.samples or run.reason is not None:
        return {"available": False, "reason": run.reason or "no samples"}
    totals = [sum(sample.values()) for sample in run.samples]
    summary = summarize(totals)
    return {
        "available": True,
        "version": run.cli.version if run.cli else "",
        "command": list(getattr(run.cli, "argv", ())),
        "runs": summary.runs,
        "median_ms": round(summary.median, 3),
        "p95_ms": round(summary.p95, 3),
        "min_ms": round(summary.minimum, 3),
        "max_ms": round(summary.maximum, 3),
        "step_median_ms": {
            step: round(summarize([s[step] for s in run.samples]).median, 3) for step in STEPS
        },
        "samples_ms": [round(total, 3) for total in totals],
    }


def build_report(
    runs: Sequence[RuntimeRun], workload: list[str], warmup: int, measured: int
) -> dict:
    runtimes = {run.name: runtime_entry(run) for run in runs}
    baseline = runtimes.get(BASELINE, {}).get("median_ms")
    for entry in runtimes.values():
        if entry["available"]:
            value = ratio(entry["median_ms"], baseline)
            entry[f"ratio_to_{BASELINE}"] = None if value is None else round(value, 3)
    return {
        "benchmark": "oci",
        "workload": workload,
        "lifecycle": LIFECYCLE,
        "order": ORDER,
        "runs": measured,
        "warmup": warmup,
        "baseline": BASELINE,
        "host": {"kernel": os.uname().release, "cpus": os.cpu_count()},
        "runtimes": runtimes,
    }


def table_rows(report: dict) -> list[list[str]]:
    """One row per measured runtime, in COLUMNS order (milliseconds, ratio of medians)."""
    rows = []
    for name, entry in _available(report):
        factor = entry.get(f"ratio_to_{BASELINE}")
        rows.append([
            name, str(entry["runs"]),
            *(f"{entry[key]:.1f}" for key in ("median_ms", "p95_ms", "min_ms", "max_ms")),
            "n/a" if factor is None else f"{factor:.2f}×",
        ])  # fmt: skip
    return rows


def step_rows(report: dict) -> list[list[str]]:
    """Median milliseconds of each lifecycle step, in STEP_COLUMNS order."""
    return [
        [name, *(f"{entry['step_median_ms'][step]:.1f}" for step in STEPS)]
        for name, entry in _available(report)
    ]


def _available(report: dict) -> list[tuple[str, dict]]:
    return [(name, entry) for name, entry in report["runtimes"].items() if entry["available"]]


def unavailable_lines(report: dict) -> list[str]:
    return [
        f"{name}: unavailable: {entry['reason']}"
        for name, entry in report["runtimes"].items()
        if not entry["available"]
    ]
