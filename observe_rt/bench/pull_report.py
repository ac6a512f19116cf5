"""`bench pull` runs → a JSON-ready report → table rows (pure: testable without pulling).

Memory is reported in MiB (KiB / 1024), wall time in seconds. Ratios are observe-rt over
containerd, of medians: wall time against `ctr images pull`, peak memory against the containerd
daemon (which stores and unpacks), and, for completeness, against daemon + ctr (ctr fetches).
"""

from __future__ import annotations

from collections.abc import Sequence

from observe_rt.bench import common
from observe_rt.bench.common import times
from observe_rt.bench.pull import PullerRun
from observe_rt.bench.stats import percentile, ratio

BASELINE = "containerd"
ORDER = "alternating, one pull per puller per iteration, order flipped each iteration"
COLD = (
    "every pull cold: a fresh store (and a fresh containerd daemon) per pull, removed and synced "
    "untimed afterwards; the registry's blobs are in the page cache for both"
)
WALL_COLUMNS = ("Puller", "Runs", "Median", "p95", "Min", "Max", f"× {BASELINE}")
MEMORY_COLUMNS = ("Puller", "Process (how measured)", "Peak RSS", f"× {BASELINE}")


def _mib(kib: float) -> float:
    return round(kib / 1024, 1)


def puller_entry(run: PullerRun) -> dict:
    """One puller's figures or why it is unavailable."""
    if not run.samples or run.reason is not None:
        return {"available": False, "reason": run.reason or "no samples"}
    peaks = [sample.peak_rss_kib for sample in run.samples]
    entry = {
        "available": True,
        "version": run.version,
        "command": run.command,
        **common.figures([sample.wall_s for sample in run.samples], "s"),
        "samples_s": [round(sample.wall_s, 3) for sample in run.samples],
        "peak_rss_mib": _mib(percentile(peaks, 50)),
        "peak_rss_samples_mib": [_mib(peak) for peak in peaks],
    }
    clients = [sample.client_rss_kib for sample in run.samples if sample.client_rss_kib]
    if clients:
        entry["client_peak_rss_mib"] = _mib(percentile(clients, 50))
        combined = [s.peak_rss_kib + (s.client_rss_kib or 0) for s in run.samples]
        entry["combined_peak_rss_mib"] = _mib(percentile(combined, 50))
    return entry


def _ratios(entry: dict, base: dict) -> dict[str, float | None]:
    return {
        "wall": ratio(entry["median_s"], base.get("median_s")),
        "peak_rss": ratio(entry["peak_rss_mib"], base.get("peak_rss_mib")),
        "peak_rss_vs_daemon_plus_ctr": ratio(
            entry["peak_rss_mib"], base.get("combined_peak_rss_mib")
        ),
    }


def build_report(
    runs: Sequence[PullerRun], reference: str, image: dict, warmup: int, measured: int
) -> dict:
    pullers = {run.name: puller_entry(run) for run in runs}
    common.add_ratios(pullers, BASELINE, _ratios)
    return {
        "benchmark": "pull",
        "reference": reference,
        "image": image,
        "order": ORDER,
        "cold": COLD,
        "runs": measured,
        "warmup": warmup,
        "baseline": BASELINE,
        "host": common.host_info(),
        "pullers": pullers,
    }


def _available(report: dict) -> list[tuple[str, dict]]:
    return common.available(report["pullers"])


def wall_rows(report: dict) -> list[list[str]]:
    """One row per measured puller, in WALL_COLUMNS order (seconds, ratio of medians)."""
    return [
        [name, str(entry["runs"]),
         *(f"{entry[key]:.2f}" for key in ("median_s", "p95_s", "min_s", "max_s")),
         times(entry[f"ratio_to_{BASELINE}"]["wall"])]
        for name, entry in _available(report)
    ]  # fmt: skip


def memory_rows(report: dict) -> list[list[str]]:
    """Median peak RSS per process, in MEMORY_COLUMNS order."""
    rows = []
    for name, entry in _available(report):
        factor = times(entry[f"ratio_to_{BASELINE}"]["peak_rss"])
        if name == BASELINE:
            rows.append([name, "containerd daemon (VmHWM)", f"{entry['peak_rss_mib']:.1f}", factor])
            if "client_peak_rss_mib" in entry:
                rows.append([name, "ctr images pull (ru_maxrss)",
                             f"{entry['client_peak_rss_mib']:.1f}", ""])  # fmt: skip
                rows.append([name, "daemon + ctr",
                             f"{entry['combined_peak_rss_mib']:.1f}", ""])  # fmt: skip
        else:
            rows.append([name, f"{name} images pull (ru_maxrss)",
                         f"{entry['peak_rss_mib']:.1f}", factor])  # fmt: skip
    return rows


def image_line(report: dict) -> str:
    image = report["image"]
    return (
        f"Image {report['reference']}: {len(image['layers'])} gzip layers, "
        f"{image['compressed_bytes'] / 1e6:.1f} MB compressed, "
        f"{image['uncompressed_bytes'] / 1e6:.1f} MB unpacked, {image['entries']} tar entries."
    )


def summary_lines(report: dict) -> list[str]:
    """Ratios in words, plus every unavailable puller's reason."""

    def sentence(name: str, ratios: dict) -> str:
        return (
            f"{name} vs {BASELINE}: wall {times(ratios['wall'])}, peak memory "
            f"{times(ratios['peak_rss'])} of the daemon, "
            f"{times(ratios['peak_rss_vs_daemon_plus_ctr'])} of daemon + ctr."
        )

    return common.summary_lines(report["pullers"], BASELINE, "wall", sentence)
