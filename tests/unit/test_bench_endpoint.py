"""The CRI endpoint benchmark's own logic (no root, no runtime): statistics, the interleaved
loop, every phase against a fake CRI client, the report, the one table, the probe rows, the
workloads' output parsing, the results files and the command line."""

from __future__ import annotations

import json
import os
import socket
import threading
import uuid

import grpc
import pytest

from observe_rt.bench import (
    command,
    compare,
    compare_command,
    endpoint,
    endpoint_command,
    endpoint_phases,
    endpoint_report,
    probe_cost,
    stats,
    workloads,
)
from observe_rt.bench.endpoint import StepError, Target, interleave
from observe_rt.bench.endpoint_phases import Settings
from observe_rt.cri.v1 import api_pb2
from observe_rt.errors import InvalidArgument
from tests.support.bench import assert_rejected, parse, rendered

# --- statistics ------------------------------------------------------------------------------


def test_spread_is_the_interquartile_range_over_the_median():
    assert stats.spread([10.0, 10.0, 10.0]) == 0.0
    # p25 = 12.5, p75 = 17.5 (linear between ranks), median 15: 5 / 15
    assert stats.spread([10.0, 15.0, 20.0]) == pytest.approx(100 * 5 / 15)
    assert stats.spread([1.0, 2.0, 3.0, 4.0, 1000.0]) == pytest.approx(100 * 2 / 3)  # robust
    assert stats.spread([0.0, 0.0]) is None


# --- the interleaved loop ----------------------------------------------------------------------


def targets(names=("a", "b"), tmp=None) -> list[Target]:
    return [Target(name, FakeCri(name), "img", tmp) for name in names]


def test_interleave_rotates_the_order_and_warms_up_unrecorded():
    seen = []

    def step(target, index, measured):
        seen.append((target.name, index, measured))

    ticks = []
    interleave(targets(), "p", 2, 1, step, lambda: ticks.append(1))
    assert seen == [("a", 0, False), ("b", 0, False), ("b", 1, True), ("a", 1, True),
                    ("a", 2, True), ("b", 2, True)]  # fmt: skip
    assert len(ticks) == 6


def test_a_failing_step_drops_that_target_from_that_phase_only():
    both = targets()

    def step(target, index, measured):
        if target.name == "b" and index == 1:
            raise StepError("StartContainer failed: INTERNAL: boom")
        target.record("x", float(index))

    interleave(both, "p", 3, 0, step)
    a, b = both
    assert a.samples["x"] == [0.0, 1.0, 2.0] and b.samples["x"] == [0.0]
    assert b.reasons == {"p": "StartContainer failed: INTERNAL: boom"} and a.reasons == {}
    interleave(both, "q", 1, 0, step)  # another phase: b takes part again
    assert b.samples["x"] == [0.0, 0.0]


def test_timed_names_the_failed_call():
    class Error(grpc.RpcError):
        def code(self):
            return grpc.StatusCode.NOT_FOUND

        def details(self):
            return "no such pod"

    def fail():
        raise Error()

    with pytest.raises(StepError, match="^StopPodSandbox failed: NOT_FOUND: no such pod$"):
        endpoint.timed("StopPodSandbox", fail)
    result, elapsed = endpoint.timed("Version", lambda: 7)
    assert result == 7 and elapsed >= 0


# --- a fake CRI runtime -----------------------------------------------------------------------


