"""The Prometheus endpoint: cAdvisor-compatible container series plus the runtime's own metrics.

    exporter = PrometheusExporter(collector.snapshot, address="127.0.0.1:9464")
    collector.on_tick = exporter.runtime.observe_tick      # collector tick durations
    exporter.start()                                        # GET http://127.0.0.1:9464/metrics
    exporter.runtime.observe_rpc("ListContainerStats", 0.002, code="OK")
    exporter.runtime.observe_pull("docker.io/library/busybox:1", 812345, 1.7)
    exporter.stop()

SnapshotCollector builds every container_* family from the latest Snapshot at scrape time
(names, help and labels in model/series.py), so a scrape never reads a cgroup. The runtime's
own series live in the same registry:

    observe_rt_cri_request_duration_seconds{method}          histogram
    observe_rt_cri_request_errors_total{method,code}         counter
    observe_rt_image_pull_bytes_total                        counter
    observe_rt_image_pull_duration_seconds{result}           histogram
    observe_rt_pods{state}, observe_rt_containers{state}     gauges (from the snapshot)
    observe_rt_container_restarts{id,name,...,container}     gauge (CRI attempt, from the snapshot)
    observe_rt_collector_tick_duration_seconds               histogram
    observe_rt_collector_skipped_series_total{reason}        counter (from the snapshot)
    observe_rt_trace_spans_exported_total                    counter (observe_rt/trace)
    observe_rt_trace_spans_dropped_total{reason}             counter: queue_full, export_failed
"""

from __future__ import annotations

import socket
import threading
from collections.abc import Callable, Iterator
from wsgiref.simple_server import WSGIRequestHandler, make_server

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.exposition import ThreadingWSGIServer, make_wsgi_app
from prometheus_client.metrics_core import CounterMetricFamily, GaugeMetricFamily, Metric

from observe_rt.model.series import BASE_LABELS, SERIES, container_labels, subjects
from observe_rt.model.snapshot import Snapshot

DEFAULT_ADDRESS = "127.0.0.1:9464"

_RPC_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)
_PULL_BUCKETS = (0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600)
_TICK_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5)


def _family(series) -> Metric:
    """An empty family; a counter's family name drops "_total" (the client adds it back)."""
    name = series.name.removesuffix("_total") if series.kind == "counter" else series.name
    return Metric(name, series.help, series.kind)


class SnapshotCollector:
    """A prometheus_client collector reading `snapshot()` (e.g. Collector.snapshot) per scrape."""

    def __init__(self, snapshot: Callable[[], Snapshot]) -> None:
        self._snapshot = snapshot

    def describe(self) -> list[Metric]:
        return [_family(s) for s in SERIES] + list(self._own(Snapshot()))

    def collect(self) -> Iterator[Metric]:
        snapshot = self._snapshot()
        subs = list(subjects(snapshot))
        for series in SERIES:
            family = _family(series)
            names = series.label_names
            for subject in subs:
                for extra, value in series.values(subject):
                    # The sample keeps the exact cAdvisor name (the family strips "_total").
                    labels = dict(zip(names, subject.labels + extra, strict=True))
                    family.add_sample(series.name, labels, value)
            yield family
        yield from self._own(snapshot)

    @staticmethod
    def _own(snapshot: Snapshot) -> Iterator[Metric]:
        pods = GaugeMetricFamily("observe_rt_pods", "Pod sandboxes by state.", labels=["state"])
        for state, count in sorted(snapshot.pod_states.items()):
            pods.add_metric([state], count)
        containers = GaugeMetricFamily(
            "observe_rt_containers", "Containers by state.", labels=["state"]
        )
        for state, count in sorted(snapshot.container_states.items()):
            containers.add_metric([state], count)
        skipped = CounterMetricFamily(
            "observe_rt_collector_skipped_series",
            "Series the collector left out of a tick (vanished cgroup, unreadable file, ...).",
            labels=["reason"],
        )
        for reason, count in sorted(snapshot.skipped.items()):
            skipped.add_metric([reason], count)
        # The kubelet names a restarted container's attempt in its metadata (0 for the first
        # run), so the running attempt is the restart count kubectl shows.
        restarts = GaugeMetricFamily(
            "observe_rt_container_restarts",
            "Times the kubelet restarted this container in its pod (CRI metadata attempt).",
            labels=list(BASE_LABELS),
        )
        for cid in sorted(snapshot.containers):
            info = snapshot.containers[cid].info
            restarts.add_metric(list(container_labels(snapshot, info)), info.attempt)
        yield from (pods, containers, skipped, restarts)


