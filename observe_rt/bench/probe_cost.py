"""What the eBPF probes cost a workload: observe-rt with probes on vs off (`make bench` only).

One pod on the observe-rt daemon runs busybox httpd (bench/workloads:1, workloads.py). Each
round restarts the daemon twice, probes on and probes off (order rotated per round; the pod
keeps running across restarts, and a daemon with probes re-tracks it at start), and each time
runs two workloads in the container through ExecSync, so they are in its (tracked) cgroup:

    syscall_rate N                 N x getppid(2): ns per call, timed inside the workload
    http_load 8080 S W /index.html W workers for S seconds against httpd on the pod's
                                   loopback, a new TCP connection per request: requests/s

With probes on it also reads, from the daemon: the BPF compile time it logged at start, and
from /metrics around the HTTP load the TCP connections the probes counted for the container
and the events lost (observe_rt_probe_events_lost_total). Each counted connection is one flow
event sent through the ring buffer at close, so connections per second is the event rate the
daemon handled; lost must stay 0.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass, field

from observe_rt.bench import workloads
from observe_rt.bench.common import rotated
from observe_rt.bench.endpoint import StepError, Target, remove_pod, run_pod, start_container, timed
from observe_rt.bench.stats import summarize

COMPILED = re.compile(r"eBPF probes up \(([^)]*)\) in (\d+) ms")
PROBES_OFF = re.compile(r"eBPF probes off: (.*)")
METRICS_SETTLE_S = 2.5  # the probe metrics refresh on the collector's 1 s tick
HTTPD = ("httpd", "-f", "-p", f"127.0.0.1:{workloads.HTTPD_PORT}", "-h", "/www")


@dataclass(frozen=True)
class ProbeSettings:
    rounds: int = 3
    syscalls: int = 2_000_000
    http_seconds: float = 3.0
    http_workers: int = 4


@dataclass
class ProbeSamples:
    syscall_ns: dict[bool, list[float]] = field(default_factory=lambda: {True: [], False: []})
    requests_per_s: dict[bool, list[float]] = field(default_factory=lambda: {True: [], False: []})
    compile_ms: list[float] = field(default_factory=list)
    events_per_s: list[float] = field(default_factory=list)
    lost_by_probe: dict[str, int] = field(default_factory=dict)

    @property
    def lost(self) -> int:
        return sum(self.lost_by_probe.values())

    syscalls_counted: list[float] = field(default_factory=list)  # counted / made, probes on


def compile_ms(log_text: str) -> float | None:
    """The compile time of the last start that loaded the probes, from the daemon's log."""
    found = COMPILED.findall(log_text)
    return float(found[-1][1]) if found else None


def metric_samples(text: str, name: str) -> list[tuple[dict[str, str], float]]:
    """(labels, value) of every sample called `name` in a Prometheus text."""
    from prometheus_client.parser import text_string_to_metric_families

    return [(sample.labels, sample.value) for family in text_string_to_metric_families(text)
            for sample in family.samples if sample.name == name]  # fmt: skip


def metric_sum(text: str, name: str, where: dict[str, str] | None = None) -> float:
    """Sum of the samples called `name` (with every label in `where`) in a Prometheus text."""
    wanted = (where or {}).items()
    return sum(value for labels, value in metric_samples(text, name)
               if all(labels.get(k) == v for k, v in wanted))  # fmt: skip


def measure_probes(runtime, target: Target, image: str, settings: ProbeSettings, say) -> dict:
    """The probe benchmark's report section (rows for the table, samples for the JSON)."""
    from observe_rt.bench.cri_calls import metrics_url

    samples, pod_id = ProbeSamples(), None
    workload_target = Target(target.name, target.client, image, target.log_dir,
                             target.cgroup_parent)  # fmt: skip
    try:
        pod, _ = run_pod(workload_target, "probes", "probes")
        pod_id = pod.id
        container_id = start_container(workload_target, pod, "httpd", HTTPD)
        for index in range(settings.rounds):
            for probes in rotated([True, False], index):
                say(f"probe overhead: round {index + 1}, probes {'on' if probes else 'off'}")
                log = _restart(runtime, probes)
                workload_target.client = runtime.client
                if probes and (compiled := compile_ms(log)) is None:
                    off = PROBES_OFF.findall(log)
                    raise StepError(f"the probes did not load: {off[-1] if off else 'no log line'}")
                if probes:
                    samples.compile_ms.append(compiled)
                _round(workload_target, container_id, probes, settings, samples,
                       metrics_url(log) if probes else None)  # fmt: skip
    except StepError as err:
        return {"available": False, "reason": str(err)}
    finally:
        runtime.probes = True
        if pod_id is not None and runtime.client is not None:
            workload_target.client = runtime.client
            try:
                remove_pod(workload_target, pod_id)
            except StepError:
                pass  # the session's clean-up removes it
    return report_section(samples, settings)


