"""The daemon's read API for `observe-rt top` (export/liveview.py): bookkeeping per tick, rates,
events, and GET /api/v1/view beside /metrics. Snapshots and probe counters are made by hand."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from types import SimpleNamespace

import pytest

from observe_rt.export.liveview import VIEW_PATH, LiveView, read_cpu_jiffies, read_memory
from observe_rt.export.probes import ProbeMetrics
from observe_rt.export.prometheus import PrometheusExporter
from observe_rt.model.snapshot import (
    CgroupStats,
    ContainerInfo,
    ContainerMetrics,
    CpuStats,
    Limits,
    MemoryStats,
    PodInfo,
    PodMetrics,
    Snapshot,
)
from observe_rt.probes.events import (
    ContainerCounters,
    FlowClosed,
    OomKill,
    ProbeState,
    ProbeStatus,
    SyscallStats,
)
from observe_rt.probes.syscall_names import numbers

READ, OPENAT = numbers().get("read", 0), numbers().get("openat", 257)
BURNER, HOG0, HOG1 = 11, 12, 13  # cgroup ids
MEMINFO = "MemTotal:       8000000 kB\nMemFree:  100 kB\nMemAvailable:   6000000 kB\n"


class FakeProbes:
    """What ProbeMetrics asks a ProbeManager for."""

    def __init__(self) -> None:
        self.counters: dict[int, ContainerCounters] = {}
        self.lost = {"syscalls": 0}
        self.state = ProbeStatus(True, probes=(ProbeState("syscalls", True),))

    def drain_counters(self):
        return dict(self.counters)

    def lost_events(self):
        return dict(self.lost)

    def status(self):
        return self.state


def _container(cid, cgroup_id, name, attempt=0, cores=0.0, memory=1 << 20) -> ContainerMetrics:
    info = ContainerInfo(id=cid, pod_id="p1", name=name, attempt=attempt,
                         limits=Limits(cpu_quota_us=50_000, cpu_period_us=100_000,
                                       memory_limit_bytes=48 << 20))  # fmt: skip
    cpu = CpuStats(usage_ns=1, usage_nano_cores=int(cores * 1e9))
    cgroup = CgroupStats(timestamp_ns=1, cpu=cpu,
                         memory=MemoryStats(usage_bytes=memory, working_set_bytes=memory,
                                            limit_bytes=48 << 20))  # fmt: skip
    return ContainerMetrics(info=info, cgroup=cgroup, cgroup_id=cgroup_id)


def _snapshot(seq: int, *containers: ContainerMetrics) -> Snapshot:
    pod = PodMetrics(info=PodInfo(id="p1", name="shop", namespace="demo", uid="u"), timestamp_ns=1)
    return Snapshot(seq=seq, timestamp_ns=seq * 1_000_000_000, pods={"p1": pod},
                    containers={c.info.id: c for c in containers}, pod_states={"READY": 1},
                    container_states={"RUNNING": len(containers)})  # fmt: skip


def _counters(cgroup_id: int, reads: int, opens: int, open_errors: int) -> ContainerCounters:
    return ContainerCounters(
        cgroup_id,
        syscalls={READ: SyscallStats(READ, reads, 0, reads * 1000, (0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
                                                                   0, reads)),
                  OPENAT: SyscallStats(OPENAT, opens, open_errors, 0, ())},
        syscall_errors={(OPENAT, 2): open_errors},
    )  # fmt: skip


@pytest.fixture
def world(tmp_path):
    proc = tmp_path / "proc"
    proc.mkdir()
    (proc / "meminfo").write_text(MEMINFO)
    clock = SimpleNamespace(now=100.0)
    probes = FakeProbes()
    metrics = ProbeMetrics(probes, clock=lambda: clock.now)
    records = {"hog0": SimpleNamespace(state="EXITED", reason="OOMKilled", exit_code=137)}
    live = LiveView(lambda: Snapshot(), metrics, records=records.get, proc=proc,
                    clock=lambda: clock.now)  # fmt: skip

    def tick(snapshot: Snapshot, busy: int, total: int) -> None:
        (proc / "stat").write_text(f"cpu  {busy} 0 0 {total - busy} 0 0 0 0 0 0\ncpu0 1 2 3 4\n")
        clock.now += 1.0
        metrics.observe_tick(snapshot)
        live.observe_tick(snapshot)

    return SimpleNamespace(live=live, probes=probes, tick=tick)


def test_node_counters_from_proc(tmp_path):
    (tmp_path / "stat").write_text("cpu  100 5 20 800 75 0 0 0 0 0\n")
    (tmp_path / "meminfo").write_text(MEMINFO)
    assert read_cpu_jiffies(tmp_path) == (125, 1000)  # idle and iowait are not busy
    assert read_memory(tmp_path) == (8_192_000_000, 2_048_000_000)


def test_rates_limits_and_node_share_between_two_ticks(world):
    burner = _container("burner", BURNER, "cpu-burner", cores=0.5)
    world.probes.counters = {BURNER: _counters(BURNER, reads=100, opens=10, open_errors=4)}
    world.tick(_snapshot(1, burner), busy=1000, total=4000)
    world.probes.counters = {BURNER: _counters(BURNER, reads=300, opens=30, open_errors=14)}
    world.tick(_snapshot(2, burner), busy=2500, total=6000)
    doc = world.live.document()
    assert doc["node"]["cpu_percent"] == 75.0  # 1500 busy of 2000 jiffies
    assert doc["node"]["memory_used_bytes"] == 2_048_000_000
    assert doc["probes"] == {"available": True, "reason": "", "up": {"syscalls": True},
                             "events_lost": 0}  # fmt: skip
    (entry,) = doc["containers"]
    assert (entry["pod"], entry["namespace"], entry["name"]) == ("shop", "demo", "cpu-burner")
    assert (entry["cpu_cores"], entry["cpu_limit_cores"]) == (0.5, 0.5)
    assert entry["memory_limit_bytes"] == 48 << 20
    assert entry["syscalls_per_s"] == 220.0  # 200 reads + 20 openat in one second
    assert entry["syscall_errors_per_s"] == 10.0
    assert entry["top_syscall"] == "read"
    read, openat = entry["syscalls"]
    assert (read["calls"], read["per_s"], read["mean_ns"]) == (300, 200.0, 1000.0)
    assert openat["errnos"] == {"ENOENT": 14}


def test_exits_restarts_oom_kills_and_flows_become_events(world):
    hog0 = _container("hog0", HOG0, "memory-hog", memory=40 << 20)
    world.tick(_snapshot(1, hog0), 0, 100)
    world.live.note_event(OomKill(5_000, HOG0, 4242, "sh", HOG0, 4242, 60000, 49000, 1000, 0,
                                  "victim"))  # fmt: skip
    world.live.note_event(FlowClosed(6_000, HOG0, 10, "::ffff:10.9.0.4", 41000, "10.9.0.3", 8080,
                                     "active", 83, 262_335, 4_000_000, 0, 0, ()))  # fmt: skip
    world.live.note_event(OomKill(7_000, 999, 1, "x", 999, 1, 0, 0, 0, 0, "victim"))  # unknown
    before = world.live.document()["containers"][0]
    assert before["oom_kills"] == 1
    assert before["ooms"][0]["comm"] == "sh"
    assert before["flows"][0]["local"] == "10.9.0.4:41000"  # IPv4-mapped shown as IPv4
    assert before["flows"][0]["peer"] == "10.9.0.3:8080"
    world.tick(_snapshot(2, _container("hog1", HOG1, "memory-hog", attempt=1)), 0, 200)
    events = world.live.document()["events"]
    assert [(e["kind"], e["container_id"]) for e in events] == [
        ("oom", "hog0"), ("exit", "hog0"), ("restart", "hog1")]  # fmt: skip
    assert events[0]["text"] == "OOM killer stopped pid 4242 (sh), rss 48 MiB"
    assert events[1]["text"] == "exited: OOMKilled, code 137"
    assert (events[2]["pod"], events[2]["name"]) == ("shop", "memory-hog")


def test_probe_trouble_becomes_events(world):
    world.tick(_snapshot(1), 0, 100)
    world.probes.lost = {"syscalls": 7}
    world.probes.state = ProbeStatus(True, probes=(ProbeState("syscalls", False, "detached"),))
    world.tick(_snapshot(2), 0, 200)
    texts = [e["text"] for e in world.live.document()["events"]]
    assert texts == ["probe syscalls down: detached", "7 probe events lost (full buffers or maps)"]


def test_view_served_beside_metrics_and_cached_per_tick(world):
    world.tick(_snapshot(1, _container("burner", BURNER, "cpu-burner")), 0, 100)
    exporter = PrometheusExporter(Snapshot, "127.0.0.1:0")
    exporter.routes[VIEW_PATH] = world.live.wsgi_app
    host, port = exporter.start()
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # loopback only
    try:
        with opener.open(f"http://{host}:{port}{VIEW_PATH}", timeout=10) as answer:
            assert answer.headers["Content-Type"] == "application/json"
            doc = json.load(answer)
        assert doc["version"] == 1 and doc["seq"] == 1
        assert [c["name"] for c in doc["containers"]] == ["cpu-burner"]
        with opener.open(f"http://{host}:{port}/metrics", timeout=10) as answer:
            assert b"observe_rt_pods" in answer.read()
        request = urllib.request.Request(f"http://{host}:{port}{VIEW_PATH}", data=b"x")
        with pytest.raises(urllib.error.HTTPError) as refused:
            opener.open(request, timeout=10)
        assert refused.value.code == 405
    finally:
        exporter.stop()
    assert world.live.render() is world.live.render()  # one JSON body per tick
