"""`bench cri`'s pure logic (no root): configs and conflists as text, smaps_rollup and /proc
parsing on fixture trees, the images, the interleaved driver loop against a fake CRI client,
the report, table rows and the command line."""

from __future__ import annotations

import hashlib
import io
import json
import os
import tarfile
import tomllib
from pathlib import Path

import grpc
import pytest

from observe_rt import config
from observe_rt.bench import (
    cri,
    cri_calls,
    cri_command,
    cri_image,
    cri_memory,
    cri_report,
    cri_setup,
)
from observe_rt.bench.cri import CriBench, MemorySample, Pod, RuntimeRun, StatsSample
from observe_rt.bench.cri_memory import Usage
from observe_rt.bench.cri_runtimes import (
    ContainerdRuntime,
    Network,
    Unavailable,
    remove_empty_dirs,
    shim_socket_name,
)
from observe_rt.cri.v1 import api_pb2
from tests.support.bench import assert_rejected, parse, rendered

# --- setup: names, CNI, daemon configs ------------------------------------------------------


def test_bridge_names_are_unique_per_runtime_and_fit_ifnamsiz():
    names = {cri_setup.bridge_name("a1b2c3", runtime) for runtime in ("observe-rt", "containerd")}
    assert names == {"ocba1b2c3o", "ocba1b2c3c"}
    with pytest.raises(ValueError):
        cri_setup.bridge_name("x" * 20, "observe-rt")


def test_subnets_are_distinct_private_24s():
    subnets = cri_setup.pick_subnets(2)
    assert len(set(subnets)) == 2
    for subnet in subnets:
        first, second, third, last = subnet.removesuffix("/24").split(".")
        assert first == "10" and 200 <= int(second) <= 207 and 0 <= int(third) <= 255
        assert last == "0" and subnet.endswith("/24")


def test_conflist_is_isolated_bridge_plus_loopback(tmp_path):
    path = cri_setup.write_conflist(tmp_path / "cni", "net-x", "ocbx", "10.201.3.0/24",
                                    tmp_path / "ipam")  # fmt: skip
    document = json.loads(path.read_text())
    assert path.name.endswith(".conflist") and document["name"] == "net-x"
    bridge, loopback = document["plugins"]
    assert loopback == {"type": "loopback"}
    assert bridge["bridge"] == "ocbx" and bridge["isGateway"] is False
    assert bridge["ipMasq"] is False and "isDefaultGateway" not in bridge
    assert bridge["ipam"] == {"type": "host-local", "dataDir": str(tmp_path / "ipam"),
                              "ranges": [[{"subnet": "10.201.3.0/24"}]]}  # fmt: skip
    assert "routes" not in json.dumps(document)


def test_observe_rt_config_loads_with_every_path_private(tmp_path):
    text = cri_setup.observe_rt_config(
        socket=tmp_path / "cri.sock", state_dir=tmp_path / "state", run_dir=tmp_path / "r",
        cni_conf_dir=tmp_path / "cni", cni_bin_dir="/usr/lib/cni", hosts_dir=tmp_path / "h",
        policy=tmp_path / "none.json", cgroup_parent="/observe-rt-bench-cri-x/observe-rt",
    )  # fmt: skip
    (tmp_path / "config.toml").write_text(text)
    loaded = config.load(str(tmp_path / "config.toml"))
    assert loaded.socket == str(tmp_path / "cri.sock") and loaded.run_dir == str(tmp_path / "r")
    assert loaded.state_dir == str(tmp_path / "state") and loaded.cni_bin_dirs == ("/usr/lib/cni",)
    assert loaded.cni_conf_dir == str(tmp_path / "cni")
    assert loaded.registry_hosts_dir == str(tmp_path / "h")
    assert loaded.cgroup_parent == "/observe-rt-bench-cri-x/observe-rt"