class FakeCri:
    """Just enough of CriClient: pods, containers (running once started), ExecSync, List*."""

    def __init__(self, name: str, fail: str = "") -> None:
        self.name, self.fail = name, fail
        self.calls: list[str] = []
        self.pods: dict[str, list[str]] = {}
        self.containers: dict[str, str] = {}  # id -> state
        self.names: dict[str, str] = {}  # pod id -> name
        self.images: list[str] = []  # of every container created
        self.logs: dict[str, str] = {}  # container id -> its CRI log
        self.lock = threading.Lock()
        self.runtime = self  # the List* stubs
        self.count = 0

    def _call(self, rpc: str) -> str:
        with self.lock:
            self.calls.append(rpc)
            self.count += 1
            if rpc == self.fail:
                raise StepError(f"{rpc} failed: INTERNAL: injected")
            return f"{self.name}-{self.count}"

    def run_pod_sandbox(self, config):
        pod_id = self._call("RunPodSandbox")
        self.pods[pod_id], self.names[pod_id] = [], config.metadata.name
        return pod_id

    def create_container(self, pod_id, config, sandbox_config):
        assert sandbox_config.metadata.name == self.names[pod_id]
        self.images.append(config.image.image)
        container_id = self._call("CreateContainer")
        self.logs[container_id] = os.path.join(sandbox_config.log_directory, config.log_path)
        self.pods[pod_id].append(container_id)
        self.containers[container_id] = "created"
        return container_id

    def start_container(self, container_id):
        self._call("StartContainer")
        self.containers[container_id] = "running"
        with open(self.logs[container_id], "a") as log:  # what the lifecycle's shell logs
            log.write("2026-11-28T18:00:00.000000000Z stdout F ready\n")

    def container_status(self, container_id):
        self._call("ContainerStatus")
        state = {"created": api_pb2.CONTAINER_CREATED, "running": api_pb2.CONTAINER_RUNNING}
        status = api_pb2.ContainerStatus(state=state.get(self.containers[container_id], 2))
        return api_pb2.ContainerStatusResponse(status=status)

    def stop_container(self, container_id, timeout):
        self._call("StopContainer")
        self.containers[container_id] = "exited"

    def remove_container(self, container_id):
        self._call("RemoveContainer")
        del self.containers[container_id]

    def exec_sync(self, container_id, cmd, timeout):
        self._call("ExecSync")
        return api_pb2.ExecSyncResponse(exit_code=0 if cmd == ["true"] else 1)

    def stop_pod_sandbox(self, pod_id):
        self._call("StopPodSandbox")

    def remove_pod_sandbox(self, pod_id):
        self._call("RemovePodSandbox")
        for container_id in self.pods.pop(pod_id):
            self.containers.pop(container_id, None)

    def ListContainerStats(self, request, timeout):
        assert timeout == 60.0
        self._call("ListContainerStats")
        return api_pb2.ListContainerStatsResponse()

    def ListPodSandboxStats(self, request, timeout):
        assert timeout == 60.0
        self._call("ListPodSandboxStats")
        return api_pb2.ListPodSandboxStatsResponse()

    def ListContainers(self, request, timeout):
        assert timeout == 60.0
        self._call("ListContainers")
        return api_pb2.ListContainersResponse()


SMALL = Settings(session="s1", pods=3, warmup=1, parallel=2, parallel_rounds=2, repetitions=4,
                 levels=(2, 4), containers_per_pod=2, settle_s=0)  # fmt: skip


def test_serial_pods_start_until_running_then_tear_down(tmp_path):
    both = targets(tmp=tmp_path)
    endpoint_phases.measure_pods(both, SMALL)
    for target in both:
        assert len(target.samples["pod_start"]) == 3 and len(target.samples["pod_teardown"]) == 3
        assert target.client.calls[:6] == ["RunPodSandbox", "CreateContainer", "StartContainer",
                                           "ContainerStatus", "StopPodSandbox",
                                           "RemovePodSandbox"]  # fmt: skip
        assert target.client.pods == {} and target.pod_ids == set()  # warm-up pod removed too
    assert (tmp_path / "serial-3").is_dir()  # the pods' log directories


def test_parallel_pods_are_all_up_before_any_teardown(tmp_path):
    both = targets(tmp=tmp_path)
    endpoint_phases.measure_parallel(both, SMALL)
    for target in both:
        assert len(target.samples["pod_start_parallel"]) == 2
        assert len(target.samples["pod_start_parallel_each"]) == 4
        assert len(target.samples["pod_teardown_parallel"]) == 2
        calls = target.client.calls
        first_stop = calls.index("StopPodSandbox")
        assert calls[:first_stop].count("RunPodSandbox") == 2  # K pods up, then teardowns
        assert target.client.pods == {}


