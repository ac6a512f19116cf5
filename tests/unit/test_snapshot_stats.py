"""Collector ticks over fixture cgroup trees -> Snapshot -> CRI stats messages (no root)."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from observe_rt.collect import collector as collector_mod
from observe_rt.collect.collector import Collector, OomLedger
from observe_rt.collect.layer_usage import LayerUsage, disk_usage
from observe_rt.cri import stats as cri
from observe_rt.cri.v1 import api_pb2
from observe_rt.model import ContainerInfo, Inventory, Limits, PodInfo, Snapshot
from observe_rt.model.series import BASE_LABELS
from tests.unit.test_cgroup_reader import MiB, make_v1_tree, make_v2_tree

NET_DEV = """Inter-|   Receive                                                |  Transmit
 face |bytes    packets errs drop fifo frame compressed multicast|bytes    packets errs drop fifo colls carrier compressed
    lo:     100       1    0    0    0     0          0         0      100       1    0    0    0     0       0          0
  eth0:    5000      50    1    2    0     0          0         0     7000      70    3    4    0     0       0          0
  net1:     300       3    0    0    0     0          0         0      400       4    0    0    0     0       0          0
"""  # noqa: E501


class FakeTime:
    """Stands in for the collector's `time` module: a clock the test moves."""

    def __init__(self) -> None:
        self.mono_ns = 1_000_000_000
        self.wall_ns = 1_700_000_000_000_000_000

    def monotonic_ns(self) -> int:
        return self.mono_ns

    def monotonic(self) -> float:
        return self.mono_ns / 1e9

    def time_ns(self) -> int:
        return self.wall_ns

    def advance(self, seconds: float) -> None:
        self.mono_ns += int(seconds * 1e9)
        self.wall_ns += int(seconds * 1e9)


@pytest.fixture
def clock(monkeypatch) -> FakeTime:
    fake = FakeTime()
    monkeypatch.setattr(collector_mod, "time", fake)
    return fake


class World:
    """A pod with two containers on fixture trees, and the inventory the daemon would give."""

    def __init__(self, root: Path) -> None:
        self.root = root
        (root / "proc" / "77" / "net").mkdir(parents=True)
        (root / "proc" / "77" / "net" / "dev").write_text(NET_DEV)
        self.layer = root / "upper"
        self.layer.mkdir()
        (self.layer / "file").write_bytes(b"x" * 10000)
        self.pod = PodInfo(
            id="pod1234", name="web", namespace="default", uid="uid-1", netns_pid=77,
            cgroup_path="/kubepods/pod1234", cgroup_paths=make_v1_tree(root, "kubepods/pod1234"),
            labels={"app": "web"}, created_at_ns=1_600_000_000 * 10**9,
        )  # fmt: skip
        self.app = ContainerInfo(
            id="c0ffee01", pod_id="pod1234", name="app", image="busybox:1",
            cgroup_path="/kubepods/pod1234/c0ffee01",
            cgroup_paths=make_v1_tree(root, "kubepods/pod1234/c0ffee01"),
            writable_layer=str(self.layer), labels={"tier": "front"},
            started_at_ns=1_650_000_000 * 10**9,
        )  # fmt: skip
        self.side = ContainerInfo(
            id="c0ffee02", pod_id="pod1234", name="side", image="busybox:1",
            cgroup_path="/kubepods/pod1234/c0ffee02",
            cgroup_paths=make_v2_tree(root / "v2", "kubepods/pod1234/c0ffee02"),
        )  # fmt: skip
        self.exited = ContainerInfo(id="dead0001", pod_id="pod1234", name="init", state="EXITED")
        self.containers = [self.app, self.side, self.exited]

    def sources(self) -> Inventory:
        return Inventory([self.pod], list(self.containers))

    def set_usage(self, info: ContainerInfo, usage_ns: int) -> None:
        Path(info.cgroup_paths["cpuacct"], "cpuacct.usage").write_text(str(usage_ns))

    def collector(self, **kw) -> Collector:
        return Collector(self.sources, proc_root=str(self.root / "proc"), **kw)


@pytest.fixture
def world(tmp_path) -> World:
    return World(tmp_path)


