"""`bench trace`'s session and report: two observe-rt daemons, tracing off and on.

    /tmp/ocb-XXXXXXXX/u/   observe-rt, tracing off (no OTEL_* variables reach it)
    /tmp/ocb-XXXXXXXX/t/   observe-rt, tracing_endpoint = the receiver, sampling ratio 1.0
    OtlpReceiver on 127.0.0.1:<free port> (observe_rt/trace/receiver.py): a live collector

Everything else is `bench cri`'s session (bench/cri.py): the same registry, pods, CNI networks,
warm-ups and alternating order, the same CRI calls timed from the client, the same clean-up.
"""

from __future__ import annotations

import re
import time
import urllib.request
from pathlib import Path

from observe_rt.bench import common, cri_calls, cri_report
from observe_rt.bench.cri import START_STEPS, CriBench, RuntimeRun
from observe_rt.bench.cri_runtimes import ObserveRtRuntime, Unavailable
from observe_rt.bench.stats import ratio
from observe_rt.trace.receiver import OtlpReceiver

BASELINE, TRACED = "untraced", "traced"
SAMPLING_RATIO = 1.0
FLUSH_S = 3.0  # after the last pod: the traced daemon exports every second
ORDER = cri_report.ORDER


class TracedObserveRt(ObserveRtRuntime):
    """observe-rt with tracing_endpoint and tracing_sampling_ratio in its config."""

    def __init__(self, base: Path, network, cgroup_parent: str, env: dict, endpoint: str) -> None:
        super().__init__(base, network, cgroup_parent, env)
        self.endpoint = endpoint

    def _write_config(self, images) -> Path:
        config = super()._write_config(images)
        with open(config, "a") as f:
            f.write(f'tracing_endpoint = "{self.endpoint}"\n'
                    f"tracing_sampling_ratio = {SAMPLING_RATIO}\n")  # fmt: skip
        return config


class TraceBench(CriBench):
    def __init__(self) -> None:
        self.cpu_ms_per_pod: dict[str, float] = {}
        self.receiver = OtlpReceiver().start()
        try:
            super().__init__((BASELINE, TRACED))
        except BaseException:
            self.receiver.stop()
            raise

    def _prepare(self, run: RuntimeRun, subnet: str) -> None:
        """As CriBench._prepare, with the two observe-rt flavours (and no OTEL_* variables)."""
        from observe_rt.bench import cri_setup
        from observe_rt.bench.cri_runtimes import Network

        network = Network(f"ocb-{self.session}-{run.name[0]}",
                          cri_setup.bridge_name(self.session, run.name), subnet)  # fmt: skip
        env = {key: value for key, value in self.env.items() if not key.startswith("OTEL_")}
        args = (self.tmp / run.name[0], network, f"{self.cgroup_parent}/{run.name}", env)
        try:
            if run.name == TRACED:
                run.runtime = TracedObserveRt(*args, endpoint=self.receiver.endpoint)
            else:
                run.runtime = ObserveRtRuntime(*args)
            run.runtime.start(self.images)
            run.version = run.runtime.version
        except Unavailable as err:
            run.reason = str(err)
        except Exception as err:  # any failure to start is reported, not fatal
            run.reason = f"setup: {err}"
            if run.runtime is not None:
                run.runtime.close()

    def measure(self, pods: int, warmup: int, progress=None):
        """bench cri's pod starts and teardowns, plus each daemon's CPU time over all of them
        (less sensitive to a busy machine than wall time)."""
        daemons = [run for run in self.runs if run.active]
        before = {run.name: cri_calls.read_cpu_ticks(run.runtime.daemon_pid()) for run in daemons}
        runs = super().measure(pods, warmup, progress)
        hz = cri_calls.clock_ticks_per_s()
        self.cpu_ms_per_pod = {}
        for run in daemons:
            after = cri_calls.read_cpu_ticks(run.runtime.daemon_pid())
            if after is not None and before[run.name] is not None:
                ticks = after - before[run.name]
                self.cpu_ms_per_pod[run.name] = round(ticks * 1000 / hz / (pods + warmup), 1)
        return runs

    def exported(self) -> dict:
        """What reached the receiver, and the traced daemon's own export counters."""
        time.sleep(FLUSH_S)
        traced = next(run for run in self.runs if run.name == TRACED)
        counters = {}
        if traced.active:
            url = cri_calls.metrics_url(traced.runtime.log.read_text(errors="replace"))
            if url:
                counters = trace_counters(_get(url))
        return {"spans_received": len(self.receiver.spans()),
                "export_requests": self.receiver.requests, **counters}  # fmt: skip

    def close(self) -> None:
        try:
            super().close()
        finally:
            self.receiver.stop()