def test_containerd_config_has_cri_on_private_paths(tmp_path):
    text = cri_setup.containerd_config(
        base=tmp_path, cni_conf_dir=tmp_path / "cni", cni_bin_dir="/usr/lib/cni",
        hosts_dir=tmp_path / "certs.d", sandbox_image="127.0.0.1:5000/bench/pause:1",
        runc="/usr/sbin/runc",
    )  # fmt: skip
    document = tomllib.loads(text)
    assert document["version"] == 2 and "disabled_plugins" not in document
    assert document["root"] == str(tmp_path / "root")
    assert document["state"] == str(tmp_path / "state")
    assert document["grpc"]["address"] == str(tmp_path / "containerd.sock")
    cri_plugin = document["plugins"]["io.containerd.grpc.v1.cri"]
    assert cri_plugin["sandbox_image"] == "127.0.0.1:5000/bench/pause:1"
    assert cri_plugin["stream_server_address"] == "127.0.0.1"
    assert cri_plugin["netns_mounts_under_state_dir"] is True
    assert cri_plugin["containerd"]["snapshotter"] == "overlayfs"
    runc = cri_plugin["containerd"]["runtimes"]["runc"]
    assert runc["runtime_type"] == "io.containerd.runc.v2"
    assert runc["options"] == {"BinaryName": "/usr/sbin/runc", "Root": str(tmp_path / "runc"),
                               "SystemdCgroup": False}  # fmt: skip
    assert cri_plugin["cni"] == {"bin_dir": "/usr/lib/cni", "conf_dir": str(tmp_path / "cni"),
                                 "max_conf_num": 1}  # fmt: skip
    assert cri_plugin["registry"] == {"config_path": str(tmp_path / "certs.d")}


def test_hosts_toml_points_at_plain_http(tmp_path):
    cri_setup.write_hosts_dir(tmp_path, "127.0.0.1:5000")
    document = tomllib.loads((tmp_path / "127.0.0.1:5000" / "hosts.toml").read_text())
    assert document["server"] == "http://127.0.0.1:5000"
    assert document["host"]["http://127.0.0.1:5000"]["capabilities"] == ["pull", "resolve"]


def test_run_dir_must_leave_room_for_the_shim_socket():
    cri_setup.check_run_dir("/tmp/ocb-abcdefgh/o/r")  # 21 bytes: the socket path is 106
    cri_setup.check_run_dir("x" * 22)
    with pytest.raises(ValueError, match="too long"):
        cri_setup.check_run_dir("x" * 23)


# --- memory and processes --------------------------------------------------------------------

SMAPS = """55d1c0a00000-7ffd5b9fe000 ---p 00000000 00:00 0                          [rollup]
Rss:               17488 kB
Pss:               12096 kB
Pss_Anon:           9000 kB
Shared_Clean:       6000 kB
"""


def test_smaps_rollup_gives_rss_and_pss():
    assert cri_memory.parse_smaps_rollup(SMAPS) == Usage(17488, 12096)
    with pytest.raises(ValueError):
        cri_memory.parse_smaps_rollup("Rss: 1 kB\n")
    own = cri_memory.read_usage(os.getpid())
    assert own is not None and own.rss_kib >= own.pss_kib > 0


def fake_proc(root: Path, processes: dict[int, list[str]]) -> Path:
    for pid, argv in processes.items():
        (root / str(pid)).mkdir(parents=True)
        (root / str(pid) / "cmdline").write_bytes(b"\0".join(a.encode() for a in argv) + b"\0")
        (root / str(pid) / "smaps_rollup").write_text(SMAPS)
    (root / "self").mkdir()
    (root / "7").mkdir()
    (root / "7" / "cmdline").write_bytes(b"")  # a kernel thread
    return root


def test_shims_are_found_by_their_private_dirs(tmp_path):
    run_dir, address = "/tmp/ocb-x/o/r", "/tmp/ocb-x/c/containerd.sock"
    proc = fake_proc(tmp_path / "proc", {
        10: ["/venv/bin/python", "-m", "observe_rt.pod.shim", "--dir", f"{run_dir}/pods/a/shim"],
        11: ["/venv/bin/python", "-m", "observe_rt.pod.shim", "--dir", "/run/observe-rt/pods/b"],
        12: ["/usr/bin/containerd-shim-runc-v2", "-namespace", "k8s.io", "-id", "abc",
             "-address", address],
        13: ["/usr/bin/containerd-shim-runc-v2", "-namespace", "k8s.io", "-id", "abc",
             "-address", "/run/containerd/containerd.sock"],
        14: ["/usr/bin/containerd", "--config", "/tmp/ocb-x/c/config.toml"],
        15: ["sleep", f"{run_dir}/pods/x"],
    })  # fmt: skip
    assert cri_memory.command_lines(str(proc))[14][0] == "/usr/bin/containerd"
    assert 7 not in cri_memory.command_lines(str(proc))
    ours = cri_memory.find_processes(
        lambda argv: cri_memory.is_observe_rt_shim(argv, run_dir), str(proc)
    )
    assert ours == [10]
    shims = cri_memory.find_processes(
        lambda argv: cri_memory.is_containerd_shim(argv, address), str(proc)
    )
    assert shims == [12]
    assert cri_memory.usages([10, 12, 99], str(proc)) == [Usage(17488, 12096)] * 2


