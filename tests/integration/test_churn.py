"""Churn: pods with containers made and removed in a loop through the daemon's CRI leave
nothing behind, and the daemon's memory, descriptors and threads come back to where they were.

Each pod gets two containers: one still running when the pod is stopped (killed by
StopPodSandbox) and one that already exited. The baseline is measured after a warm-up batch:
the first pods load code paths, gRPC and the collector's caches once, which is not a leak.
`make reliability` runs the 500-pod version (marker `long`); `make test` runs 20 pods.
"""

from __future__ import annotations

import time

import pytest

from observe_rt.client.cri_client import CriClient
from tests.support import footprint
from tests.support.daemon import container_config, pod_config

pytestmark = pytest.mark.root

RSS_SLACK = 1.10  # RSS (and its anonymous part) may exceed the post-warm-up baseline by 10 %


def churn(daemon, client: CriClient, pods: int, tag: str) -> None:
    for i in range(pods):
        config = pod_config(daemon, name=f"churn-{tag}-{i}")
        pod_id = client.run_pod_sandbox(config)
        for name, script in (("runs", "sleep 300"), ("exits", "true")):
            cid = client.create_container(pod_id, container_config(daemon, name, script), config)
            client.start_container(cid)
        client.stop_pod_sandbox(pod_id)
        client.remove_pod_sandbox(pod_id)


def churn_and_check(daemon, pods: int, warm_up: int) -> None:
    with CriClient(daemon.socket, timeout=120) as client:
        churn(daemon, client, warm_up, "warm")
        before = footprint.settle(daemon)
        started = time.monotonic()
        churn(daemon, client, pods, "run")
        seconds = time.monotonic() - started
        assert client.list_pod_sandbox() == [] and client.list_containers() == []
    assert footprint.leftovers(daemon) == {}
    after = footprint.settle(daemon)
    print(f"churn: {pods} pods x 2 containers in {seconds:.0f} s after {warm_up} warm-up pods; "
          f"daemon before: {before}; after: {after}")  # fmt: skip
    assert after.fds <= before.fds, (before, after)
    assert after.threads <= before.threads, (before, after)
    assert after.rss_kib <= before.rss_kib * RSS_SLACK, (before, after)
    assert after.anon_kib <= before.anon_kib * RSS_SLACK, (before, after)


def test_twenty_pods_churned_leave_nothing_behind(daemon):
    churn_and_check(daemon, pods=20, warm_up=5)


@pytest.mark.long
@pytest.mark.timeout(3600)
def test_five_hundred_pods_churned_leave_nothing_behind(daemon):
    churn_and_check(daemon, pods=500, warm_up=20)