def _restart(runtime, probes: bool) -> str:
    """Restart the daemon with its probes on or off; what it logged while starting."""
    offset = runtime.log.stat().st_size if runtime.log.exists() else 0
    runtime.probes = probes
    runtime.restart()
    with open(runtime.log, "rb") as log:
        log.seek(offset)
        return log.read().decode(errors="replace")


def _exec(target: Target, container_id: str, argv: list[str], timeout: int) -> str:
    response, _ = timed("ExecSync", target.client.exec_sync, container_id, argv, timeout)
    if response.exit_code != 0:
        raise StepError(f"{argv[0]} exited {response.exit_code}: "
                        f"{response.stderr.decode(errors='replace')[-300:]}")  # fmt: skip
    return response.stdout.decode(errors="replace")


def _round(target, container_id, probes, settings, samples: ProbeSamples, url) -> None:
    from observe_rt.bench.cri_calls import scrape_text

    before = None
    if url:
        time.sleep(METRICS_SETTLE_S)
        before = scrape_text(url)
    out = _exec(target, container_id, ["/bench/syscall_rate", str(settings.syscalls)], 120)
    samples.syscall_ns[probes].append(workloads.parse_syscall_rate(out))
    if before is not None:  # counted while the probes were on: every call, or they miss some
        time.sleep(METRICS_SETTLE_S)
        middle = scrape_text(url)
        counted = _syscalls(middle) - _syscalls(before)
        samples.syscalls_counted.append(counted / settings.syscalls)
        before = middle
    argv = ["/bench/http_load", str(workloads.HTTPD_PORT), f"{settings.http_seconds:g}",
            str(settings.http_workers), "/index.html"]  # fmt: skip
    load = workloads.parse_http_load(_exec(target, container_id, argv,
                                           int(settings.http_seconds) + 60))  # fmt: skip
    if load["requests"] == 0 or load["errors"] > load["requests"] / 100:
        raise StepError(f"http_load: {load['requests']:.0f} requests, {load['errors']:.0f} errors")
    samples.requests_per_s[probes].append(load["requests"] / load["seconds"])
    if before is not None:
        time.sleep(METRICS_SETTLE_S)
        after = scrape_text(url)
        flows = _connections(after) - _connections(before)
        samples.events_per_s.append(flows / load["seconds"])
        for probe, count in _lost(after).items():
            lost = int(count - _lost(before).get(probe, 0))
            if lost:
                samples.lost_by_probe[probe] = samples.lost_by_probe.get(probe, 0) + lost


def _syscalls(text: str) -> float:
    return metric_sum(text, "observe_rt_container_syscalls_total", {"syscall": "getppid"})


def _connections(text: str) -> float:
    return metric_sum(text, "observe_rt_container_tcp_connections_total")


def _lost(text: str) -> dict[str, float]:
    """observe_rt_probe_events_lost_total by probe."""
    found: dict[str, float] = {}
    for labels, value in metric_samples(text, "observe_rt_probe_events_lost_total"):
        found[labels.get("probe", "")] = found.get(labels.get("probe", ""), 0.0) + value
    return found


def report_section(samples: ProbeSamples, settings: ProbeSettings) -> dict:
    """Medians of each figure and the table rows: (label, unit, value, probes on / off)."""

    def median(values: list[float]) -> float:
        return round(summarize(values).median, 3)

    ns_on, ns_off = median(samples.syscall_ns[True]), median(samples.syscall_ns[False])
    rps_on, rps_off = median(samples.requests_per_s[True]), median(samples.requests_per_s[False])
    events = median(samples.events_per_s) if samples.events_per_s else 0.0
    rows = [
        ("BPF compile at daemon start", "ms", median(samples.compile_ms), None),
        ("getppid, probes off", "ns/call", ns_off, None),
        ("getppid, probes on", "ns/call", ns_on, round(ns_on / ns_off, 3) if ns_off else None),
        ("ns added per syscall", "ns", round(ns_on - ns_off, 3), None),
        ("httpd load, probes off", "req/s", rps_off, None),
        ("httpd load, probes on", "req/s", rps_on, round(rps_on / rps_off, 3) if rps_off else None),
        ("probe events handled, httpd load", "events/s", events, None),
        ("probe events lost", "events", samples.lost, None),
    ]
    return {
        "available": True,
        "settings": {key: getattr(settings, key) for key in settings.__dataclass_fields__},
        "samples": {
            "syscall_ns_on": samples.syscall_ns[True],
            "syscall_ns_off": samples.syscall_ns[False],
            "requests_per_s_on": samples.requests_per_s[True],
            "requests_per_s_off": samples.requests_per_s[False],
            "compile_ms": samples.compile_ms,
            "events_per_s": samples.events_per_s,
            "syscalls_counted_fraction": samples.syscalls_counted,
        },  # fmt: skip
        "lost": samples.lost,
        "lost_by_probe": dict(samples.lost_by_probe),
        "rows": rows,
    }