def test_containerd_shim_socket_name_matches_containerd():
    expected = hashlib.sha256(b"/tmp/c/containerd.sock/k8s.io/abc").hexdigest()
    assert shim_socket_name("/tmp/c/containerd.sock", "abc") == expected


def test_only_new_empty_dirs_are_removed(tmp_path):
    new, old, full = tmp_path / "new", tmp_path / "old", tmp_path / "full"
    for path in (new / "sub", old, full):
        path.mkdir(parents=True)
    (full / "file").write_text("x")
    remove_empty_dirs([new, new / "sub", old, full], existed={old})
    assert not new.exists() and old.exists() and full.exists()


def test_missing_containerd_is_unavailable(monkeypatch, tmp_path):
    monkeypatch.setattr("observe_rt.bench.cri_runtimes.find_containerd",
                        lambda: "containerd not found on PATH")  # fmt: skip
    with pytest.raises(Unavailable, match="containerd not found on PATH"):
        ContainerdRuntime(tmp_path, Network("n", "b", "10.200.0.0/24"), "/x", {})


# --- images ----------------------------------------------------------------------------------


def test_images_share_one_busybox_layer(tmp_path):
    fake = tmp_path / "busybox"
    fake.write_bytes(b"\x7fELF fake busybox")
    layer = cri_image.busybox_layer(str(fake), ["sh", "sleep"])
    with tarfile.open(fileobj=io.BytesIO(layer)) as tar:
        members = {member.name: member for member in tar.getmembers()}
    assert members["bin/busybox"].mode == 0o755
    assert members["bin/sleep"].issym() and members["bin/sleep"].linkname == "busybox"
    assert members["tmp"].mode == 0o1777 and "etc/passwd" in members
    images = cri_image.bench_images(layer)
    busybox, pause = images[cri_image.BUSYBOX_REPO], images[cri_image.PAUSE_REPO]
    assert busybox.manifest()["layers"] == pause.manifest()["layers"]

    def config(image):
        return json.loads(image.blobs[image.manifest()["config"]["digest"]].data)["config"]

    assert config(pause)["Entrypoint"] == ["/bin/sh", "-c", cri_image.PAUSE_SCRIPT]
    assert "trap" in cri_image.PAUSE_SCRIPT and "TERM" in cri_image.PAUSE_SCRIPT
    assert config(busybox)["Cmd"] == ["/bin/sh"]


# --- the CRI requests and the loop -----------------------------------------------------------


def test_pod_and_container_configs_are_what_a_kubelet_sends(tmp_path):
    pod = cri.pod_config("pod-3", "abc123", tmp_path / "logs", "/p/observe-rt/pod-3")
    assert pod.metadata.name == "pod-3" and pod.metadata.namespace == cri.POD_NAMESPACE
    assert pod.metadata.uid == "pod-3-abc123" and pod.log_directory == str(tmp_path / "logs")
    assert pod.linux.cgroup_parent == "/p/observe-rt/pod-3"
    options = pod.linux.security_context.namespace_options
    assert (options.network, options.pid, options.ipc) == (api_pb2.POD, api_pb2.CONTAINER,
                                                            api_pb2.POD)  # fmt: skip
    container = cri.container_config("127.0.0.1:1/bench/busybox:1")
    assert list(container.command) == ["sleep", "3600"] and container.log_path == "sleep.log"
    assert container.image.image == "127.0.0.1:1/bench/busybox:1"


class FakeError(grpc.RpcError):
    def code(self):
        return grpc.StatusCode.INTERNAL

    def details(self):
        return "shim died"


class FakeClient:
    def __init__(self, name: str, calls: list, fail_on: tuple[str, int] | None = None) -> None:
        self.name, self.calls, self.fail_on, self.count = name, calls, fail_on, {}

    def _record(self, rpc: str, arg: str) -> None:
        self.count[rpc] = self.count.get(rpc, 0) + 1
        self.calls.append((self.name, rpc, arg))
        if self.fail_on == (rpc, self.count[rpc]):
            raise FakeError()

    def run_pod_sandbox(self, config):
        self._record("RunPodSandbox", config.metadata.name)
        return f"{self.name}-{config.metadata.name}-id"

    def create_container(self, pod_id, config, sandbox_config):
        self._record("CreateContainer", pod_id)
        return pod_id + "-c"

    def start_container(self, container_id):
        self._record("StartContainer", container_id)

    def stop_pod_sandbox(self, pod_id):
        self._record("StopPodSandbox", pod_id)

    def remove_pod_sandbox(self, pod_id):
        self._record("RemovePodSandbox", pod_id)


