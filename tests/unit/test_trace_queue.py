"""The bounded export queue: a stuck or failing exporter costs counted drops, never a wait."""

from __future__ import annotations

import threading

from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult

from observe_rt.trace import QueueStats
from observe_rt.trace.queue import BoundedSpanProcessor


class StuckExporter(SpanExporter):
    """Blocks in export until released, like a collector that never answers."""

    def __init__(self) -> None:
        self.entered = threading.Event()
        self.release = threading.Event()
        self.exported: list[str] = []

    def export(self, spans):
        self.entered.set()
        self.release.wait(60)
        self.exported += [s.name for s in spans]
        return SpanExportResult.SUCCESS

    def shutdown(self) -> None:
        self.release.set()


class FailingExporter(SpanExporter):
    def export(self, spans):
        return SpanExportResult.FAILURE


def tracer_with(processor):
    provider = TracerProvider()
    provider.add_span_processor(processor)
    return provider, provider.get_tracer("test")


def test_a_stuck_exporter_drops_and_counts_instead_of_blocking():
    exporter, stats = StuckExporter(), QueueStats()
    processor = BoundedSpanProcessor(exporter, stats, capacity=4, batch_size=1, delay_s=0.05)
    provider, tracer = tracer_with(processor)
    with tracer.start_as_current_span("first"):
        pass
    assert exporter.entered.wait(30), "the export thread never took the first span"
    # The export thread is stuck: 4 spans fit in the queue, the other 6 are dropped at once
    # (were on_end to wait, this loop would hang until the test's timeout).
    for i in range(10):
        with tracer.start_as_current_span(f"span-{i}"):
            pass
    assert stats.snapshot() == (0, {"queue_full": 6, "export_failed": 0})
    exporter.release.set()
    assert processor.force_flush(30_000)
    assert exporter.exported == ["first", "span-0", "span-1", "span-2", "span-3"]
    assert stats.snapshot()[0] == 5
    provider.shutdown()


def test_failed_exports_are_counted():
    stats = QueueStats()
    provider, tracer = tracer_with(BoundedSpanProcessor(FailingExporter(), stats, delay_s=0.05))
    for i in range(3):
        with tracer.start_as_current_span(f"span-{i}"):
            pass
    provider.force_flush(30_000)
    assert stats.snapshot() == (0, {"queue_full": 0, "export_failed": 3})
    provider.shutdown()


def test_unsampled_spans_are_not_queued():
    from opentelemetry.sdk.trace.sampling import ALWAYS_OFF

    exporter, stats = StuckExporter(), QueueStats()
    exporter.release.set()
    provider = TracerProvider(sampler=ALWAYS_OFF)
    provider.add_span_processor(BoundedSpanProcessor(exporter, stats, delay_s=0.05))
    with provider.get_tracer("test").start_as_current_span("never"):
        pass
    provider.force_flush(30_000)
    assert exporter.exported == [] and stats.snapshot()[0] == 0
    provider.shutdown()


def test_queue_counts_reach_prometheus():
    from observe_rt import trace
    from observe_rt.export.prometheus import PrometheusExporter
    from observe_rt.model.snapshot import Snapshot

    def counts(text: str) -> dict[str, float]:
        rows = [r for r in text.splitlines() if r.startswith("observe_rt_trace_spans_")]
        return {r.rsplit(" ", 1)[0]: float(r.rsplit(" ", 1)[1]) for r in rows}

    exporter = PrometheusExporter(Snapshot, "127.0.0.1:0")
    before = counts(exporter.render().decode())
    trace.stats.add(exported=3, queue_full=2)
    after = counts(exporter.render().decode())
    assert after["observe_rt_trace_spans_exported_total"] - before[
        "observe_rt_trace_spans_exported_total"] == 3  # fmt: skip
    key = 'observe_rt_trace_spans_dropped_total{reason="queue_full"}'
    assert after[key] - before[key] == 2