def test_lifecycle_times_each_call_and_exec(tmp_path):
    both = targets(tmp=tmp_path)
    endpoint_phases.measure_lifecycle(both, SMALL)
    for target in both:
        for step in ("create", "start", "status", "stop", "remove", "exec_sync"):
            assert len(target.samples[step]) == 4, step
        assert target.client.calls.count("ExecSync") == 5  # one warm-up
        assert set(target.client.images) == {"img"}
        assert target.client.pods == {} and target.client.containers == {}


def test_a_failing_exec_loses_only_the_exec_figures(tmp_path):
    both = [Target("a", FakeCri("a", fail="ExecSync"), "img", tmp_path)]
    endpoint_phases.measure_lifecycle(both, SMALL)
    (target,) = both
    assert target.reasons == {"exec": "ExecSync failed: INTERNAL: injected"}
    assert "exec_sync" not in target.samples and len(target.samples["create"]) == 4
    assert target.client.pods == {}


def test_lists_grow_to_each_level_then_remove_everything(tmp_path, monkeypatch):
    monkeypatch.setattr(endpoint_phases, "read_memory", lambda target, pods: None)
    both = targets(tmp=tmp_path)
    both[0].metrics_url = None
    endpoint_phases.measure_lists(both, SMALL)
    for target in both:
        for level in (2, 4):
            for call in endpoint_phases.LIST_CALLS:
                assert len(target.samples[f"{call}@{level}"]) == 4
            assert target.values[f"containers@{level}"] == level
        calls = target.client.calls
        # level 2: one pod of 2 containers; level 4: one more pod; lists after each
        assert calls.count("RunPodSandbox") == 2 and calls.count("CreateContainer") == 4
        assert calls.index("ListContainerStats") < calls.index("RunPodSandbox", 1)
        assert target.client.pods == {}


def test_memory_reads_the_daemon_and_the_processes_naming_our_pods(tmp_path):
    target = Target("a", None, "img", tmp_path, daemon_pid=os.getpid())
    endpoint_phases.read_memory(target, [uuid.uuid4().hex])  # no process names this pod
    assert target.values["daemon_rss_mib"] >= target.values["daemon_pss_mib"] > 0
    assert "shim_rss_mib_per_pod" not in target.values
    unknown = Target("b", None, "img", tmp_path)
    endpoint_phases.read_memory(unknown, [])
    assert "daemon's pid is unknown" in unknown.reasons["memory"]


# --- endpoints and sockets ----------------------------------------------------------------------


def test_endpoint_paths():
    assert endpoint.endpoint_path("unix:///run/x/cri.sock") == "/run/x/cri.sock"
    assert endpoint.endpoint_path("/run/x.sock") == "/run/x.sock"
    for bad in ("tcp://127.0.0.1:1", "x.sock"):
        with pytest.raises(ValueError, match="expected unix:///"):
            endpoint.endpoint_path(bad)
    with pytest.raises(ValueError, match="absolute"):
        endpoint.endpoint_path("unix://relative.sock")


def test_the_daemon_is_the_process_owning_the_socket(tmp_path):
    path = str(tmp_path / "cri.sock")
    with socket.socket(socket.AF_UNIX) as server:
        server.bind(path)
        server.listen()
        assert endpoint.socket_owner(path) == os.getpid()
    assert endpoint.socket_owner(str(tmp_path / "none.sock")) is None
    table = ("Num RefCount Protocol Flags Type St Inode Path\n"
             "0000: 00000002 00000000 00010000 0001 01 4242 /run/a.sock\n"
             "0000: 00000003 00000000 00000000 0001 03 4243\n"
             "0000: 00000002 00000000 00010000 0001 01 4244 ///run/b.sock\n")  # fmt: skip
    assert endpoint.socket_inodes(table, "/run/a.sock") == {4242}
    assert endpoint.socket_inodes(table, "/run/b.sock") == {4244}  # as gRPC binds it


# --- the report and the table -------------------------------------------------------------------


