"""The collector on the real kernel: known workloads in real cgroups and network namespaces.

Each test makes its cgroups under its own parent "/observe-rt-test-<rand>" (removed in every
hierarchy afterwards) and only sends traffic between namespaces it creates.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.request
import uuid

import pytest
from prometheus_client.parser import text_string_to_metric_families

from observe_rt.collect import cgroup_reader
from observe_rt.collect.collector import Collector
from observe_rt.cri import stats as cri
from observe_rt.export import PrometheusExporter
from observe_rt.model import ContainerInfo, Inventory, PodInfo
from observe_rt.runtime.cgroups import CgroupManager, detect_layout, plan
from tests.support.bundles import remove_cgroup_tree

pytestmark = [
    pytest.mark.root,
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root for cgroupfs and netns"),
]

MiB = 1 << 20


@pytest.fixture
def cgroups():
    """Factory: cgroups(name, resources) -> created CgroupManager under a unique parent."""
    layout = detect_layout()
    parent = f"/observe-rt-test-{uuid.uuid4().hex[:10]}"
    made: list[CgroupManager] = []

    def make(name: str, resources: dict | None = None) -> CgroupManager:
        mgr = CgroupManager(plan(resources, f"{parent}/{name}", layout))
        made.append(mgr)
        mgr.create()
        return mgr

    try:
        yield make
    finally:
        for mgr in made:
            try:
                mgr.destroy(timeout=5)
            except Exception:
                pass
        remove_cgroup_tree(parent)


@pytest.fixture
def children():
    procs: list[subprocess.Popen] = []
    yield procs
    for proc in procs:
        proc.kill()
        proc.wait()


def start_in(mgr: CgroupManager, code: str, children: list) -> subprocess.Popen:
    """A Python child moved into `mgr` before it runs `code` (it waits for a line first)."""
    script = "import sys\nsys.stdin.readline()\n" + code
    child = subprocess.Popen(
        [sys.executable, "-I", "-S", "-c", script],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    children.append(child)
    mgr.add_process(child.pid)
    child.stdin.write("go\n")
    child.stdin.flush()
    return child


def info(mgr: CgroupManager, cid: str, name: str = "app", pod: str = "pod1") -> ContainerInfo:
    return ContainerInfo(
        id=cid, pod_id=pod, name=name, image="busybox:1",
        cgroup_path=mgr.cgroup_path, cgroup_paths=mgr.paths(), started_at_ns=time.time_ns(),
    )  # fmt: skip


def scrape(url: str) -> dict[tuple[str, tuple], float]:
    with urllib.request.urlopen(url, timeout=5) as response:
        text = response.read().decode()
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def series(samples: dict, metric: str, **labels) -> float:
    (value,) = [v for (n, lab), v in samples.items() if n == metric and labels.items() <= set(lab)]
    return value


BUSY = "while True:\n    pass\n"


def test_half_cpu_quota_in_cri_and_prometheus(cgroups, children):
    mgr = cgroups("busy", {"cpu": {"quota": 50000, "period": 100000}})
    start_in(mgr, BUSY, children)
    ctr = info(mgr, "busy01")
    collector = Collector(lambda: Inventory([], [ctr]))
    exporter = PrometheusExporter(collector.snapshot, address="127.0.0.1:0")
    exporter.start()
    try:
        collector.tick()
        rates = []
        for _ in range(3):
            time.sleep(1.0)
            msg = cri.container_stats(collector.tick(), "busy01")
            rates.append(msg.cpu.usage_nano_cores.value)
        mean = sum(rates) / len(rates)
        assert abs(mean - 0.5e9) <= 0.05e9, rates

        first, t1 = scrape(exporter.url), collector.snapshot().containers["busy01"].timestamp_ns
        time.sleep(2.0)
        collector.tick()
        second, t2 = scrape(exporter.url), collector.snapshot().containers["busy01"].timestamp_ns
    finally:
        exporter.stop()
    name = "container_cpu_usage_seconds_total"
    used = series(second, name, name="busy01", cpu="total") - series(first, name, name="busy01")
    rate = used / ((t2 - t1) / 1e9)
    assert abs(rate - 0.5) <= 0.05, rate
    assert series(second, "container_spec_cpu_quota", name="busy01") == 50000
    assert series(second, "container_cpu_cfs_throttled_periods_total", name="busy01") > 0


def test_working_set_of_64_mib_touched(cgroups, children):
    mgr = cgroups("mem")
    child = start_in(
        mgr,
        "import time\nb = bytearray(64 << 20)\n"
        "for i in range(0, len(b), 4096):\n    b[i] = 1\n"
        "print('ready', flush=True)\ntime.sleep(120)\n",
        children,
    )
    assert child.stdout.readline().strip() == "ready"
    snap = Collector(lambda: Inventory([], [info(mgr, "mem01")])).tick()
    memory = snap.containers["mem01"].cgroup.memory
    assert memory.working_set_bytes >= 64 * MiB
    assert memory.rss_bytes >= 64 * MiB
    msg = cri.container_stats(snap, "mem01")
    assert msg.memory.working_set_bytes.value >= 64 * MiB
    assert msg.memory.available_bytes.value == 0  # no limit


def test_oom_kill_moves_oom_events(cgroups, children):
    mgr = cgroups("oom", {"memory": {"limit": 48 * MiB, "swap": 48 * MiB}})
    collector = Collector(lambda: Inventory([], [info(mgr, "oom01")]))
    exporter = PrometheusExporter(collector.snapshot)
    collector.tick()
    before = _render(exporter)[("container_oom_events_total", "oom01")]
    child = start_in(mgr, "data = b'x' * (256 << 20)\n", children)
    assert child.wait(timeout=30) == -signal.SIGKILL
    collector.tick()
    after = _render(exporter)[("container_oom_events_total", "oom01")]
    assert after >= before + 1


def _render(exporter: PrometheusExporter) -> dict[tuple[str, str], float]:
    out = {}
    for family in text_string_to_metric_families(exporter.render().decode()):
        for s in family.samples:
            out[(s.name, s.labels.get("name", ""))] = s.value
    return out


def test_timestamps_advance_on_the_collector_thread(cgroups, children):
    mgr = cgroups("ts")
    start_in(mgr, "import time\ntime.sleep(120)\n", children)
    pod = PodInfo(id="pod1", name="web", namespace="default", uid="u",
                  cgroup_path=mgr.cgroup_path, cgroup_paths=mgr.paths())  # fmt: skip
    collector = Collector(lambda: Inventory([pod], [info(mgr, "ts01")]), interval=0.2)
    collector.start()
    try:
        first = collector.wait_for(0, timeout=5)
        second = collector.wait_for(first.seq, timeout=5)
    finally:
        collector.stop()
    assert second.seq > first.seq
    a, b = cri.list_container_stats(first)[0], cri.list_container_stats(second)[0]
    assert 0 < a.cpu.timestamp < b.cpu.timestamp and a.memory.timestamp < b.memory.timestamp
    pa, pb = cri.pod_sandbox_stats(first, "pod1"), cri.pod_sandbox_stats(second, "pod1")
    assert 0 < pa.linux.cpu.timestamp < pb.linux.cpu.timestamp
    assert pb.linux.process.process_count.value >= 1
    assert b.cpu.HasField("usage_nano_cores")


def test_vanishing_cgroups_are_skipped_and_counted(cgroups, children, monkeypatch):
    keep, gone, mid = cgroups("keep"), cgroups("gone"), cgroups("mid")
    containers = [info(keep, "keep01"), info(gone, "gone01", "b"), info(mid, "mid01", "c")]
    collector = Collector(lambda: Inventory([], containers))
    assert set(collector.tick().containers) == {"keep01", "gone01", "mid01"}

    gone.destroy(timeout=5)  # removed between two ticks
    real = cgroup_reader.read_processes

    def remove_mid_sample(paths):
        if paths == mid.paths():
            mid.destroy(timeout=5)  # removed while its cgroup is being read
        return real(paths)

    monkeypatch.setattr(cgroup_reader, "read_processes", remove_mid_sample)
    snap = collector.tick()
    assert set(snap.containers) == {"keep01"}
    assert snap.skipped["vanished"] == 2
    assert cri.container_stats(snap, "gone01") is None
    assert len(cri.list_container_stats(snap)) == 1


# --- pod network counters -------------------------------------------------------------------


@pytest.fixture
def netns_pair():
    """Two fresh network namespaces joined by a veth pair: (name_a, name_b, ip_b)."""
    tag = uuid.uuid4().hex[:6]
    a, b = f"ort-test-{tag}-a", f"ort-test-{tag}-b"
    run = lambda *args: subprocess.run(["ip", *args], check=True, capture_output=True)  # noqa: E731
    try:
        run("netns", "add", a)
        run("netns", "add", b)
        run("link", "add", "eth0", "netns", a, "type", "veth", "peer", "name", "eth0", "netns", b)
        for ns, addr in ((a, "10.213.7.1/30"), (b, "10.213.7.2/30")):
            run("-n", ns, "addr", "add", addr, "dev", "eth0")
            run("-n", ns, "link", "set", "eth0", "up")
            run("-n", ns, "link", "set", "lo", "up")
        yield a, b, "10.213.7.2"
    finally:
        for ns in (a, b):
            subprocess.run(["ip", "netns", "del", ns], capture_output=True)


RECEIVER = """
import socket, sys
srv = socket.socket(); srv.bind(("10.213.7.2", 5555)); srv.listen(1)
print("listening", flush=True)
conn, _ = srv.accept()
total = 0
while chunk := conn.recv(65536):
    total += len(chunk)