class FakeRuntime:
    def __init__(self, name: str, client: FakeClient) -> None:
        self.name, self.client, self.pod_ids = name, client, set()
        self.cgroup_parent = f"/bench/{name}"

    def daemon_pid(self) -> int:
        return os.getpid()

    def shim_pids(self) -> list[int]:
        return [os.getpid()]


def fake_bench(tmp_path, monkeypatch, fail_on=None) -> tuple[CriBench, list]:
    monkeypatch.setattr(cri, "SETTLE_S", 0)
    bench = CriBench.__new__(CriBench)  # no registry, no daemons: only the loop
    bench.tmp, bench.session = tmp_path, "s1"
    bench.images = cri_image.BenchImages("r/bench/busybox:1", "r/bench/pause:1")
    calls: list = []
    bench.runs = []
    for name in ("observe-rt", "containerd"):
        client = FakeClient(name, calls, fail_on if name == "containerd" else None)
        bench.runs.append(RuntimeRun(name, f"{name} 1.0", FakeRuntime(name, client)))
    return bench, calls


def test_measure_interleaves_warms_up_and_reads_memory_with_all_pods_up(tmp_path, monkeypatch):
    bench, calls = fake_bench(tmp_path, monkeypatch)
    ticks = []
    runs = bench.measure(3, 2, lambda: ticks.append(1))
    assert len(ticks) == (2 * 2 + 3 * 2) * 2
    runs_order = [(name, arg) for name, rpc, arg in calls if rpc == "RunPodSandbox"]
    assert runs_order == [
        ("observe-rt", "warmup-0"), ("containerd", "warmup-0"),
        ("containerd", "warmup-1"), ("observe-rt", "warmup-1"),
        ("observe-rt", "pod-0"), ("containerd", "pod-0"),
        ("containerd", "pod-1"), ("observe-rt", "pod-1"),
        ("observe-rt", "pod-2"), ("containerd", "pod-2"),
    ]  # fmt: skip
    # each warm-up pod is removed before the next starts; measured pods stay up until the end
    rpcs = [rpc for name, rpc, _ in calls if name == "observe-rt"]
    assert rpcs[:10] == ["RunPodSandbox", "CreateContainer", "StartContainer", "StopPodSandbox",
                         "RemovePodSandbox"] * 2  # fmt: skip
    assert rpcs[10:19] == ["RunPodSandbox", "CreateContainer", "StartContainer"] * 3
    assert rpcs[19:] == ["StopPodSandbox", "RemovePodSandbox"] * 3
    for run in runs:
        assert run.reason is None and len(run.starts) == 3 and len(run.teardowns) == 3
        assert set(run.starts[0]) == set(cri.START_STEPS)
        assert set(run.teardowns[0]) == set(cri.TEARDOWN_STEPS)
        assert run.memory.pods == 3 and len(run.memory.shims) == 1
        assert run.memory.daemon.rss_kib > 0 and run.memory.sandboxes is None
        names = ("warmup-0", "warmup-1", "pod-0", "pod-1", "pod-2")
        assert run.runtime.pod_ids == {f"{run.name}-{name}-id" for name in names}
        assert run.live[0] == Pod(f"{run.name}-pod-0-id", "pod-0", f"/bench/{run.name}/pod-0")
    assert (tmp_path / "logs" / "o" / "pod-2").is_dir()


def test_a_failing_runtime_is_dropped_with_the_call_that_failed(tmp_path, monkeypatch):
    bench, calls = fake_bench(tmp_path, monkeypatch, fail_on=("CreateContainer", 2))
    runs = bench.measure(3, 1)
    ort, ctrd = runs
    assert ctrd.reason == "pod 1: CreateContainer failed: INTERNAL: shim died"
    assert (
        ctrd.starts == [] and ctrd.memory is None and "containerd-pod-0-id" in ctrd.runtime.pod_ids
    )
    assert not [c for c in calls if c[0] == "containerd" and c[2].startswith("pod-1")]
    assert ort.reason is None and len(ort.starts) == 3 and len(ort.teardowns) == 3


# --- report ----------------------------------------------------------------------------------