class TraceQueueCollector:
    """Spans the trace export queue handed over or dropped (zeros while tracing is off)."""

    def collect(self) -> Iterator[Metric]:
        from observe_rt import trace

        exported, dropped = trace.stats.snapshot()
        sent = CounterMetricFamily("observe_rt_trace_spans_exported",
                                   "Spans the OTLP exporter delivered.")  # fmt: skip
        sent.add_metric([], exported)
        lost = CounterMetricFamily(
            "observe_rt_trace_spans_dropped",
            "Spans dropped: queue_full (the collector is slow or down), export_failed.",
            labels=["reason"],
        )
        for reason, count in sorted(dropped.items()):
            lost.add_metric([reason], count)
        yield from (sent, lost)


class RuntimeMetrics:
    """The runtime's own instruments; the daemon calls these from its RPC and pull paths."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.rpc_duration = Histogram(
            "observe_rt_cri_request_duration_seconds",
            "CRI request latency by method.",
            ["method"],
            buckets=_RPC_BUCKETS,
            registry=registry,
        )
        self.rpc_errors = Counter(
            "observe_rt_cri_request_errors_total",
            "CRI requests that ended with a non-OK gRPC status, by method and code.",
            ["method", "code"],
            registry=registry,
        )
        self.pull_bytes = Counter(
            "observe_rt_image_pull_bytes_total",
            "Bytes of image content downloaded by pulls.",
            registry=registry,
        )
        self.pull_duration = Histogram(
            "observe_rt_image_pull_duration_seconds",
            "Image pull duration, by result (ok or error).",
            ["result"],
            buckets=_PULL_BUCKETS,
            registry=registry,
        )
        self.tick_duration = Histogram(
            "observe_rt_collector_tick_duration_seconds",
            "Time the collector took to build one snapshot.",
            buckets=_TICK_BUCKETS,
            registry=registry,
        )

    def observe_rpc(self, method: str, seconds: float, code: str = "OK") -> None:
        """One finished CRI call; `code` is the gRPC status name ("OK", "NOT_FOUND", ...)."""
        self.rpc_duration.labels(method).observe(seconds)
        if code != "OK":
            self.rpc_errors.labels(method, code).inc()

    def observe_pull(self, image: str, nbytes: int, seconds: float, ok: bool = True) -> None:
        """One finished pull (`image` is for the caller's logs; not a label: unbounded)."""
        del image
        if nbytes > 0:
            self.pull_bytes.inc(nbytes)
        self.pull_duration.labels("ok" if ok else "error").observe(seconds)

    def observe_tick(self, snapshot: Snapshot) -> None:
        """Fits Collector(on_tick=...)."""
        self.tick_duration.observe(snapshot.tick_seconds)


def parse_address(address: str) -> tuple[str, int]:
    """ "host:port" or "[v6]:port" -> (host, port); port 0 lets the kernel choose."""
    host, sep, port = address.rpartition(":")
    if not sep or not port.isdigit() or not host:
        raise ValueError(f"metrics address {address!r}: expected host:port, e.g. {DEFAULT_ADDRESS}")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    value = int(port)
    if value > 65535:
        raise ValueError(f"metrics address {address!r}: port {value} out of range")
    return host, value


class PrometheusExporter:
    """A registry with the snapshot collector and runtime metrics, served over HTTP."""

    def __init__(self, snapshot: Callable[[], Snapshot], address: str = DEFAULT_ADDRESS) -> None:
        self.address = address
        self.host, self.port = parse_address(address)
        self.registry = CollectorRegistry()
        self.registry.register(SnapshotCollector(snapshot))
        self.registry.register(TraceQueueCollector())
        self.runtime = RuntimeMetrics(self.registry)
        # Other read-only paths served beside /metrics: path -> WSGI app (export/liveview.py).
        self.routes: dict[str, Callable] = {}
        self._server = None
        self._thread = None

    def render(self) -> bytes:
        """The text exposition, as a scrape would get it."""
        return generate_latest(self.registry)

    def start(self) -> tuple[str, int]:
        """Serve /metrics; returns the bound (host, port) (useful with port 0)."""
        if self._server is None:
            self._server = _serve(self.host, self.port, self._app(make_wsgi_app(self.registry)))
            self._thread = threading.Thread(target=self._server.serve_forever, daemon=True,
                                            name="metrics-http")  # fmt: skip
            self._thread.start()
            self.port = self._server.server_address[1]
        return self.host, self.port

    def _app(self, metrics):
        def app(environ, start_response):
            route = self.routes.get(environ.get("PATH_INFO", ""))
            return (route or metrics)(environ, start_response)

        return app

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}/metrics"

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            if self._thread is not None:
                self._thread.join(5)
            self._server = self._thread = None


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format, *args):
        """No access log on stderr (as prometheus_client's own server)."""


def _serve(host: str, port: int, app) -> ThreadingWSGIServer:
    """prometheus_client's threaded WSGI server, IPv4 or IPv6 as the address says."""
    family = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0][0]
    server_class = type("MetricsServer", (ThreadingWSGIServer,), {"address_family": family})
    return make_server(host, port, app, server_class, handler_class=_QuietHandler)