def _get(url: str) -> str:
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # loopback only
    with opener.open(url, timeout=10) as response:
        return response.read().decode()


def trace_counters(metrics_text: str) -> dict:
    """observe_rt_trace_spans_exported_total and ..._dropped_total (all reasons) from /metrics."""
    exported = re.search(r"^observe_rt_trace_spans_exported_total (\S+)$", metrics_text, re.M)
    dropped = re.findall(r"^observe_rt_trace_spans_dropped_total\{[^}]*\} (\S+)$", metrics_text,
                         re.M)  # fmt: skip
    return {"spans_exported": int(float(exported.group(1))) if exported else None,
            "spans_dropped": int(sum(float(v) for v in dropped))}  # fmt: skip


# --- the report (pure) --------------------------------------------------------------------------


def build_report(runs, pods: int, warmup: int, exported: dict, host: dict,
                 cpu_ms_per_pod: dict | None = None) -> dict:  # fmt: skip
    entries = {run.name: cri_report.runtime_entry(run) for run in runs}
    for name, entry in entries.items():
        if entry["available"]:
            entry["daemon_cpu_ms_per_pod"] = (cpu_ms_per_pod or {}).get(name)
    common.add_ratios(entries, BASELINE, _ratios)
    return {
        "benchmark": "trace", "pods": pods, "warmup": warmup, "start": " + ".join(START_STEPS),
        "sampling_ratio": SAMPLING_RATIO, "order": ORDER, "baseline": BASELINE, "host": host,
        "export": exported, "runtimes": entries,
    }  # fmt: skip


def _ratios(entry: dict, base: dict) -> dict:
    if not base.get("available"):
        return {"start_median": None, "start_p95": None, "daemon_rss": None, "daemon_cpu": None}
    return {
        "start_median": ratio(entry["start"]["median_ms"], base["start"]["median_ms"]),
        "start_p95": ratio(entry["start"]["p95_ms"], base["start"]["p95_ms"]),
        "daemon_rss": ratio(entry["memory"]["daemon"]["rss_mib"],
                            base["memory"]["daemon"]["rss_mib"]),
        "daemon_cpu": ratio(entry.get("daemon_cpu_ms_per_pod") or 0.0,
                            base.get("daemon_cpu_ms_per_pod")),
    }  # fmt: skip


# Short headers keep the table within 80 columns; the title and notes give the units.
COLUMNS = ("Daemon", "Pods", "Median", "p95", "Min", "Max", "× off", "RSS", "CPU")


def rows(report: dict) -> list[list[str]]:
    result = []
    for name, entry in common.available(report["runtimes"]):
        start, ratios = entry["start"], entry[f"ratio_to_{BASELINE}"]
        result.append([
            name, str(start["runs"]),
            *(f"{start[key]:.1f}" for key in ("median_ms", "p95_ms", "min_ms", "max_ms")),
            common.times(ratios["start_median"]), f"{entry['memory']['daemon']['rss_mib']:.1f}",
            _or_na(entry.get("daemon_cpu_ms_per_pod")),
        ])  # fmt: skip
    return result


def _or_na(value) -> str:
    return "n/a" if value is None else f"{value:.1f}"


def notes(report: dict) -> list[str]:
    export = report["export"]
    lines = common.unavailable_lines(report["runtimes"])
    traced = report["runtimes"].get(TRACED, {})
    if traced.get("available") and traced[f"ratio_to_{BASELINE}"]["start_median"] is not None:
        ratios = traced[f"ratio_to_{BASELINE}"]
        lines.append(f"Tracing on (sampling {report['sampling_ratio']}) costs "
                     f"{common.times(ratios['start_median'])} the median pod start "
                     f"({common.times(ratios['start_p95'])} at p95); daemon CPU per pod "
                     f"{common.times(ratios['daemon_cpu'])}.")  # fmt: skip
    lines.append(f"Receiver: {export['spans_received']} spans in {export['export_requests']} "
                 f"export calls; the traced daemon counted {export.get('spans_exported')} "
                 f"exported, {export.get('spans_dropped')} dropped.")  # fmt: skip
    return lines
