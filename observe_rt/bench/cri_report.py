"""`bench cri` runs → a JSON-ready report → table rows (pure: testable without any runtime).

Times in milliseconds, memory in MiB (KiB / 1024). Ratios are observe-rt over containerd: of the
medians and p95s of pod start and teardown, of the daemons' Rss and Pss, and of the per-pod
shim Rss and Pss (every shim process of the runtime summed, divided by the pods up).
"""

from __future__ import annotations

from collections.abc import Sequence

from observe_rt.bench import common
from observe_rt.bench.common import times
from observe_rt.bench.cri import START_STEPS, TEARDOWN_STEPS, MemorySample, RuntimeRun
from observe_rt.bench.stats import ratio

BASELINE = "containerd"
ORDER = "alternating, one pod per runtime per iteration, order rotated each iteration"
TIMING_COLUMNS = ("Runtime", "Pods", "Median", "p95", "Min", "Max", f"× {BASELINE}")
# Short headers keep the tables within 80 columns (a pipe, CI logs); titles give full names.
STEP_HEADERS = ("Run pod", "Create", "Start", "Stop pod", "Remove pod")
STEP_COLUMNS = ("Runtime", *STEP_HEADERS)
MEMORY_COLUMNS = ("Runtime", "Process", "N", "RSS", "PSS", "×RSS", "×PSS")
RATIO_KEYS = (
    ("start_median", ("start", "median_ms")),
    ("start_p95", ("start", "p95_ms")),
    ("teardown_median", ("teardown", "median_ms")),
    ("teardown_p95", ("teardown", "p95_ms")),
    ("daemon_rss", ("memory", "daemon", "rss_mib")),
    ("daemon_pss", ("memory", "daemon", "pss_mib")),
    ("shim_rss_per_pod", ("memory", "shims", "rss_mib_per_pod")),
    ("shim_pss_per_pod", ("memory", "shims", "pss_mib_per_pod")),
)


def _mib(kib: float) -> float:
    return round(kib / 1024, 2)


def _group(usages, pods: int) -> dict:
    rss, pss = sum(u.rss_kib for u in usages), sum(u.pss_kib for u in usages)
    return {
        "processes": len(usages),
        "rss_mib_total": _mib(rss),
        "pss_mib_total": _mib(pss),
        "rss_mib_per_pod": _mib(rss / pods) if pods else None,
        "pss_mib_per_pod": _mib(pss / pods) if pods else None,
    }


def memory_entry(sample: MemorySample) -> dict:
    entry = {
        "pods_up": sample.pods,
        "daemon": {"rss_mib": _mib(sample.daemon.rss_kib), "pss_mib": _mib(sample.daemon.pss_kib)},
        "shims": _group(sample.shims, sample.pods),
    }
    if sample.sandboxes is not None:
        entry["sandbox_processes"] = _group(sample.sandboxes, sample.pods)
    return entry


def runtime_entry(run: RuntimeRun) -> dict:
    """One runtime's figures, or why it could not be measured."""
    if run.reason is not None or not run.starts or not run.teardowns or run.memory is None:
        return {"available": False, "reason": run.reason or "no samples"}
    return {
        "available": True,
        "version": run.version,
        "start": common.timing_figures(run.starts, START_STEPS),
        "teardown": common.timing_figures(run.teardowns, TEARDOWN_STEPS),
        "memory": memory_entry(run.memory),
    }


def _dig(entry: dict, path: tuple[str, ...]):
    for key in path:
        entry = entry.get(key) if isinstance(entry, dict) else None
    return entry


def _ratios(entry: dict, base: dict) -> dict[str, float | None]:
    return {key: ratio(_dig(entry, path), _dig(base, path)) for key, path in RATIO_KEYS}


def build_report(
    runs: Sequence[RuntimeRun], images: dict, warmup: int, pods: int, host: dict
) -> dict:
    runtimes = {run.name: runtime_entry(run) for run in runs}
    common.add_ratios(runtimes, BASELINE, _ratios)
    return {
        "benchmark": "cri",
        "pods": pods,
        "warmup": warmup,
        "start": " + ".join(START_STEPS),
        "teardown": " + ".join(TEARDOWN_STEPS),
        "workload": images,
        "order": ORDER,
        "baseline": BASELINE,
        "host": host,
        "runtimes": runtimes,
    }


# --- table rows -----------------------------------------------------------------------------


def _available(report: dict) -> list[tuple[str, dict]]:
    return common.available(report["runtimes"])


def timing_rows(report: dict, phase: str) -> list[list[str]]:
    """`phase` is "start" or "teardown": one row per runtime, in TIMING_COLUMNS order."""
    rows = []
    for name, entry in _available(report):
        figures = entry[phase]
        rows.append([
            name, str(figures["runs"]),
            *(f"{figures[key]:.1f}" for key in ("median_ms", "p95_ms", "min_ms", "max_ms")),
            times(entry[f"ratio_to_{BASELINE}"][f"{phase}_median"]),
        ])  # fmt: skip
    return rows


def step_rows(report: dict) -> list[list[str]]:
    rows = []
    for name, entry in _available(report):
        medians = entry["start"]["step_median_ms"] | entry["teardown"]["step_median_ms"]
        rows.append([name, *(f"{medians[step]:.1f}" for step in (*START_STEPS, *TEARDOWN_STEPS))])
    return rows


def memory_rows(report: dict) -> list[list[str]]:
    """Daemon and per-pod figures, in MEMORY_COLUMNS order (MiB)."""
    rows = []
    for name, entry in _available(report):
        memory, ratios = entry["memory"], entry[f"ratio_to_{BASELINE}"]
        daemon, shims = memory["daemon"], memory["shims"]
        rows.append([name, "daemon", "1", f"{daemon['rss_mib']:.1f}", f"{daemon['pss_mib']:.1f}",
                     times(ratios["daemon_rss"]), times(ratios["daemon_pss"])])  # fmt: skip
        rows.append([name, "shim / pod", str(shims["processes"]),
                     _per_pod(shims, "rss"), _per_pod(shims, "pss"),
                     times(ratios["shim_rss_per_pod"]),
                     times(ratios["shim_pss_per_pod"])])  # fmt: skip
        if "sandbox_processes" in memory:
            pause = memory["sandbox_processes"]
            rows.append([name, "pause / pod", str(pause["processes"]),
                         _per_pod(pause, "rss"), _per_pod(pause, "pss"), "", ""])  # fmt: skip
    return rows


def _per_pod(group: dict, kind: str) -> str:
    value = group[f"{kind}_mib_per_pod"]
    return "n/a" if value is None else f"{value:.1f}"


def summary_lines(report: dict) -> list[str]:
    """Unavailable runtimes with their reasons, then the ratios in words."""

    def sentence(name: str, ratios: dict) -> str:
        return (
            f"{name} vs {BASELINE} (medians): pod start {times(ratios['start_median'])}, "
            f"teardown {times(ratios['teardown_median'])}; daemon RSS "
            f"{times(ratios['daemon_rss'])}; shim per pod RSS "
            f"{times(ratios['shim_rss_per_pod'])}, PSS {times(ratios['shim_pss_per_pod'])}."
        )

    return common.summary_lines(report["runtimes"], BASELINE, "start_median", sentence)


def memory_title(report: dict) -> str:
    ups = {entry["memory"]["pods_up"] for _, entry in _available(report)}
    pods = ups.pop() if len(ups) == 1 else report["pods"]
    return f"memory with {pods} pods up (smaps_rollup), MiB; × {BASELINE}"