def sample_runs() -> list[RuntimeRun]:
    def starts(scale):
        return [{"RunPodSandbox": 50 * scale + i, "CreateContainer": 10.0, "StartContainer": 40.0}
                for i in range(5)]  # fmt: skip

    def teardowns(total):
        return [{"StopPodSandbox": total - 10, "RemovePodSandbox": 10.0}] * 5

    ort = RuntimeRun("observe-rt", "observe-rt 0.1.0", starts=starts(2), teardowns=teardowns(60))
    ort.memory = MemorySample(5, Usage(51200, 40960), [Usage(17408, 12288)] * 5)
    ctrd = RuntimeRun("containerd", "containerd 1.6.20", starts=starts(1), teardowns=teardowns(100))
    ctrd.memory = MemorySample(5, Usage(46080, 45056), [Usage(13312, 6144)] * 5,
                               [Usage(1536, 512)] * 10)  # fmt: skip
    return [ort, ctrd]


HOST = {"kernel": "6.1", "cpus": 2}
IMAGES = {"container": "r/bench/busybox:1", "command": ["sleep", "3600"],
          "sandbox_image": "r/bench/pause:1"}  # fmt: skip


def test_report_figures_and_ratios():
    report = cri_report.build_report(sample_runs(), IMAGES, 2, 5, HOST)
    assert report["benchmark"] == "cri" and report["baseline"] == "containerd"
    assert report["pods"] == 5 and report["warmup"] == 2 and report["host"] == HOST
    ort, ctrd = report["runtimes"]["observe-rt"], report["runtimes"]["containerd"]
    assert ort["start"]["median_ms"] == 152.0 and ctrd["start"]["median_ms"] == 102.0
    assert ort["start"]["min_ms"] == 150.0 and ort["start"]["max_ms"] == 154.0
    assert ort["start"]["step_median_ms"] == {"RunPodSandbox": 102.0, "CreateContainer": 10.0,
                                              "StartContainer": 40.0}  # fmt: skip
    assert ort["teardown"]["median_ms"] == 60.0 and len(ort["teardown"]["samples_ms"]) == 5
    memory = ort["memory"]
    assert memory["daemon"] == {"rss_mib": 50.0, "pss_mib": 40.0} and memory["pods_up"] == 5
    assert memory["shims"] == {"processes": 5, "rss_mib_total": 85.0, "pss_mib_total": 60.0,
                               "rss_mib_per_pod": 17.0, "pss_mib_per_pod": 12.0}  # fmt: skip
    assert "sandbox_processes" not in memory
    assert ctrd["memory"]["sandbox_processes"]["pss_mib_per_pod"] == 1.0
    ratios = ort["ratio_to_containerd"]
    assert ratios["start_median"] == round(152 / 102, 3)
    assert ratios["teardown_median"] == 0.6 and ratios["daemon_rss"] == round(50 / 45, 3)
    assert ratios["shim_rss_per_pod"] == round(17 / 13, 3) and ratios["shim_pss_per_pod"] == 2.0
    assert set(ctrd["ratio_to_containerd"].values()) == {1.0}
    json.dumps(report)  # JSON-ready


def test_rows_and_lines():
    report = cri_report.build_report(sample_runs(), IMAGES, 2, 5, HOST)
    assert cri_report.timing_rows(report, "start") == [
        ["observe-rt", "5", "152.0", "153.8", "150.0", "154.0", "1.49×"],
        ["containerd", "5", "102.0", "103.8", "100.0", "104.0", "1.00×"],
    ]
    assert cri_report.timing_rows(report, "teardown")[0][-1] == "0.60×"
    assert cri_report.step_rows(report)[1] == ["containerd", "52.0", "10.0", "40.0", "90.0", "10.0"]
    rows = cri_report.memory_rows(report)
    assert rows[0] == ["observe-rt", "daemon", "1", "50.0", "40.0", "1.11×", "0.91×"]
    assert rows[1] == ["observe-rt", "shim / pod", "5", "17.0", "12.0", "1.31×", "2.00×"]
    assert rows[4] == ["containerd", "pause / pod", "10", "3.0", "1.0", "", ""]
    assert cri_report.memory_title(report).startswith("memory with 5 pods up")
    lines = cri_report.summary_lines(report)
    assert lines == [
        "observe-rt vs containerd (medians): pod start 1.49×, teardown 0.60×; daemon RSS 1.11×; "
        "shim per pod RSS 1.31×, PSS 2.00×."
    ]


def test_report_without_containerd_says_why_and_has_no_ratios():
    runs = sample_runs()
    runs[1] = RuntimeRun("containerd", reason="containerd not found on PATH")
    report = cri_report.build_report(runs, IMAGES, 2, 5, HOST)
    assert report["runtimes"]["containerd"] == {
        "available": False, "reason": "containerd not found on PATH",
    }  # fmt: skip
    assert set(report["runtimes"]["observe-rt"]["ratio_to_containerd"].values()) == {None}
    assert cri_report.timing_rows(report, "start")[0][-1] == "n/a"
    assert cri_report.summary_lines(report) == [
        "containerd: unavailable: containerd not found on PATH"
    ]