def measured(tmp_path) -> list[Target]:
    ort = Target("observe-rt", None, "img", tmp_path, version="0.1.0")
    ctrd = Target("containerd", None, "img", tmp_path, version="containerd 1.6.20")
    for i in range(5):
        ort.record("pod_start", 200.0 + i)
        ctrd.record("pod_start", 100.0 + i)
        ort.record("exec_sync", 80.0)
        ctrd.record("exec_sync", 40.0)
        ort.record("list_container_stats@100", 2.0)
        ctrd.record("list_container_stats@100", 20.0)
    ort.values |= {"daemon_rss_mib": 60.0, "metrics_bytes@100": 2048 * 1024}
    ctrd.values |= {"daemon_rss_mib": 40.0}
    ctrd.reasons["metrics"] = "no metrics URL"
    return [ort, ctrd]


PROBES = probe_cost.report_section(
    probe_cost.ProbeSamples(syscall_ns={True: [500.0, 520.0], False: [300.0, 320.0]},
                            requests_per_s={True: [900.0], False: [1000.0]},
                            compile_ms=[800.0, 900.0, 1000.0], events_per_s=[1800.0],
                            syscalls_counted=[1.0]),
    probe_cost.ProbeSettings(rounds=2),
)  # fmt: skip


def report(tmp_path) -> dict:
    settings = Settings("s1", levels=(10, 100))
    host = {"kernel": "6.1", "cpus": 2}
    extra = {"probes": PROBES, "date": "2026-11-28T18:00:00Z"}
    return endpoint_report.build_report(measured(tmp_path), settings, "containerd", host, extra)


def test_report_figures_and_ratios(tmp_path):
    result = report(tmp_path)
    ort = result["targets"]["observe-rt"]
    start = ort["figures"]["pod_start"]
    assert start["median_ms"] == 202.0 and start["p95_ms"] == 203.8 and start["max_ms"] == 204.0
    assert start["runs"] == 5 and start["spread_pct"] == round(2 / 202 * 100, 1)
    assert result["ratios"]["pod_start"] == round(202 / 102, 3)
    assert result["ratios"]["exec_sync"] == 2.0
    assert result["ratios"]["list_container_stats@100"] == 0.1
    assert result["ratios"]["daemon_rss_mib"] == 1.5 and "metrics_bytes@100" not in result["ratios"]
    assert result["targets"]["containerd"]["unavailable"] == {"metrics": "no metrics URL"}
    assert result["settings"]["levels"] == [10, 100]
    json.dumps(result)


def test_one_table_with_both_columns_and_the_ratio(tmp_path):
    result = report(tmp_path)
    assert endpoint_report.columns(result) == [
        "figure", "unit", "observe-rt", "p95", "±%", "containerd", "p95", "±%", "× containerd",
    ]  # fmt: skip
    rows = {row[0]: row for row in endpoint_report.table_rows(result)}
    assert rows["pod start, one at a time"][1:] == [
        "ms", "202", "204", "0", "102", "104", "1", "1.98×",
    ]  # fmt: skip
    assert rows["ListContainerStats, 100 ctrs"][-1] == "0.10×"
    assert rows["/metrics size, 100 ctrs"][2:6] == ["2048", "", "", "—"]
    assert rows["daemon RSS, 100 ctrs up"][-1] == "1.50×"
    assert "container create" not in rows  # not measured: no row
    assert rows["getppid, probes on"][2] == "510" and rows["getppid, probes on"][-1] == (
        "1.65× on/off"
    )
    assert rows["ns added per syscall"][2] == "200" and rows["probe events lost"][2] == "0"
    assert rows["BPF compile at daemon start"][2] == "900"
    assert rows["httpd load, probes on"][-1] == "0.90× on/off"


def test_one_endpoint_has_no_ratio_column(tmp_path):
    result = endpoint_report.build_report(measured(tmp_path)[:1], Settings("s"), None, {})
    assert result["ratios"] == {} and endpoint_report.columns(result)[-1] == "±%"
    assert all(len(row) == 5 for row in endpoint_report.table_rows(result))
    assert not any("×" in line for line in endpoint_report.notes(result))