def test_rate_from_two_ticks_and_timestamps_advance(world, clock):
    col = world.collector()
    assert col.snapshot().seq == 0 and not col.snapshot().containers
    first = col.tick()
    assert first.containers["c0ffee01"].cgroup.cpu.usage_nano_cores is None
    world.set_usage(world.app, 5_000_000_000 + 500_000_000)  # 0.5 s of CPU ...
    clock.advance(1.0)  # ... in one second
    second = col.tick()
    assert second.containers["c0ffee01"].cgroup.cpu.usage_nano_cores == 500_000_000
    assert second.containers["c0ffee02"].cgroup.cpu.usage_nano_cores == 0
    third = col.tick()  # the wall clock did not move: timestamps still advance
    for a, b in ((first, second), (second, third)):
        assert b.seq == a.seq + 1 and b.timestamp_ns > a.timestamp_ns
        assert b.containers["c0ffee01"].timestamp_ns > a.containers["c0ffee01"].timestamp_ns
        assert b.pods["pod1234"].timestamp_ns > a.pods["pod1234"].timestamp_ns
    assert third.containers["c0ffee01"].cgroup.cpu.usage_nano_cores is None  # Δt = 0


def test_snapshot_contents(world, clock):
    snap = world.collector().tick()
    assert set(snap.containers) == {"c0ffee01", "c0ffee02"}  # the exited one is not sampled
    assert snap.container_states == {"RUNNING": 2, "EXITED": 1}
    assert snap.pod_states == {"READY": 1}
    assert snap.skipped_total == 0
    pod = snap.pods["pod1234"]
    assert pod.container_ids == ("c0ffee01", "c0ffee02")
    assert [i.name for i in pod.network.interfaces] == ["eth0", "net1"]  # lo left out
    assert pod.network.default_interface == "eth0"
    assert list(snap.containers_of("pod1234")) == [snap.containers[c] for c in pod.container_ids]
    with pytest.raises(TypeError):
        snap.containers["x"] = None  # read-only
    with pytest.raises(AttributeError):
        snap.seq = 5  # frozen


def test_lookup_by_cgroup_id(world, clock):
    snap = world.collector().tick()
    app = snap.containers["c0ffee01"]
    assert app.cgroup_id == os.stat(world.app.cgroup_paths["unified"]).st_ino
    assert snap.by_cgroup_id(app.cgroup_id) is app
    assert snap.by_cgroup_id(12345) is None


def test_vanished_and_unreadable_are_skipped_and_counted(world, clock):
    col = world.collector()
    shutil.rmtree(world.root / "v2")  # c0ffee02's cgroup is gone
    os.unlink(Path(world.app.cgroup_paths["memory"], "memory.stat"))
    snap = col.tick()
    assert "c0ffee02" not in snap.containers
    assert snap.containers["c0ffee01"].cgroup.memory is None
    assert snap.containers["c0ffee01"].cgroup.cpu is not None
    assert snap.skipped == {"vanished": 1, "unreadable": 1}
    snap = col.tick()
    assert snap.skipped == {"vanished": 2, "unreadable": 2}  # cumulative


def test_bad_sources_and_dead_netns_never_raise(world, clock):
    calls = []

    def broken():
        calls.append(1)
        raise RuntimeError("store locked")

    col = Collector(broken)
    snap = col.tick()
    assert snap.skipped == {"sources": 1} and snap.seq == 0 and calls
    world.pod = PodInfo(**{**world.pod.__dict__, "netns_pid": 999999})
    snap = world.collector().tick()
    assert snap.pods["pod1234"].network is None and snap.skipped == {"network": 1}


def test_unforeseen_failure_skips_one_container(world, clock, monkeypatch):
    real = collector_mod.read_cgroup

    def flaky(paths, ts):
        if paths == world.side.cgroup_paths:
            raise RuntimeError("bug")
        return real(paths, ts)

    monkeypatch.setattr(collector_mod, "read_cgroup", flaky)
    snap = world.collector().tick()
    assert set(snap.containers) == {"c0ffee01"} and snap.skipped == {"error": 1}


def test_spec_limits_from_cgroup_or_daemon(world, clock):
    snap = world.collector().tick()
    assert snap.containers["c0ffee01"].cgroup.limits.cpu_quota_us == 50000
    world.containers[0] = ContainerInfo(**{**world.app.__dict__, "limits": Limits(cpu_shares=2)})
    snap = world.collector().tick()
    assert snap.containers["c0ffee01"].cgroup.limits == Limits(cpu_shares=2)


