"""Runtime events and executor steps as spans, and the probes' start-up failures (no root)."""

from __future__ import annotations

import json

import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace.status import StatusCode

from observe_rt import trace
from observe_rt.config import DaemonConfig
from observe_rt.probes.events import ProbeState, ProbeStatus
from observe_rt.trace import lifecycle


@pytest.fixture
def spans():
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    trace.install(provider)
    yield exporter
    trace.shutdown()


def test_events_link_to_the_containers_start_and_carry_its_names(spans):
    tracer = trace._tracer
    with tracer.start_as_current_span("create") as create:
        lifecycle.remember("RunPodSandbox", {"k8s.pod.sandbox.id": "p9", "k8s.pod.name": "web"},
                           create.get_span_context())  # fmt: skip
        lifecycle.remember("CreateContainer", {"k8s.pod.sandbox.id": "p9", "container.id": "c9",
                                               "k8s.container.name": "app"},
                           create.get_span_context())  # fmt: skip
    with tracer.start_as_current_span("start") as start:
        lifecycle.remember("StartContainer", {"container.id": "c9"}, start.get_span_context())
    trace.container_event("c9", "container.exit", {"observe_rt.exit.code": 1}, error="Error")
    (event,) = [s for s in spans.get_finished_spans() if s.name == "container.exit"]
    assert event.links[0].context.span_id == start.get_span_context().span_id
    assert dict(event.attributes) == {"k8s.pod.sandbox.id": "p9", "k8s.pod.name": "web",
                                      "k8s.container.name": "app", "container.id": "c9",
                                      "observe_rt.exit.code": 1}  # fmt: skip
    assert event.status.status_code == StatusCode.ERROR and event.status.description == "Error"
    assert [e.name for e in event.events] == ["exit"]
    assert lifecycle.known({"container.id": "c9"})["k8s.pod.name"] == "web"
    lifecycle.remember("RemoveContainer", {"container.id": "c9"}, None)
    assert lifecycle.known({"container.id": "c9"}) == {"container.id": "c9"}


def test_events_of_unknown_containers_still_name_the_container(spans):
    trace.container_event("c-after-restart", "container.shim_died", {}, error="shim gone")
    (event,) = spans.get_finished_spans()
    assert event.attributes["container.id"] == "c-after-restart" and not event.links


def test_executor_steps_become_child_spans_with_their_times(spans, tmp_path):
    steps = tmp_path / "steps.json"
    steps.write_text(json.dumps({"steps": [["cgroups", 1000, 2000], ["init", 2000, 9000]]}))
    with trace.span("executor.create"):
        trace.executor_steps(str(steps))
        trace.executor_steps(str(tmp_path / "absent.json"))  # runc: no steps, no spans
    finished = {s.name: s for s in spans.get_finished_spans()}
    assert set(finished) == {"executor.create", "executor.cgroups", "executor.init"}
    init = finished["executor.init"]
    assert (init.start_time, init.end_time) == (2000, 9000)
    assert init.parent.span_id == finished["executor.create"].context.span_id


def test_probe_start_up_failures_are_span_events(spans, monkeypatch):
    from observe_rt import server
    from observe_rt.probes import manager

    class Failing:
        def __init__(self, **_options) -> None:
            pass

        def start(self):
            return ProbeStatus(False, "bcc missing", probes=(
                ProbeState("syscalls", False, "bcc missing"), ProbeState("oom", False, "no BTF"),
            ))  # fmt: skip

    monkeypatch.setattr(manager, "ProbeManager", Failing)
    server._start_probes(DaemonConfig())
    (span,) = spans.get_finished_spans()
    assert span.name == "probes.start" and span.attributes["observe_rt.probes.available"] is False
    failures = [(e.name, dict(e.attributes)) for e in span.events]
    assert failures == [
        ("probe_failed", {"observe_rt.probe.name": "syscalls",
                          "observe_rt.probe.reason": "bcc missing"}),
        ("probe_failed", {"observe_rt.probe.name": "oom", "observe_rt.probe.reason": "no BTF"}),
    ]  # fmt: skip