def test_render_prints_everything_untruncated(tmp_path):
    result = report(tmp_path) | {"command": "observe-rt bench compare", "unavailable_endpoints": {}}
    out = rendered(compare_command.render, result, endpoint_command.TABLE_WIDTH)
    for text in ("observe-rt", "containerd", "× containerd", "pod start, one at a time",
                 "getppid, probes on", "containerd: no metrics figures: no metrics URL",
                 "probes on / probes off", "Measured by: observe-rt bench compare"):  # fmt: skip
        assert text in out, text
    assert "…" not in out


def test_results_are_written_with_the_date_and_as_latest(tmp_path):
    result = report(tmp_path)
    path = compare.write_results(result, tmp_path / "results")
    assert path.name == "cri-20261128T180000Z.json"
    assert json.loads(path.read_text()) == json.loads((path.parent / "latest.json").read_text())


# --- the probe benchmark's pure parts -----------------------------------------------------------


def test_probe_figures_from_logs_metrics_and_workload_output():
    log = ("INFO eBPF probes up (syscalls, oom) in 1234 ms\nINFO x\n"
           "INFO eBPF probes up (syscalls, oom, tcp) in 987 ms\n")  # fmt: skip
    assert probe_cost.compile_ms(log) == 987.0 and probe_cost.compile_ms("nothing") is None
    text = (
        "# TYPE observe_rt_container_tcp_connections_total counter\n"
        'observe_rt_container_tcp_connections_total{direction="active",id="a"} 5\n'
        'observe_rt_container_tcp_connections_total{direction="passive",id="a"} 4\n'
        "# TYPE observe_rt_container_syscalls_total counter\n"
        'observe_rt_container_syscalls_total{syscall="getppid",id="a"} 100\n'
        'observe_rt_container_syscalls_total{syscall="read",id="a"} 7\n'
    )
    assert probe_cost.metric_sum(text, "observe_rt_container_tcp_connections_total") == 9
    assert probe_cost._syscalls(text) == 100
    assert workloads.parse_syscall_rate("calls 10 ns_total 2500 ns_per_call 250.00\n") == 250.0
    assert workloads.parse_http_load("requests 90 errors 1 bytes 9000 seconds 3.001\n") == {
        "requests": 90.0, "errors": 1.0, "bytes": 9000.0, "seconds": 3.001}  # fmt: skip
    with pytest.raises(ValueError, match="no 'calls ...' line"):
        workloads.parse_syscall_rate("Segmentation fault\n")


def test_probe_section_medians_and_ratios():
    assert PROBES["available"] and PROBES["lost"] == 0
    rows = {row[0]: row for row in PROBES["rows"]}
    assert rows["getppid, probes off"][2] == 310.0 and rows["getppid, probes on"][3] == round(
        510 / 310, 3
    )
    assert rows["ns added per syscall"][2] == 200.0
    assert rows["probe events handled, httpd load"][2] == 1800.0
    json.dumps(PROBES)


def test_workloads_compile_static_and_land_in_the_image(tmp_path):
    binaries = workloads.compile_programs(tmp_path)
    assert set(binaries) == set(workloads.PROGRAMS)
    import subprocess

    out = subprocess.run([str(tmp_path / "syscall_rate"), "1000"], capture_output=True,
                         text=True, check=True).stdout  # fmt: skip
    assert workloads.parse_syscall_rate(out) > 0
    bad = subprocess.run([str(tmp_path / "http_load"), "0", "1", "1", "/"], capture_output=True)
    assert bad.returncode == 2
    import io
    import tarfile

    layer = workloads.workloads_layer(binaries)
    with tarfile.open(fileobj=io.BytesIO(layer)) as tar:
        names = {member.name: member for member in tar.getmembers()}
    assert names["bench/syscall_rate"].mode == 0o755
    assert names["www/index.html"].size == workloads.WWW_BYTES


# --- the command line -------------------------------------------------------------------------


