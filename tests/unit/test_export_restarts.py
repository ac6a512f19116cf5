"""observe_rt_container_restarts: the CRI attempt of each sampled container, with its identity."""

from __future__ import annotations

from dataclasses import replace

from prometheus_client.parser import text_string_to_metric_families

from observe_rt.export import PrometheusExporter
from tests.unit.test_prometheus_names import sample_snapshot


def _restarts(snapshot) -> list:
    text = PrometheusExporter(lambda: snapshot).render().decode()
    families = {f.name: f for f in text_string_to_metric_families(text)}
    family = families["observe_rt_container_restarts"]
    assert family.type == "gauge"
    return family.samples


def test_restarts_carry_the_attempt_and_the_container_identity():
    snapshot = sample_snapshot()
    metrics = snapshot.containers["c1"]
    restarted = replace(metrics, info=replace(metrics.info, attempt=3))
    (sample,) = _restarts(replace(snapshot, containers={"c1": restarted}))
    assert sample.value == 3
    assert sample.labels == {"id": "/kp/p1/c1", "name": "c1", "image": "busybox:1", "pod": "web",
                             "namespace": "shop", "container": "app"}  # fmt: skip


def test_first_run_is_zero_restarts_and_pods_have_none():
    samples = _restarts(sample_snapshot())
    assert [(s.labels["container"], s.value) for s in samples] == [("app", 0)]
