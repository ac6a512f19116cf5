"""Targets' samples -> a JSON-ready report -> one table: a column per endpoint, then the ratio.

Pure (no runtime, no root): the table is computed from the report dict, so `--json`, the
results file and the printed table can never disagree, and all three are unit-tested.

Each timed figure: runs, median, p95, min, max (ms), spread (interquartile range / median, %)
and the raw samples. The ratio is the first endpoint's median over the baseline's (observe-rt /
containerd under `make bench`); below 1 the first endpoint is faster or smaller.
"""

from __future__ import annotations

from collections.abc import Sequence

from observe_rt.bench import common
from observe_rt.bench.endpoint import Target
from observe_rt.bench.endpoint_phases import LIFECYCLE_STEPS, Settings
from observe_rt.bench.stats import ratio, spread, summarize

# (figure, label) of the timed rows, in table order; levels are filled in by _timed_rows.
POD_ROWS = (
    ("pod_start", "pod start, one at a time"),
    ("pod_teardown", "pod teardown, one at a time"),
    ("pod_start_parallel", "{k} pods started at once: all up"),
    ("pod_start_parallel_each", "  each of those pods"),
    ("pod_teardown_parallel", "{k} pod teardowns at once"),
)
CALL_ROWS = tuple((step, f"container {step}") for step in LIFECYCLE_STEPS) + (
    ("exec_sync", "ExecSync `true`"),
)
LIST_ROWS = (
    ("list_container_stats", "ListContainerStats, {n} ctrs"),
    ("list_pod_sandbox_stats", "ListPodSandboxStats, {n} ctrs"),
    ("list_containers", "ListContainers, {n} ctrs"),
    ("metrics_scrape", "/metrics scrape, {n} ctrs"),
)
VALUE_ROWS = (
    ("metrics_bytes@{top}", "/metrics size, {top} ctrs", "KiB", 1 / 1024),
    ("daemon_rss_mib", "daemon RSS, {top} ctrs up", "MiB", 1),
    ("daemon_pss_mib", "daemon PSS, {top} ctrs up", "MiB", 1),
    ("shim_rss_mib_per_pod", "shim RSS per pod", "MiB", 1),
    ("shim_pss_mib_per_pod", "shim PSS per pod", "MiB", 1),
)


def figures(samples: Sequence[float]) -> dict:
    summary = summarize(samples)
    spread_pct = spread(samples)
    return {
        "runs": summary.runs,
        "median_ms": round(summary.median, 3),
        "p95_ms": round(summary.p95, 3),
        "min_ms": round(summary.minimum, 3),
        "max_ms": round(summary.maximum, 3),
        "spread_pct": None if spread_pct is None else round(spread_pct, 1),
        "samples_ms": [round(value, 3) for value in samples],
    }


def target_entry(target: Target) -> dict:
    return {
        "version": target.version,
        "figures": {name: figures(values) for name, values in target.samples.items() if values},
        "values": dict(target.values),
        "unavailable": dict(target.reasons),
    }


def build_report(targets: Sequence[Target], settings: Settings, baseline: str | None,
                 host: dict, extra: dict | None = None) -> dict:  # fmt: skip
    """`extra`: more top-level sections (the probe benchmark's, the endpoints)."""
    entries = {target.name: target_entry(target) for target in targets}
    report = {
        "benchmark": "cri",
        "settings": {key: getattr(settings, key) for key in settings.__dataclass_fields__},
        "order": "interleaved: one step per endpoint per repetition, the order rotated "
        "every repetition (A B, B A, ...)",
        "baseline": baseline,
        "host": host,
        "targets": entries,
    }
    report["settings"]["levels"] = list(settings.levels)
    report["ratios"] = ratios(report)
    return report | (extra or {})


def ratios(report: dict) -> dict[str, float | None]:
    """First endpoint / baseline: of the medians of every timed figure both have, and of
    every value both have."""
    names = list(report["targets"])
    baseline = report["baseline"]
    if baseline not in report["targets"] or len(names) < 2:
        return {}
    first = next(name for name in names if name != baseline)
    a, b = report["targets"][first], report["targets"][baseline]
    found = {}
    for key in a["figures"].keys() & b["figures"].keys():
        found[key] = common.rounded(ratio(a["figures"][key]["median_ms"],
                                          b["figures"][key]["median_ms"]))  # fmt: skip
    for key in a["values"].keys() & b["values"].keys():
        found[key] = common.rounded(ratio(a["values"][key], b["values"][key]))
    return dict(sorted(found.items()))


