"""Turn benchmark runs into a JSON-ready report, and that report into table rows.

Rows are computed from the plain report dict (not from live objects) so the table and the
`--json` output can never disagree, and both can be tested without running anything.
"""

from __future__ import annotations

from collections.abc import Sequence

from observe_rt.bench import common
from observe_rt.bench.oci import RuntimeRun
from observe_rt.bench.runtimes import STEPS
from observe_rt.bench.stats import ratio

BASELINE = "runc"
LIFECYCLE = "create --pid-file, start, wait (pidfd + subreaper reap), delete"
ORDER = "round-robin, one lifecycle per runtime per iteration, order rotated each iteration"
COLUMNS = ("Runtime", "Runs", "Median", "p95", "Min", "Max", f"× {BASELINE}")
STEP_COLUMNS = ("Runtime", *STEPS)


def runtime_entry(run: RuntimeRun) -> dict:
    """One runtime's figures (milliseconds, 3 decimals) or why it is unavailable."""
    if not run.samples or run.reason is not None:
        return {"available": False, "reason": run.reason or "no samples"}
    return {
        "available": True,
        "version": run.cli.version if run.cli else "",
        "command": list(getattr(run.cli, "argv", ())),
        **common.timing_figures(run.samples, STEPS),
    }


def build_report(
    runs: Sequence[RuntimeRun], workload: list[str], warmup: int, measured: int
) -> dict:
    runtimes = {run.name: runtime_entry(run) for run in runs}
    baseline = runtimes.get(BASELINE, {}).get("median_ms")
    for entry in runtimes.values():
        if entry["available"]:
            entry[f"ratio_to_{BASELINE}"] = common.rounded(ratio(entry["median_ms"], baseline))
    return {
        "benchmark": "oci",
        "workload": workload,
        "lifecycle": LIFECYCLE,
        "order": ORDER,
        "runs": measured,
        "warmup": warmup,
        "baseline": BASELINE,
        "host": common.host_info(),
        "runtimes": runtimes,
    }


def table_rows(report: dict) -> list[list[str]]:
    """One row per measured runtime, in COLUMNS order (milliseconds, ratio of medians)."""
    rows = []
    for name, entry in common.available(report["runtimes"]):
        rows.append([
            name, str(entry["runs"]),
            *(f"{entry[key]:.1f}" for key in ("median_ms", "p95_ms", "min_ms", "max_ms")),
            common.times(entry.get(f"ratio_to_{BASELINE}")),
        ])  # fmt: skip
    return rows


def step_rows(report: dict) -> list[list[str]]:
    """Median milliseconds of each lifecycle step, in STEP_COLUMNS order."""
    return [
        [name, *(f"{entry['step_median_ms'][step]:.1f}" for step in STEPS)]
        for name, entry in common.available(report["runtimes"])
    ]


def unavailable_lines(report: dict) -> list[str]:
    return common.unavailable_lines(report["runtimes"])