# --- command line ----------------------------------------------------------------------------


def test_cri_options_and_command_line():
    args = parse("cri")
    assert (args.pods, args.warmup, args.json) == (20, 2, False)
    assert args.func is cri_command.run_cri
    assert cri_command.command_line(args) == "observe-rt bench cri --pods 20"
    args = parse("cri", "--pods", "2", "--warmup", "0", "--json")
    assert args.json and cri_command.command_line(args) == (
        "observe-rt bench cri --pods 2 --warmup 0"
    )
    assert_rejected("cri", ["--pods", "0"], ["--warmup", "-1"])


def test_render_prints_every_table():
    report = cri_report.build_report(sample_runs(), IMAGES, 2, 5, HOST)
    report["command"] = "observe-rt bench cri --pods 5"
    out = rendered(cri_command.render, report, 80)
    expected = ("pod start", "pod teardown", "median per CRI call", "memory with 5 pods up",
                "shim / pod", "pause / pod", "Measured by: observe-rt bench cri")  # fmt: skip
    for text in expected:
        assert text in out, text
    assert "…" not in out  # nothing truncated at 80 columns


def test_needs_root(monkeypatch):
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    args = parse("cri")
    from observe_rt.errors import FailedPrecondition

    with pytest.raises(FailedPrecondition, match="needs root"):
        cri_command.run_cri(args)


# --- --exec and --stats-containers -----------------------------------------------------------


def test_metrics_url_is_the_last_one_logged():
    log = (
        "INFO observe_rt.server Prometheus metrics on http://127.0.0.1:41234/metrics\n"
        "INFO observe_rt.server serving CRI on /tmp/x/cri.sock\n"
        "INFO observe_rt.server Prometheus metrics on http://127.0.0.1:5555/metrics\n"
    )
    assert cri_calls.metrics_url(log) == "http://127.0.0.1:5555/metrics"
    assert cri_calls.metrics_url("serving CRI on /x\n") is None


def test_cpu_ticks_are_utime_plus_stime_even_with_odd_command_names():
    rest = "S 1 2 3 0 -1 4194560 100 0 0 0 250 75 0 0 20 0 9 0 123 456 789"
    assert cri_calls.cpu_ticks(f"42 (observe-rt) {rest}\n") == 325
    assert cri_calls.cpu_ticks(f"42 (a) (b c) {rest}\n") == 325
    assert cri_calls.read_cpu_ticks(os.getpid()) >= 0
    assert cri_calls.read_cpu_ticks(2**22 + 7) is None


def test_cpu_entry_per_second_and_per_collector_tick():
    window = cri_calls.CpuWindow(ticks=30, clk_tck=100, window_s=10.02)
    assert window.cpu_ms == 300.0
    assert cri_calls.cpu_entry(window) == {
        "window_s": 10.02, "cpu_ms": 300.0, "cpu_ms_per_s": round(300 / 10.02, 3),
        "clock_tick_ms": 10.0,
    }  # fmt: skip
    entry = cri_calls.cpu_entry(window, 1.0)
    assert entry["collector_ticks"] == 10 and entry["cpu_ms_per_tick"] == 30.0


def test_scrape_reads_the_whole_body():
    import http.server
    import threading

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            body = b"# HELP x\nx 1\n" * 100
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    server = http.server.HTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        elapsed, size = cri_calls.scrape(f"http://127.0.0.1:{server.server_port}/metrics")
    finally:
        server.shutdown()
        server.server_close()
    assert size == 1300 and elapsed > 0


class FakeStatsStub:
    def __init__(self, client: FakeClient) -> None:
        self.client = client

    def ListContainerStats(self, request):
        self.client._record("ListContainerStats", "")
        live = {arg for _, rpc, arg in self.client.calls if rpc == "StartContainer"}
        gone = {arg + "-c" for _, rpc, arg in self.client.calls if rpc == "RemovePodSandbox"}
        stats = [api_pb2.ContainerStats() for _ in live - gone if _.startswith(self.client.name)]
        return api_pb2.ListContainerStatsResponse(stats=stats)


