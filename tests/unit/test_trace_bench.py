"""`bench trace`'s pure parts: options, the /metrics counters, the report and its rendering."""

from __future__ import annotations

from observe_rt.bench import trace as trace_command
from observe_rt.bench import trace_session
from observe_rt.bench.cri import MemorySample, RuntimeRun
from observe_rt.bench.cri_memory import Usage
from tests.support.bench import assert_rejected, parse, rendered

METRICS = """# HELP observe_rt_trace_spans_exported_total Spans the OTLP exporter delivered.
observe_rt_trace_spans_exported_total 412.0
observe_rt_trace_spans_dropped_total{reason="export_failed"} 2.0
observe_rt_trace_spans_dropped_total{reason="queue_full"} 5.0
"""


def test_options_and_defaults():
    args = parse("trace")
    assert (args.pods, args.warmup, args.json) == (20, 2, False)
    assert parse("trace", "--pods", "3", "--warmup", "0").pods == 3
    assert_rejected("trace", ["--pods", "0"], ["--warmup", "-1"])


def test_counters_from_metrics_text():
    assert trace_session.trace_counters(METRICS) == {"spans_exported": 412, "spans_dropped": 7}
    assert trace_session.trace_counters("") == {"spans_exported": None, "spans_dropped": 0}


def run(name: str, start_ms: float, rss_kib: int) -> RuntimeRun:
    starts = [{"RunPodSandbox": start_ms + i, "CreateContainer": 10.0, "StartContainer": 40.0}
              for i in range(5)]  # fmt: skip
    teardowns = [{"StopPodSandbox": 50.0, "RemovePodSandbox": 10.0}] * 5
    result = RuntimeRun(name, "observe-rt 0.1.0", starts=starts, teardowns=teardowns)
    result.memory = MemorySample(5, Usage(rss_kib, rss_kib), [Usage(1024, 1024)] * 5)
    return result


def test_report_ratio_is_traced_over_untraced():
    runs = [run("untraced", 100.0, 51200), run("traced", 125.0, 56320)]
    export = {"spans_received": 300, "export_requests": 9, "spans_exported": 300,
              "spans_dropped": 0}  # fmt: skip
    cpu = {"untraced": 40.0, "traced": 42.0}
    report = trace_session.build_report(runs, 5, 2, export, {"kernel": "6.1", "cpus": 2}, cpu)
    traced = report["runtimes"]["traced"]["ratio_to_untraced"]
    # medians: untraced 102 + 50 = 152 ms, traced 127 + 50 = 177 ms
    assert traced["start_median"] == round(177 / 152, 3)
    assert traced["daemon_rss"] == 1.1 and traced["daemon_cpu"] == 1.05
    assert report["runtimes"]["untraced"]["ratio_to_untraced"]["start_median"] == 1.0
    assert report["sampling_ratio"] == 1.0 and report["export"] == export

    report["command"] = "observe-rt bench trace --pods 5"
    text = rendered(trace_command.render, report, 100)
    assert "1.16×" in text and "300 spans in 9 export calls" in text and "42.0" in text
    assert "daemon CPU per pod 1.05×" in text
    assert "Measured by: observe-rt bench trace --pods 5" in text


def test_unavailable_daemon_is_reported_with_its_reason():
    broken = RuntimeRun("traced", reason="setup: daemon exited")
    export = {"spans_received": 0, "export_requests": 0}
    report = trace_session.build_report([run("untraced", 100.0, 51200), broken], 5, 2, export, {})
    assert report["runtimes"]["traced"] == {"available": False, "reason": "setup: daemon exited"}
    assert "traced: unavailable: setup: daemon exited" in trace_session.notes(report)
