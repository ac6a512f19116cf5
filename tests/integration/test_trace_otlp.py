"""The real daemon exporting traces over OTLP/gRPC on loopback, to a live and to a stuck collector.

Tracing is turned on the standard way, through OTEL_* variables the daemon inherits.
"""

from __future__ import annotations

import re
import time
import urllib.request

import pytest

from observe_rt.bench.cri_calls import metrics_url
from observe_rt.cri.v1 import api_pb2
from tests.support.daemon import container_config, pod_config, running_daemon, start_container
from tests.support.otlp_receiver import OtlpHttpReceiver, OtlpReceiver, silent_collector

pytestmark = pytest.mark.root
TRACE_ID = "0af7651916cd43dd8448eb211c80319c"
TRACEPARENT = f"00-{TRACE_ID}-b7ad6b7169203331-01"


@pytest.fixture
def traced_env(monkeypatch):
    def point_at(endpoint: str, **extra: str) -> None:
        monkeypatch.setenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", endpoint)
        monkeypatch.setenv("OTEL_BSP_SCHEDULE_DELAY", "200")
        for key, value in extra.items():
            monkeypatch.setenv(key, value)

    return point_at


def names(spans) -> set[str]:
    return {s.name for s in spans}


def test_spans_reach_a_live_otlp_receiver(daemon_registry, traced_env):
    with OtlpReceiver() as receiver:
        traced_env(receiver.endpoint)
        with running_daemon() as daemon:
            daemon.image = f"{daemon_registry.host}/test/busybox:1"
            images = daemon.images()
            images.PullImage(api_pb2.PullImageRequest(image=api_pb2.ImageSpec(image=daemon.image)))
            config = pod_config(daemon)
            request = api_pb2.RunPodSandboxRequest(config=config)
            pod_id = (
                daemon.runtime()
                .RunPodSandbox(request, metadata=[("traceparent", TRACEPARENT)])
                .pod_sandbox_id
            )
            start_container(daemon, pod_id, config, container_config(daemon, "app", "sleep 60"))
            service = "runtime.v1.RuntimeService"
            wanted = {"runtime.v1.ImageService/PullImage", f"{service}/RunPodSandbox",
                      f"{service}/CreateContainer", f"{service}/StartContainer", "cni.add",
                      "image.download", "executor.start"}  # fmt: skip
            spans = receiver.wait_for(lambda spans: wanted <= names(spans), timeout=60)
    resource = spans[0].resource
    assert resource["service.name"] == "observe-rt" and resource["host.name"]
    run_pod = next(s for s in spans if s.name.endswith("/RunPodSandbox"))
    assert run_pod.span.trace_id.hex() == TRACE_ID
    assert run_pod.span.parent_span_id.hex() == "b7ad6b7169203331"
    assert run_pod.attributes["k8s.pod.name"] == config.metadata.name
    assert run_pod.attributes["k8s.pod.sandbox.id"] == pod_id
    in_pod_trace = [s for s in spans if s.span.trace_id.hex() == TRACE_ID]
    cni = [s for s in in_pod_trace if s.name == "cni.add"]
    assert {s.attributes["cni.plugin.type"] for s in cni} == {"bridge", "loopback"}


def test_otlp_over_http_from_the_config_file():
    with OtlpHttpReceiver() as receiver, running_daemon() as daemon:
        # The daemon started without tracing; restart it with the config keys set.
        daemon.stop()
        keys = f'tracing_endpoint = "{receiver.endpoint}"\ntracing_protocol = "http"\n'
        daemon.config_file.write_text(keys + daemon.config_file.read_text())  # before any table
        daemon.start()
        daemon.runtime().Version(api_pb2.VersionRequest(), timeout=20)
        deadline = time.monotonic() + 30
        while not any(s.name.endswith("/Version") for s in receiver.spans):
            assert time.monotonic() < deadline, "no Version span over OTLP/HTTP"
            time.sleep(0.2)
        span = next(s for s in receiver.spans if s.name.endswith("/Version"))
    assert span.attributes["rpc.service"] == "runtime.v1.RuntimeService"
    assert span.resource["service.name"] == "observe-rt"


def test_a_stuck_collector_never_holds_up_cri_calls(daemon_registry, traced_env):
    """The collector accepts connections and never answers; every export waits 30 s. CRI calls
    go on with their normal deadlines, and the spans that do not fit the queue are counted."""
    with silent_collector() as endpoint:
        traced_env(endpoint, OTEL_BSP_MAX_QUEUE_SIZE="4", OTEL_EXPORTER_OTLP_TIMEOUT="30")
        with running_daemon() as daemon:
            runtime = daemon.runtime()
            for _ in range(30):
                runtime.Version(api_pb2.VersionRequest(), timeout=20)
            daemon.image = f"{daemon_registry.host}/test/busybox:1"
            daemon.images().PullImage(
                api_pb2.PullImageRequest(image=api_pb2.ImageSpec(image=daemon.image)), timeout=60
            )
            metrics = urllib.request.urlopen(metrics_url(daemon.log.read_text()), timeout=10)
            text = metrics.read().decode()
    dropped = re.search(r'^observe_rt_trace_spans_dropped_total\{reason="queue_full"\} (\S+)$',
                        text, re.M)  # fmt: skip
    assert dropped and float(dropped.group(1)) >= 20, text[-1500:]
    assert re.search(r"^observe_rt_trace_spans_exported_total 0\.0$", text, re.M)