def phase_bench(tmp_path, monkeypatch, fail_on=None, exit_code=0):
    monkeypatch.setattr(cri, "STATS_SETTLE_S", 0)
    monkeypatch.setattr(cri, "CPU_WINDOW_S", 0.01)
    bench, calls = fake_bench(tmp_path, monkeypatch, fail_on)
    for run in bench.runs:
        client = run.runtime.client
        client.runtime = FakeStatsStub(client)

        def exec_sync(container_id, cmd, timeout, client=client):
            client._record("ExecSync", f"{container_id} {' '.join(cmd)} {timeout}")
            return api_pb2.ExecSyncResponse(exit_code=exit_code)

        client.exec_sync = exec_sync
    return bench, calls


def test_measure_exec_alternates_calls_into_one_container(tmp_path, monkeypatch):
    bench, calls = phase_bench(tmp_path, monkeypatch)
    ticks = []
    runs = bench.measure_exec(4, lambda: ticks.append(1))
    assert len(ticks) == 4 * 2
    execs = [(name, arg) for name, rpc, arg in calls if rpc == "ExecSync"]
    assert execs[:4] == [("observe-rt", "observe-rt-exec-0-id-c true 10"),
                         ("containerd", "containerd-exec-0-id-c true 10"),
                         ("containerd", "containerd-exec-0-id-c true 10"),
                         ("observe-rt", "observe-rt-exec-0-id-c true 10")]  # fmt: skip
    for run in runs:
        assert run.reason is None and run.exec_reason is None and len(run.execs) == 4
        assert run.starts == [] and run.teardowns == []  # the pod phases' samples untouched
    assert [rpc for name, rpc, _ in calls if name == "containerd"][-2:] == [
        "StopPodSandbox", "RemovePodSandbox"]  # fmt: skip


def test_a_failing_exec_drops_only_the_exec_phase(tmp_path, monkeypatch):
    bench, _ = phase_bench(tmp_path, monkeypatch, fail_on=("ExecSync", 2))
    ort, ctrd = bench.measure_exec(3)
    assert ctrd.exec_reason == "exec 2: ExecSync failed: INTERNAL: shim died"
    assert ctrd.reason is None and len(ctrd.execs) == 1 and len(ort.execs) == 3
    bench, _ = phase_bench(tmp_path / "b", monkeypatch, exit_code=1)
    ort, _ = bench.measure_exec(2)
    assert ort.exec_reason == "exec 1: `true` exited 1" and ort.execs == []


def test_measure_stats_lists_with_every_container_up_then_removes_them(tmp_path, monkeypatch):
    bench, calls = phase_bench(tmp_path, monkeypatch)
    ticks = []
    runs = bench.measure_stats(3, lambda: ticks.append(1))
    assert len(ticks) == 2 * 3 * 2
    for run in runs:
        rpcs = [rpc for name, rpc, _ in calls if name == run.name]
        assert rpcs[:9] == ["RunPodSandbox", "CreateContainer", "StartContainer"] * 3
        assert rpcs[9 : 9 + cri.STATS_CALLS] == ["ListContainerStats"] * cri.STATS_CALLS
        assert rpcs[9 + cri.STATS_CALLS :] == ["StopPodSandbox", "RemovePodSandbox"] * 3
        assert run.reason is None and run.stats_reason is None
        stats = run.stats
        assert stats.containers == 3 and stats.reported == 3
        assert len(stats.list_ms) == cri.STATS_CALLS and stats.scrapes_ms is None
        assert stats.cpu.ticks >= 0 and stats.cpu.window_s > 0


def test_a_failing_stats_pod_drops_only_the_stats_phase(tmp_path, monkeypatch):
    bench, calls = phase_bench(tmp_path, monkeypatch, fail_on=("StartContainer", 2))
    ort, ctrd = bench.measure_stats(3)
    assert ctrd.stats_reason == "stats pod 2: StartContainer failed: INTERNAL: shim died"
    assert ctrd.reason is None and ctrd.stats is None
    assert not [c for c in calls if c[0] == "containerd" and c[1] == "ListContainerStats"]
    assert ort.stats.containers == 3


def phase_runs() -> list[RuntimeRun]:
    ort, ctrd = sample_runs()
    ort.execs, ctrd.execs = [2.0, 3.0, 4.0, 5.0], [1.0, 2.0, 2.0, 2.0]
    ort.stats = StatsSample(100, 100, [10.0] * 20, cri_calls.CpuWindow(50, 100, 10.0),
                            [20.0, 30.0, 40.0], 4096)  # fmt: skip
    ctrd.stats = StatsSample(100, 100, [40.0] * 20, cri_calls.CpuWindow(10, 100, 10.0))
    return [ort, ctrd]


