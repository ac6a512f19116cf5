"""The bounded export queue: finished spans wait here for the exporter thread.

    CRI thread ── span ends ──> deque (at most `capacity`) ──> export thread ──> OTLP exporter
                                    └─ full: the span is dropped and counted (queue_full)
                                                       export fails: its batch is counted
                                                       (export_failed)

A CRI call only appends to a deque under a lock: a slow, unreachable or refusing collector
holds up the export thread (the exporter's own timeout and retries), never the call.
"""

from __future__ import annotations

import collections
import logging
import threading

from opentelemetry.sdk.trace import ReadableSpan, SpanProcessor
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult

from observe_rt.trace import QueueStats

log = logging.getLogger("observe_rt.trace")


class BoundedSpanProcessor(SpanProcessor):
    def __init__(self, exporter: SpanExporter, stats: QueueStats, capacity: int = 2048,
                 batch_size: int = 512, delay_s: float = 1.0) -> None:  # fmt: skip
        self.exporter = exporter
        self.stats = stats
        self.capacity = capacity
        self.batch_size = min(batch_size, capacity)
        self.delay_s = delay_s
        self._queue: collections.deque[ReadableSpan] = collections.deque()
        self._cond = threading.Condition()
        self._flush_requests = 0
        self._flushed = 0
        self._stopping = False
        self._thread = threading.Thread(target=self._run, name="trace-export", daemon=True)
        self._thread.start()

    # --- the CRI threads' side: never waits ----------------------------------------------------

    def on_end(self, span: ReadableSpan) -> None:
        if not span.context.trace_flags.sampled:
            return
        with self._cond:
            if self._stopping or len(self._queue) >= self.capacity:
                self.stats.add(queue_full=1)
                return
            self._queue.append(span)
            if len(self._queue) >= self.batch_size:
                self._cond.notify()

    # --- the export thread ----------------------------------------------------------------------

    def _run(self) -> None:
        while True:
            with self._cond:
                self._cond.wait_for(self._due, timeout=self.delay_s)
                batch = [self._queue.popleft()
                         for _ in range(min(self.batch_size, len(self._queue)))]  # fmt: skip
                flush_upto = self._flush_requests
                done = self._stopping and not self._queue
            if batch:
                self._export(batch)
            with self._cond:
                if not self._queue:
                    self._flushed = flush_upto
                    self._cond.notify_all()
            if done:
                return

    def _due(self) -> bool:
        return (len(self._queue) >= self.batch_size or self._stopping
                or self._flush_requests > self._flushed)  # fmt: skip

    def _export(self, batch: list[ReadableSpan]) -> None:
        try:
            result = self.exporter.export(batch)
        except Exception:  # noqa: BLE001 - an exporter bug must not end the export thread
            log.exception("span export failed")
            result = SpanExportResult.FAILURE
        if result == SpanExportResult.SUCCESS:
            self.stats.add(exported=len(batch))
        else:
            self.stats.add(export_failed=len(batch))

    # --- flush and shutdown -------------------------------------------------------------------

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        """Wait (at most the timeout) until everything queued now was handed to the exporter."""
        with self._cond:
            self._flush_requests += 1
            wanted = self._flush_requests
            self._cond.notify_all()
            done = lambda: self._flushed >= wanted or not self._thread.is_alive()  # noqa: E731
            return self._cond.wait_for(done, timeout=timeout_millis / 1000)

    def shutdown(self) -> None:
        with self._cond:
            self._stopping = True
            self._cond.notify_all()
        self._thread.join(timeout=5)  # a stuck export must not hold up the daemon
        self.exporter.shutdown()