def test_bench_with_an_endpoint_runs_it_and_without_lists():
    args = parse("--endpoint", "unix:///run/x.sock", "--pods", "3", "--levels", "100,10")
    assert args.func is command.bench_root and args.levels == (10, 100) and args.pods == 3
    assert endpoint_command.settings(args, "t").levels == (10, 100)
    assert args.parallel == 5 and args.containers_per_pod == 10
    assert parse().endpoint is None
    with pytest.raises(InvalidArgument, match="--pods need --endpoint"):
        command.bench_root(parse("--pods", "3"))
    assert_rejected("--endpoint", ["--levels", "0"])
    for bad in (["--levels", "x"], ["--metrics-url", "http://10.0.0.1:9464/metrics"],
                ["--metrics-url", "https://127.0.0.1/metrics"], ["--pods", "0"]):  # fmt: skip
        with pytest.raises(SystemExit):
            parse("--endpoint", "unix:///x.sock", *bad)
    ok = parse("--endpoint", "unix:///x.sock", "--metrics-url", "http://127.0.0.1:9/metrics")
    assert ok.metrics_url == "http://127.0.0.1:9/metrics"


def test_a_bad_endpoint_is_refused_before_anything_runs(tmp_path):
    from observe_rt.bench.endpoint_session import EndpointSession
    from observe_rt.errors import FailedPrecondition

    with pytest.raises(InvalidArgument, match="expected unix:///"):
        EndpointSession("tcp://127.0.0.1:1", None, None)
    with pytest.raises(FailedPrecondition, match="is not a socket"):
        EndpointSession(f"unix://{tmp_path}/missing.sock", None, None)


def test_compare_options_and_command_line():
    args = parse("compare")
    assert args.func is compare_command.run_compare and args.probe_rounds == 3
    assert str(args.results_dir) == "bench-results"
    assert common_line(args) == "observe-rt bench compare"
    args = parse("compare", "--pods", "2", "--levels", "2,4", "--probe-rounds", "0")
    assert common_line(args) == "observe-rt bench compare --pods 2 --levels 2,4 --probe-rounds 0"
    assert_rejected("compare", ["--syscalls", "10"], ["--http-workers", "0"])


def common_line(args) -> str:
    from observe_rt.bench import common

    return common.command_line("compare", args, compare_command.OPTIONS)


def test_observe_rt_config_can_turn_the_probes_off(tmp_path):
    from observe_rt import config
    from observe_rt.bench import cri_setup

    for probes in (True, False):
        text = cri_setup.observe_rt_config(
            socket=tmp_path / "s", state_dir=tmp_path / "st", run_dir=tmp_path / "r",
            cni_conf_dir=tmp_path / "c", cni_bin_dir="/usr/lib/cni", hosts_dir=tmp_path / "h",
            policy=tmp_path / "p.json", cgroup_parent="/x", probes=probes,
        )  # fmt: skip
        (tmp_path / "config.toml").write_text(text)
        assert config.load(str(tmp_path / "config.toml")).probes is probes


class FakeObserveRt:
    """A daemon that logs like observe-rt's at each (re)start, with probes on or off."""

    def __init__(self, log, client) -> None:
        self.log, self.client, self.probes, self.starts = log, client, True, []

    def restart(self) -> None:
        self.starts.append(self.probes)
        line = "eBPF probes up (syscalls, tcp) in 900 ms" if self.probes else "eBPF probes off: x"
        with open(self.log, "a") as out:
            out.write(f"INFO {line}\nINFO Prometheus metrics on http://127.0.0.1:1/metrics\n")


class WorkloadCri(FakeCri):
    def exec_sync(self, container_id, cmd, timeout):
        self._call("ExecSync")
        outputs = {
            "/bench/syscall_rate": "calls 1000 ns_total 300000 ns_per_call 300.00\n",
            "/bench/http_load": "requests 300 errors 0 bytes 3000 seconds 3.000\n",
        }
        return api_pb2.ExecSyncResponse(exit_code=0, stdout=outputs[cmd[0]].encode())