def test_phase_report_figures_ratios_and_rows():
    report = cri_report.build_report(phase_runs(), IMAGES, 2, 5, HOST, 4, 100)
    assert report["exec"] == {"calls": 4, "command": ["true"], "timeout_s": 10}
    assert report["stats"]["containers"] == 100 and report["stats"]["list_calls"] == 20
    ort, ctrd = report["runtimes"]["observe-rt"], report["runtimes"]["containerd"]
    assert ort["exec"]["median_ms"] == 3.5 and ort["exec"]["runs"] == 4
    assert ctrd["exec"]["median_ms"] == 2.0
    stats = ort["stats"]
    assert stats["containers_up"] == 100 and stats["list_container_stats"]["median_ms"] == 10.0
    assert stats["metrics_scrape"] == {"scrapes": 3, "median_ms": 30.0, "bytes": 4096}
    assert stats["daemon_cpu"]["cpu_ms_per_s"] == 50.0
    assert stats["daemon_cpu"]["cpu_ms_per_tick"] == 50.0
    assert stats["daemon_cpu"]["collector_ticks"] == 10
    assert "metrics_scrape" not in ctrd["stats"]
    assert "cpu_ms_per_tick" not in ctrd["stats"]["daemon_cpu"]
    ratios = ort["ratio_to_containerd"]
    assert ratios["exec_median"] == 1.75 and ratios["list_stats_median"] == 0.25
    assert ratios["daemon_cpu_per_s"] == 5.0
    assert set(ctrd["ratio_to_containerd"].values()) == {1.0}
    assert cri_report.exec_rows(report)[0] == [
        "observe-rt", "4", "3.50", "4.85", "2.00", "5.00", "1.75×"]  # fmt: skip
    assert cri_report.list_stats_rows(report)[1][-1] == "1.00×"
    assert cri_report.cost_rows(report) == [
        ["observe-rt", "30.00", "4096", "50.00", "50.00", "5.00×"],
        ["containerd", "n/a", "n/a", "10.00", "n/a", "1.00×"],
    ]
    json.dumps(report)


def test_without_the_phases_the_report_is_as_before():
    report = cri_report.build_report(sample_runs(), IMAGES, 2, 5, HOST)
    assert "exec" not in report and "stats" not in report
    for entry in report["runtimes"].values():
        assert "exec" not in entry and "stats" not in entry
        assert set(entry["ratio_to_containerd"]) == {key for key, _ in cri_report.RATIO_KEYS}
    assert cri_report.phase_titles(report) == {} and cri_report.phase_lines(report) == []


def test_a_phase_unavailable_for_one_runtime_is_said_and_has_no_ratio():
    runs = phase_runs()
    runs[1].exec_reason, runs[1].stats_reason = "exec 1: ExecSync failed: X", "no daemon"
    report = cri_report.build_report(runs, IMAGES, 2, 5, HOST, 4, 100)
    ort = report["runtimes"]["observe-rt"]
    assert ort["ratio_to_containerd"]["exec_median"] is None
    assert report["runtimes"]["containerd"]["exec"] == {
        "available": False, "reason": "exec 1: ExecSync failed: X"}  # fmt: skip
    assert [row[0] for row in cri_report.exec_rows(report)] == ["observe-rt"]
    assert cri_report.cost_rows(report)[0][-1] == "n/a"
    lines = cri_report.phase_lines(report)
    assert "containerd --exec: unavailable: exec 1: ExecSync failed: X" in lines
    assert "containerd --stats-containers: unavailable: no daemon" in lines


def test_phase_options_and_render():
    args = parse("cri")
    assert (args.exec, args.stats_containers) == (0, 0)
    args = parse("cri", "--pods", "1", "--exec", "3", "--stats-containers", "2")
    assert cri_command.command_line(args) == (
        "observe-rt bench cri --pods 1 --exec 3 --stats-containers 2"
    )
    assert_rejected("cri", ["--exec", "-1"], ["--stats-containers", "x"])
    report = cri_report.build_report(phase_runs(), IMAGES, 2, 5, HOST, 4, 100)
    report["command"] = "observe-rt bench cri --pods 5 --exec 4 --stats-containers 100"
    out = rendered(cri_command.render, report, 80)
    expected = ("ExecSync `true`: 4 calls", "ListContainerStats with 100 containers up",
                "/metrics", "ms/tick", "Stats: 100 pods of one container each",
                "pod start", "Measured by: observe-rt bench cri --pods 5 --exec 4")  # fmt: skip
    for text in expected:
        assert text in out, text
    assert "…" not in out