print(total, flush=True)
sys.stdin.readline()
"""
SENDER = """
import socket
s = socket.create_connection(("10.213.7.2", 5555), timeout=10)
s.sendall(b"z" * {n}); s.close()
"""


def test_pod_network_counters_grow_by_the_bytes_sent(netns_pair, children):
    ns_a, ns_b, _ = netns_pair
    receiver = subprocess.Popen(
        ["ip", "netns", "exec", ns_b, sys.executable, "-I", "-S", "-c", RECEIVER],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    children.append(receiver)
    assert receiver.stdout.readline().strip() == "listening"
    pods = [
        PodInfo(id="pa", name="a", namespace="t", uid="1", netns_path=f"/run/netns/{ns_a}"),
        PodInfo(id="pb", name="b", namespace="t", uid="2", netns_pid=receiver.pid),
    ]
    collector = Collector(lambda: Inventory(pods, []))
    before = collector.tick()
    n = 3 * MiB
    code = SENDER.format(n=n)
    subprocess.run(["ip", "netns", "exec", ns_a, sys.executable, "-I", "-S", "-c", code],
                   check=True, timeout=30)  # fmt: skip
    assert int(receiver.stdout.readline()) == n
    after = collector.tick()
    assert after.skipped_total == 0

    def eth0(snap, pod):
        net = snap.pods[pod].network
        assert net.default_interface == "eth0" and [i.name for i in net.interfaces] == ["eth0"]
        return net.interface("eth0")

    assert eth0(after, "pa").tx_bytes - eth0(before, "pa").tx_bytes >= n
    assert eth0(after, "pb").rx_bytes - eth0(before, "pb").rx_bytes >= n
    msg = cri.pod_sandbox_stats(after, "pb")
    assert msg.linux.network.default_interface.rx_bytes.value >= n
    assert msg.linux.network.timestamp > cri.pod_sandbox_stats(before, "pb").linux.network.timestamp