def test_oom_events_survive_a_restart(world, clock):
    col = world.collector()
    assert col.tick().containers["c0ffee01"].oom_events == 2
    # attempt 1 replaces attempt 0 (same pod, same name, new id and cgroup) and is killed once
    paths = make_v1_tree(world.root, "kubepods/pod1234/c0ffee03")
    Path(paths["memory"], "memory.oom_control").write_text("oom_kill 1\n")
    again = ContainerInfo(id="c0ffee03", pod_id="pod1234", name="app", attempt=1,
                          cgroup_paths=paths)  # fmt: skip
    world.containers = [again]
    assert col.tick().containers["c0ffee03"].oom_events == 3
    ledger = OomLedger()
    assert ledger.update("p", "n", "a", 2) == 2
    assert ledger.update("p", "n", "a", 1) == 2  # never goes back
    ledger.keep_pods(set())
    assert ledger.update("p", "n", "b", None) == 0


def test_writable_layer_measured_in_background(world, clock):
    col = world.collector(layer_rescan=3600)
    assert col.tick().containers["c0ffee01"].fs is None  # not scanned yet
    assert col.layers.scan_due() == 1
    fs = col.tick().containers["c0ffee01"].fs
    assert fs.used_bytes >= 10000 and fs.inodes_used == 2 and fs.fs_id == str(world.layer)
    (world.layer / "more").write_bytes(b"y" * 100000)
    assert col.layers.scan_due() == 0  # not due again for an hour
    assert col.tick().containers["c0ffee01"].fs.used_bytes == fs.used_bytes


def test_disk_usage_and_layer_cache(tmp_path):
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "a").write_bytes(b"a" * 8192)
    os.link(tmp_path / "d" / "a", tmp_path / "d" / "b")  # a hard link counts once
    (tmp_path / "d" / "s").symlink_to("a")
    used, inodes = disk_usage(str(tmp_path / "d"))
    assert inodes == 3 and used >= 8192
    layers = LayerUsage(rescan=0)
    layers.track([str(tmp_path / "d"), str(tmp_path / "missing")])
    assert layers.scan_due() == 2 and layers.errors == 1
    assert layers.get(str(tmp_path / "d"))[:2] == (used, inodes)
    layers.track([])
    assert layers.get(str(tmp_path / "d")) is None


# --- CRI conversion -------------------------------------------------------------------------


def _two_ticks(world, clock) -> tuple[Snapshot, Snapshot]:
    col = world.collector(layer_rescan=0)
    first = col.tick()
    col.layers.scan_due()
    world.set_usage(world.app, 6_000_000_000)
    clock.advance(2.0)
    return first, col.tick()


def test_container_stats_messages(world, clock):
    first, snap = _two_ticks(world, clock)
    msg = cri.container_stats(snap, "c0ffee01")
    assert msg.attributes.id == "c0ffee01" and msg.attributes.metadata.name == "app"
    assert dict(msg.attributes.labels) == {"tier": "front"}
    assert msg.cpu.timestamp > cri.container_stats(first, "c0ffee01").cpu.timestamp > 0
    assert msg.cpu.usage_core_nano_seconds.value == 6_000_000_000
    assert msg.cpu.usage_nano_cores.value == 500_000_000
    assert not cri.container_stats(first, "c0ffee01").cpu.HasField("usage_nano_cores")
    assert msg.cpu.psi.Some.Total == 12345 * 1000  # µs -> ns
    assert msg.memory.working_set_bytes.value == 74 * MiB
    assert msg.memory.available_bytes.value == 54 * MiB
    assert msg.memory.rss_bytes.value == 70 * MiB and msg.memory.major_page_faults.value == 7
    assert msg.swap.swap_usage_bytes.value == MiB
    assert msg.writable_layer.used_bytes.value >= 10000
    assert msg.writable_layer.fs_id.mountpoint == str(world.layer)
    assert msg.io.psi.Full.Avg10 == 0.5
    assert cri.container_stats(snap, "c0ffee") is None  # ambiguous prefix
    assert cri.container_stats(snap, "c0ffee02").attributes.id == "c0ffee02"
    assert cri.container_stats(snap, "dead0001") is None  # exited: not sampled