def test_probe_rounds_restart_the_daemon_on_and_off_and_read_its_metrics(tmp_path, monkeypatch):
    from observe_rt.bench import cri_calls

    scrapes = iter(range(100))

    def scrape_text(url):  # counters that grow by 1000 getppid calls and 600 flows a scrape
        n = next(scrapes)
        return (f'observe_rt_container_syscalls_total{{syscall="getppid"}} {1000 * n}\n'
                f'observe_rt_container_tcp_connections_total{{direction="active"}} {600 * n}\n'
                f'observe_rt_probe_events_lost_total{{probe="tcp"}} {5 * n}\n'
                f'observe_rt_probe_events_lost_total{{probe="oom"}} 0\n')  # fmt: skip

    monkeypatch.setattr(cri_calls, "scrape_text", scrape_text)
    monkeypatch.setattr(probe_cost, "METRICS_SETTLE_S", 0)
    client = WorkloadCri("o")
    runtime = FakeObserveRt(tmp_path / "daemon.log", client)
    runtime.log.write_text("INFO eBPF probes up (old start) in 5 ms\n")
    target = Target("observe-rt", client, "busybox", tmp_path)
    settings = probe_cost.ProbeSettings(rounds=2, syscalls=1000, http_seconds=3)
    section = probe_cost.measure_probes(runtime, target, "workloads", settings, lambda text: None)
    assert runtime.starts == [True, False, False, True] and runtime.probes is True
    assert section["available"] and section["lost"] == 10  # 5 in each round's HTTP load
    assert section["lost_by_probe"] == {"tcp": 10}
    samples = section["samples"]
    assert samples["compile_ms"] == [900.0, 900.0]  # this start's line, not the old one
    assert samples["syscall_ns_on"] == samples["syscall_ns_off"] == [300.0, 300.0]
    assert samples["requests_per_s_on"] == [100.0, 100.0]
    assert samples["events_per_s"] == [200.0, 200.0]  # 600 flows in 3 s
    assert samples["syscalls_counted_fraction"] == [1.0, 1.0]
    assert client.pods == {} and client.images == ["workloads"]  # httpd's pod is removed


def test_probes_that_do_not_load_make_the_rows_unavailable(tmp_path):
    client = WorkloadCri("o")
    runtime = FakeObserveRt(tmp_path / "daemon.log", client)
    runtime.restart = lambda: runtime.log.write_text("WARNING eBPF probes off: no BTF\n")
    target = Target("observe-rt", client, "busybox", tmp_path)
    section = probe_cost.measure_probes(runtime, target, "w", probe_cost.ProbeSettings(1),
                                        lambda text: None)  # fmt: skip
    assert section == {"available": False, "reason": "the probes did not load: no BTF"}
    assert client.pods == {}


def test_waiting_for_a_cri_log_line(tmp_path):
    log = tmp_path / "c.log"
    assert not endpoint.wait_logged(log, "ready", timeout=0.05)  # no log yet
    log.write_text("2026-11-28T18:00:00.000000000Z stdout F not ready\n")
    assert not endpoint.wait_logged(log, "ready", timeout=0.05)
    log.write_text("2026-11-28T18:00:00.000000000Z stdout F ready\n")
    assert endpoint.wait_logged(log, "ready", timeout=0.05)
    assert "echo ready" in endpoint.TRAP_SCRIPT


def test_the_pin_dir_is_written_only_where_the_daemon_knows_the_key(tmp_path, monkeypatch):
    from observe_rt.bench import cri_setup

    def text(keys):
        monkeypatch.setattr(cri_setup, "_daemon_config_keys", lambda: keys)
        return cri_setup.observe_rt_config(
            socket=tmp_path / "s", state_dir=tmp_path / "st", run_dir=tmp_path / "r",
            cni_conf_dir=tmp_path / "c", cni_bin_dir="/usr/lib/cni", hosts_dir=tmp_path / "h",
            policy=tmp_path / "p.json", cgroup_parent="/x", bpf_pin_dir="/sys/fs/bpf/ocb-1-o",
        )  # fmt: skip

    assert 'bpf_pin_dir = "/sys/fs/bpf/ocb-1-o"' in text({"bpf_pin_dir", "probes"})
    assert "bpf_pin_dir" not in text({"probes"})