# --- the table ------------------------------------------------------------------------------


def columns(report: dict) -> list[str]:
    """figure, unit, then per endpoint its median (headed by its name), p95 and ±%, then the
    ratio (with a baseline)."""
    header = ["figure", "unit"]
    for name in report["targets"]:
        header += [name, "p95", "±%"]
    return header + _ratio_header(report)


def _ratio_header(report: dict) -> list[str]:
    baseline = report["baseline"]
    others = [name for name in report["targets"] if name != baseline]
    if baseline in report["targets"] and others:
        return [f"× {baseline}"]
    if report.get("probes", {}).get("available"):
        return ["on / off"]
    return []


def table_rows(report: dict) -> list[list[str]]:
    rows = _timed_rows(report) + _value_rows(report)
    if "probes" in report:
        rows += probe_rows(report)
    return rows


def _timed_rows(report: dict) -> list[list[str]]:
    settings = report["settings"]
    specs = [(key, label.format(k=settings["parallel"])) for key, label in POD_ROWS]
    specs += list(CALL_ROWS)
    for level in settings["levels"]:
        specs += [(f"{key}@{level}", label.format(n=level)) for key, label in LIST_ROWS]
    rows = []
    for key, label in specs:
        found = [entry["figures"].get(key) for entry in report["targets"].values()]
        if any(found):
            cells = [cell for figure in found for cell in _timing_cells(figure)]
            rows.append([label, "ms", *cells, *_ratio_cell(report, key)])
    return rows


def _value_rows(report: dict) -> list[list[str]]:
    top = max(report["settings"]["levels"])
    rows = []
    for key, label, unit, scale in VALUE_ROWS:
        key = key.format(top=top)
        values = [entry["values"].get(key) for entry in report["targets"].values()]
        if any(value is not None for value in values):
            cells = []
            for value in values:
                cells += ["—" if value is None else _number(value * scale), "", ""]
            rows.append([label.format(top=top), unit, *cells, *_ratio_cell(report, key)])
    return rows


def probe_rows(report: dict) -> list[list[str]]:
    """observe-rt only: the probe benchmark's rows in the first endpoint's column; their
    ratio cell holds probes on / off."""
    probes = report["probes"]
    if not probes.get("available"):
        return []
    blanks = ["—", "", ""] * (len(report["targets"]) - 1)
    with_ratio = bool(_ratio_header(report))
    rows = []
    for label, unit, value, on_off in probes["rows"]:
        ratio_cell = f"{common.times(on_off)} on/off" if on_off is not None else ""
        rows.append([label, unit, _number(value), "", "", *blanks, *[ratio_cell][:with_ratio]])
    return rows


def _timing_cells(figure: dict | None) -> list[str]:
    if figure is None:
        return ["—", "", ""]
    half_spread = "" if figure["spread_pct"] is None else f"{figure['spread_pct'] / 2:.0f}"
    return [_number(figure["median_ms"]), _number(figure["p95_ms"]), half_spread]


def _ratio_cell(report: dict, key: str) -> list[str]:
    if not _ratio_header(report):
        return []
    return [common.times(report["ratios"].get(key))]


def _number(value: float) -> str:
    if isinstance(value, int) or value >= 100:
        return f"{value:.0f}"
    if value >= 10:
        return f"{value:.1f}"
    return f"{value:.2f}"


def notes(report: dict) -> list[str]:
    lines = []
    for name, entry in report["targets"].items():
        for phase, reason in entry["unavailable"].items():
            lines.append(f"{name}: no {phase} figures: {reason}")
    if "probes" in report and not report["probes"].get("available"):
        lines.append(f"probe overhead: unavailable: {report['probes']['reason']}")
    settings = report["settings"]
    lines.append(
        f"Median, p95 and ± (half the interquartile range, % of the median) of "
        f"{settings['pods']} serial pods, {settings['parallel_rounds']} rounds of "
        f"{settings['parallel']} parallel pods, {settings['repetitions']} repetitions of each "
        f"call, after {settings['warmup']} warm-ups; {report['order']}."
    )
    if report["ratios"]:
        base = report["baseline"]
        first = next(name for name in report["targets"] if name != base)
        lines.append(f"× {base}: {first}'s median (or value) over {base}'s; "
                     f"below 1.00× {first} is faster or smaller.")  # fmt: skip
    return lines