def test_list_container_stats_filters(world, clock):
    _, snap = _two_ticks(world, clock)
    ids = lambda msgs: [m.attributes.id for m in msgs]  # noqa: E731
    assert ids(cri.list_container_stats(snap)) == ["c0ffee01", "c0ffee02"]
    f = api_pb2.ContainerStatsFilter
    assert ids(cri.list_container_stats(snap, f(id="c0ffee02"))) == ["c0ffee02"]
    assert ids(cri.list_container_stats(snap, f(pod_sandbox_id="pod1"))) == ["c0ffee01", "c0ffee02"]
    assert ids(cri.list_container_stats(snap, f(pod_sandbox_id="other"))) == []
    assert ids(cri.list_container_stats(snap, f(label_selector={"tier": "front"}))) == ["c0ffee01"]
    assert ids(cri.list_container_stats(snap, f(id="nope"))) == []


def test_pod_sandbox_stats(world, clock):
    _, snap = _two_ticks(world, clock)
    msg = cri.pod_sandbox_stats(snap, "pod1234")
    meta = msg.attributes.metadata
    assert (meta.name, meta.namespace, meta.uid) == ("web", "default", "uid-1")
    linux = msg.linux
    assert linux.cpu.usage_core_nano_seconds.value == 5_000_000_000
    assert linux.memory.working_set_bytes.value == 74 * MiB
    assert linux.process.process_count.value == 6  # its own 3 and the app container's 3
    assert linux.network.default_interface.name == "eth0"
    assert linux.network.default_interface.rx_bytes.value == 5000
    assert linux.network.default_interface.tx_errors.value == 3
    assert [i.name for i in linux.network.interfaces] == ["net1"]
    assert [c.attributes.id for c in linux.containers] == ["c0ffee01", "c0ffee02"]
    assert linux.network.timestamp > 0
    f = api_pb2.PodSandboxStatsFilter
    assert len(cri.list_pod_sandbox_stats(snap)) == 1
    assert len(cri.list_pod_sandbox_stats(snap, f(label_selector={"app": "db"}))) == 0
    assert len(cri.list_pod_sandbox_stats(snap, f(id="pod"))) == 1
    assert cri.pod_sandbox_stats(snap, "zzz") is None


def test_metric_descriptors_and_pod_metrics(world, clock):
    _, snap = _two_ticks(world, clock)
    descriptors = cri.metric_descriptors()
    assert [d.name for d in descriptors] == [d.name for d in cri.metric_descriptors()]
    keys = {d.name: list(d.label_keys) for d in descriptors}
    assert all(k[:6] == list(BASE_LABELS) for k in keys.values())
    (pod,) = cri.pod_sandbox_metrics(snap)
    assert pod.pod_sandbox_id == "pod1234"
    assert [c.container_id for c in pod.container_metrics] == ["c0ffee01", "c0ffee02"]
    every = list(pod.metrics) + [m for c in pod.container_metrics for m in c.metrics]
    for metric in every:
        assert metric.name in keys and len(metric.label_values) == len(keys[metric.name])
        assert metric.timestamp > 0
    by_name = {(m.name, tuple(m.label_values)): m for m in every}
    labels = ("/kubepods/pod1234/c0ffee01", "c0ffee01", "busybox:1", "web", "default", "app")
    cpu = by_name[("container_cpu_usage_seconds_total", (*labels, "total"))]
    assert cpu.value.value == 6 and cpu.metric_type == api_pb2.COUNTER
    rx = by_name[("container_network_receive_bytes_total",
                  ("/kubepods/pod1234", "", "", "web", "default", "", "eth0"))]  # fmt: skip
    assert rx.value.value == 5000
    ws = by_name[("container_memory_working_set_bytes", labels)]
    assert ws.metric_type == api_pb2.GAUGE and ws.value.value == 74 * MiB


def test_filesystem_usage_for_image_fs_info():
    msg = cri.filesystem_usage(5, "/var/lib/observe-rt", 1000, 10)
    assert msg.fs_id.mountpoint == "/var/lib/observe-rt" and msg.used_bytes.value == 1000
