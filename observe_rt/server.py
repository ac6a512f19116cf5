"""The CRI server behind `observe-rt daemon`: serve runtime.v1 on a unix socket.

    config (defaults < TOML < flags) ─> image service, CNI, record stores
    ─> RuntimeServicer + ImageServicer on one gRPC server ─> unix socket (mode 0660)

Pods run in detached shims, so stopping the daemon (SIGTERM, or kill -9) leaves them running;
a new daemon reloads the records from disk and finds the shims again.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import signal
import threading
from concurrent import futures
from pathlib import Path

from observe_rt.config import DaemonConfig

log = logging.getLogger("observe_rt.daemon")


class JsonFormatter(logging.Formatter):
    """One JSON object per line on stderr: journald and log shippers keep the fields."""

    def format(self, record: logging.LogRecord) -> str:
        entry = {"time": self.formatTime(record, "%Y-%m-%dT%H:%M:%S"), "level": record.levelname,
                 "logger": record.name, "msg": record.getMessage()}  # fmt: skip
        if record.exc_info:
            entry["error"] = self.formatException(record.exc_info)
        return json.dumps(entry)


def build_server(cfg: DaemonConfig) -> tuple:
    """The gRPC server with both CRI services, and the parts behind them (for tests)."""
    import grpc

    from observe_rt.collect.collector import Collector
    from observe_rt.cri import rpc
    from observe_rt.cri.containers import Containers
    from observe_rt.cri.image_service import ImageServicer
    from observe_rt.cri.inventory import InventorySource
    from observe_rt.cri.records import ContainerRecord, RecordStore, SandboxRecord
    from observe_rt.cri.runtime_service import RuntimeServicer
    from observe_rt.cri.sandboxes import Sandboxes
    from observe_rt.cri.v1 import api_pb2_grpc
    from observe_rt.export.prometheus import PrometheusExporter
    from observe_rt.network.cni import CniManager
    from observe_rt.oci.images import ImageService
    from observe_rt.oci.policy import TrustPolicy
    from observe_rt.stream.cri import CriStreams

    # Root only (CVE-2021-41103 class): bundles hold the pods' env, rootfses their files, and
    # mountinfo shows other users the ids. No container needs a path through here: the
    # overlay and bind mounts are made as root, and CRI pods have no user namespaces.
    for directory in (cfg.state_dir, cfg.run_dir, cfg.oci_root):
        os.makedirs(directory, mode=0o700, exist_ok=True)
        os.chmod(directory, 0o700)
    images = ImageService(cfg.images_dir, hosts_dir=cfg.registry_hosts_dir,
                          policy=TrustPolicy.load(cfg.policy))  # fmt: skip
    network = CniManager(cfg.cni_conf_dir, list(cfg.cni_bin_dirs),
                         os.path.join(cfg.state_dir, "cni"), cfg.cni_timeout)  # fmt: skip
    sandboxes = Sandboxes(cfg, RecordStore(Path(cfg.state_dir) / "pods", SandboxRecord), network)
    probes = _start_probes(cfg)
    containers = Containers(cfg, RecordStore(Path(cfg.state_dir) / "containers", ContainerRecord),
                            sandboxes, images, probes=probes)  # fmt: skip
    # Message limits as containerd sets them: ExecSync output alone may be 2 x 16 MiB.
    limits = [("grpc.max_receive_message_length", 64 << 20),
              ("grpc.max_send_message_length", 64 << 20)]  # fmt: skip
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=16, thread_name_prefix="cri",
                                                    initializer=_name_worker),
                         options=limits)  # fmt: skip
    collector = Collector(InventorySource(sandboxes, containers, cfg.oci_root),
                          interval=cfg.stats_interval)  # fmt: skip
    runtime = RuntimeServicer(sandboxes, containers, network, collector.snapshot)
    # Exec/Attach/PortForward URLs lead to this server (loopback, ephemeral port by default).
    runtime.streams = CriStreams(containers, sandboxes,
                                 cfg.stream_address)  # fmt: skip
    api_pb2_grpc.add_RuntimeServiceServicer_to_server(runtime, server)
    api_pb2_grpc.add_ImageServiceServicer_to_server(ImageServicer(images), server)
    exporter = PrometheusExporter(collector.snapshot, cfg.metrics_address)
    collector.on_tick = exporter.runtime.observe_tick
    rpc.observers.append(exporter.runtime.observe_rpc)  # latency and errors of every CRI call
    images.on_pull = exporter.runtime.observe_pull
    probe_metrics = None
    if probes is not None:
        from observe_rt.export.probes import ProbeMetrics

        probe_metrics = ProbeMetrics(probes)
        exporter.registry.register(probe_metrics)
        collector.on_tick = probe_metrics.wrap_tick(collector.on_tick)
        containers.on_probe_event = probe_metrics.note_event
    _mount_live_view(exporter, collector, containers, probe_metrics)
    return server, {"sandboxes": sandboxes, "containers": containers, "images": images,
                    "streams": runtime.streams, "collector": collector,
                    "exporter": exporter, "probes": probes}  # fmt: skip


def _mount_live_view(exporter, collector, containers, probe_metrics) -> None:
    """GET /api/v1/view beside /metrics: what `observe-rt top` reads (export/liveview.py)."""
    from observe_rt.export.liveview import VIEW_PATH, LiveView

    live = LiveView(collector.snapshot, probe_metrics, records=containers.store.items.get)
    collector.on_tick = live.wrap_tick(collector.on_tick)  # after the probes' refresh
    containers.on_probe_event = live.wrap_event(containers.on_probe_event)
    exporter.routes[VIEW_PATH] = live.wsgi_app


def _start_probes(cfg: DaemonConfig):
    """Compile and attach the eBPF probes once; without BPF the runtime runs on, and says why."""
    if not cfg.probes:
        return None
    from observe_rt import trace
    from observe_rt.probes.manager import ProbeManager

    probes = ProbeManager(pin_dir=cfg.bpf_pin_dir or None)
    with trace.span("probes.start") as span:
        status = probes.start()
        span.set_attribute("observe_rt.probes.available", status.available)
        for probe in (p for p in status.probes if not p.up):  # start-up failures, with why
            span.add_event("probe_failed", {"observe_rt.probe.name": probe.name,
                                            "observe_rt.probe.reason": probe.reason})  # fmt: skip
    if status.available:
        up = [p.name for p in status.probes if p.up]
        log.info("eBPF probes up (%s) in %.0f ms", ", ".join(up), status.compile_ms)
    else:
        log.warning("eBPF probes off: %s", status.reason)
    return probes


def _track_running(containers, probes) -> None:
    """After a restart: track every container that still runs, and drop what pinned maps
    still hold for containers that went while no daemon ran."""
    for record in containers.store.all():
        if record.cgroup_id and record.state in ("CREATED", "RUNNING"):
            probes.track(record.cgroup_id)
    if forgotten := probes.forget_others():
        log.info("dropped pinned probe state of %d containers that are gone", forgotten)


def _name_worker() -> None:
    """CRI workers show as "cri-worker" in /proc: a pool that grows to its size is not a leak."""
    from observe_rt.host import libc

    libc.set_thread_name("cri-worker")


def serve(cfg: DaemonConfig) -> int:
    from observe_rt import trace

    if trace.setup(cfg):  # before build_server: the probes' start is traced too
        log.info("OpenTelemetry traces on")
    server, parts = build_server(cfg)
    # Containers first: a half-made pod has none, and a half-made container needs its pod.
    undone = parts["containers"].recover_unfinished() + parts["sandboxes"].recover_unfinished()
    if undone:
        log.warning("undid %d pods and containers a previous daemon left half-made", undone)
    recovered = sum(1 for r in parts["containers"].store.all() if parts["containers"].refresh(r))
    os.makedirs(os.path.dirname(cfg.socket), exist_ok=True)
    if os.path.exists(cfg.socket):
        os.unlink(cfg.socket)  # a stale socket of a dead daemon
    server.add_insecure_port(f"unix://{cfg.socket}")
    server.start()
    parts["streams"].server.start()
    parts["collector"].start()
    if cfg.metrics_address:
        host, port = parts["exporter"].start()
        log.info("Prometheus metrics on http://%s:%d/metrics", host, port)
    os.chmod(cfg.socket, cfg.socket_mode)
    log.info("serving CRI on %s (%d pods, %d containers reloaded)", cfg.socket,
             len(parts["sandboxes"].store.all()), recovered)  # fmt: skip
    stop = threading.Event()
    threading.Thread(target=parts["containers"].watch_exits, args=(stop,), daemon=True,
                     name="exit-watcher").start()  # fmt: skip
    if parts["probes"] is not None:
        _track_running(parts["containers"], parts["probes"])
        threading.Thread(target=parts["containers"].watch_probes, args=(stop,), daemon=True,
                         name="probe-events").start()  # fmt: skip
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    stop.wait()
    log.info("shutting down: in-flight calls get 10 s; pods keep running")
    server.stop(10).wait()
    parts["streams"].server.stop()
    parts["collector"].stop()
    if parts["probes"] is not None:
        parts["probes"].stop()
    if cfg.metrics_address:
        parts["exporter"].stop()
    trace.shutdown()  # queued spans get a few seconds to leave
    with contextlib.suppress(OSError):
        os.unlink(cfg.socket)
    return 0
