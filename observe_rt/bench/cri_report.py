"""`bench cri` runs → a JSON-ready report → table rows (pure: testable without any runtime).

Times in milliseconds, memory in MiB (KiB / 1024). Ratios are observe-rt over containerd: of the
medians and p95s of pod start and teardown, of the daemons' Rss and Pss, and of the per-pod
shim Rss and Pss (every shim process of the runtime summed, divided by the pods up); with
--exec, of ExecSync's median and p95; with --stats-containers, of ListContainerStats' median and
p95 and of the daemons' CPU time per second of an idle window.
"""

from __future__ import annotations

from collections.abc import Sequence

from observe_rt.bench import common
from observe_rt.bench.common import times
from observe_rt.bench.cri import (
    CPU_WINDOW_S,
    EXEC_COMMAND,
    EXEC_TIMEOUT_S,
    SCRAPES,
    START_STEPS,
    STATS_CALLS,
    STATS_INTERVAL_S,
    STATS_SETTLE_S,
    TEARDOWN_STEPS,
    MemorySample,
    RuntimeRun,
    StatsSample,
)
from observe_rt.bench.cri_calls import cpu_entry
from observe_rt.bench.stats import ratio, summarize

BASELINE = "containerd"
ORDER = "alternating, one pod per runtime per iteration, order rotated each iteration"
TIMING_COLUMNS = ("Runtime", "Pods", "Median", "p95", "Min", "Max", f"× {BASELINE}")
# Short headers keep the tables within 80 columns (a pipe, CI logs); titles give full names.
STEP_HEADERS = ("Run pod", "Create", "Start", "Stop pod", "Remove pod")
STEP_COLUMNS = ("Runtime", *STEP_HEADERS)
MEMORY_COLUMNS = ("Runtime", "Process", "N", "RSS", "PSS", "×RSS", "×PSS")
CALL_COLUMNS = ("Runtime", "Calls", "Median", "p95", "Min", "Max", f"× {BASELINE}")
COST_COLUMNS = ("Runtime", "/metrics ms", "Bytes", "CPU ms/s", "ms/tick", f"× {BASELINE}")
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
# Present only when the phase ran (--exec, --stats-containers) and was measured.
PHASE_RATIO_KEYS = (
    ("exec_median", ("exec", "median_ms")),
    ("exec_p95", ("exec", "p95_ms")),
    ("list_stats_median", ("stats", "list_container_stats", "median_ms")),
    ("list_stats_p95", ("stats", "list_container_stats", "p95_ms")),
    ("daemon_cpu_per_s", ("stats", "daemon_cpu", "cpu_ms_per_s")),
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


def exec_entry(run: RuntimeRun, calls: int) -> dict:
    if run.exec_reason is not None or len(run.execs) != calls:
        return {"available": False, "reason": run.exec_reason or "no samples"}
    return {"available": True, **common.figures(run.execs, "ms"),
            "samples_ms": [round(value, 3) for value in run.execs]}  # fmt: skip


def stats_entry(run: RuntimeRun) -> dict:
    sample: StatsSample | None = run.stats
    if run.stats_reason is not None or sample is None or not sample.list_ms or sample.cpu is None:
        return {"available": False, "reason": run.stats_reason or "no samples"}
    observe_rt = sample.scrapes_ms is not None
    entry = {
        "available": True,
        "containers_up": sample.containers,
        "containers_reported": sample.reported,
        "list_container_stats": common.figures(sample.list_ms, "ms"),
        # the whole daemon process, every thread: the collector's ticks and whatever else runs
        "daemon_cpu": cpu_entry(sample.cpu, STATS_INTERVAL_S if observe_rt else None),
    }
    if observe_rt:
        entry["metrics_scrape"] = {
            "scrapes": len(sample.scrapes_ms),
            "median_ms": round(summarize(sample.scrapes_ms).median, 3),
            "bytes": sample.scrape_bytes,
        }
    return entry


def runtime_entry(run: RuntimeRun, exec_calls: int = 0, stats_containers: int = 0) -> dict:
    """One runtime's figures, or why it could not be measured."""
    if run.reason is not None or not run.starts or not run.teardowns or run.memory is None:
        return {"available": False, "reason": run.reason or "no samples"}
    entry = {
        "available": True,
        "version": run.version,
        "start": common.timing_figures(run.starts, START_STEPS),
        "teardown": common.timing_figures(run.teardowns, TEARDOWN_STEPS),
        "memory": memory_entry(run.memory),
    }
    if exec_calls:
        entry["exec"] = exec_entry(run, exec_calls)
    if stats_containers:
        entry["stats"] = stats_entry(run)
    return entry


def _dig(entry: dict, path: tuple[str, ...]):
    for key in path:
        entry = entry.get(key) if isinstance(entry, dict) else None
    return entry


def _ratios(entry: dict, base: dict) -> dict[str, float | None]:
    ratios = {key: ratio(_dig(entry, path), _dig(base, path)) for key, path in RATIO_KEYS}
    for key, path in PHASE_RATIO_KEYS:
        if path[0] in entry:
            value = _dig(entry, path)
            ratios[key] = None if value is None else ratio(value, _dig(base, path))
    return ratios


def build_report(
    runs: Sequence[RuntimeRun], images: dict, warmup: int, pods: int, host: dict,
    exec_calls: int = 0, stats_containers: int = 0,
) -> dict:  # fmt: skip
    runtimes = {run.name: runtime_entry(run, exec_calls, stats_containers) for run in runs}
    common.add_ratios(runtimes, BASELINE, _ratios)
    report = {
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
    if exec_calls:
        report["exec"] = {"calls": exec_calls, "command": list(EXEC_COMMAND),
                          "timeout_s": EXEC_TIMEOUT_S}  # fmt: skip
    if stats_containers:
        report["stats"] = {
            "containers": stats_containers, "layout": "one pod per container",
            "settle_s": STATS_SETTLE_S, "list_calls": STATS_CALLS, "scrapes": SCRAPES,
            "cpu_window_s": CPU_WINDOW_S, "collector_interval_s": STATS_INTERVAL_S,
        }  # fmt: skip
    return report


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


# --- --exec and --stats-containers ------------------------------------------------------------


def _phase(report: dict, key: str) -> list[tuple[str, dict]]:
    """(name, entry) of each available runtime whose `key` phase was measured."""
    return [(name, entry) for name, entry in _available(report)
            if entry.get(key, {}).get("available")]  # fmt: skip


def _call_row(name: str, figures: dict, ratio_value: float | None) -> list[str]:
    return [name, str(figures["runs"]),
            *(f"{figures[key]:.2f}" for key in ("median_ms", "p95_ms", "min_ms", "max_ms")),
            times(ratio_value)]  # fmt: skip


def exec_rows(report: dict) -> list[list[str]]:
    """ExecSync latency per runtime, in CALL_COLUMNS order (ms)."""
    return [_call_row(name, entry["exec"], entry[f"ratio_to_{BASELINE}"]["exec_median"])
            for name, entry in _phase(report, "exec")]  # fmt: skip


def list_stats_rows(report: dict) -> list[list[str]]:
    """ListContainerStats latency per runtime, in CALL_COLUMNS order (ms)."""
    return [_call_row(name, entry["stats"]["list_container_stats"],
                      entry[f"ratio_to_{BASELINE}"]["list_stats_median"])
            for name, entry in _phase(report, "stats")]  # fmt: skip


def cost_rows(report: dict) -> list[list[str]]:
    """/metrics scrape and idle daemon CPU, in COST_COLUMNS order; × is of CPU ms/s."""
    rows = []
    for name, entry in _phase(report, "stats"):
        stats, cpu = entry["stats"], entry["stats"]["daemon_cpu"]
        scrape = stats.get("metrics_scrape")
        per_tick = cpu.get("cpu_ms_per_tick")
        rows.append([
            name,
            "n/a" if scrape is None else f"{scrape['median_ms']:.2f}",
            "n/a" if scrape is None else str(scrape["bytes"]),
            f"{cpu['cpu_ms_per_s']:.2f}",
            "n/a" if per_tick is None else f"{per_tick:.2f}",
            times(entry[f"ratio_to_{BASELINE}"]["daemon_cpu_per_s"]),
        ])  # fmt: skip
    return rows


def phase_titles(report: dict) -> dict[str, str]:
    titles = {}
    if "exec" in report:
        exec_ = report["exec"]
        titles["exec"] = (f"ExecSync `{' '.join(exec_['command'])}`: {exec_['calls']} calls "
                          "into one container, ms")  # fmt: skip
    if "stats" in report:
        count = report["stats"]["containers"]
        titles["list_stats"] = (f"ListContainerStats with {count} containers up: "
                                f"{report['stats']['list_calls']} calls, ms")  # fmt: skip
        titles["cost"] = f"idle, {count} containers up: /metrics, daemon CPU; × {BASELINE} of CPU"
    return titles


def phase_lines(report: dict) -> list[str]:
    """Why a phase could not be measured for a runtime, and what the cost table means."""
    lines = []
    for key, label in (("exec", "--exec"), ("stats", "--stats-containers")):
        for name, entry in _available(report):
            phase = entry.get(key)
            if phase is not None and not phase["available"]:
                lines.append(f"{name} {label}: unavailable: {phase['reason']}")
    if "stats" in report:
        stats = report["stats"]
        lines.append(
            f"Stats: {stats['containers']} pods of one container each per runtime; "
            f"ListContainerStats after {stats['settle_s']:g} s; CPU = the whole daemon process's "
            f"utime + stime (/proc/PID/stat, every thread) over {stats['cpu_window_s']:g} s "
            f"idle; ms/tick = that / {stats['cpu_window_s'] / stats['collector_interval_s']:g} "
            f"collector ticks ({stats['collector_interval_s']:g} s interval; observe-rt only)."
        )
        counts = {name: entry["stats"]["containers_reported"]
                  for name, entry in _phase(report, "stats")}  # fmt: skip
        if counts:
            lines.append(
                "Containers in ListContainerStats: "
                + ", ".join(f"{name} {n}" for name, n in counts.items())
                + "."
            )
    return lines
