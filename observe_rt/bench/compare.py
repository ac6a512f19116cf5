"""`observe-rt bench compare` (what `make bench` runs): the CRI benchmark on observe-rt and
containerd + runc side by side, then what observe-rt's eBPF probes cost.

The environment is bench cri's (cri.py's CriBench: a loopback registry with the bench images,
observe-rt and containerd each on its own socket, state dirs, cgroup parent and CNI bridge,
all torn down on exit, also on Ctrl-C or SIGTERM), plus the workloads image (workloads.py).

    1. the phases of endpoint_phases.py, interleaved A B / B A over both endpoints
    2. containerd stopped; probe overhead on observe-rt, probes on vs off (probe_cost.py)
    3. one report: both columns, observe-rt / containerd ratios, the probe rows; written as
       JSON to <results-dir>/cri-<UTC time>.json and <results-dir>/latest.json
"""

from __future__ import annotations

import datetime
import json
from pathlib import Path

from observe_rt.bench import common
from observe_rt.bench.cri import CriBench
from observe_rt.bench.cri_calls import metrics_url
from observe_rt.bench.cri_runtimes import ObserveRtRuntime
from observe_rt.bench.endpoint import Target

BASELINE = "containerd"


class CompareBench(CriBench):
    """CriBench's registry and runtimes, plus the workloads image pulled into observe-rt."""

    def __init__(self) -> None:
        super().__init__()
        self.workloads_image: str | None = None
        self.workloads_reason = ""
        try:
            self._add_workloads()
        except BaseException:  # Ctrl-C while gcc runs: the runtimes are up, take them down
            self.close()
            raise

    def _add_workloads(self) -> None:
        from observe_rt.bench.workloads import push_workloads_image

        try:
            self.workloads_image = push_workloads_image(self.registry.url, self.registry.host)
            observe_rt = self.observe_rt()
            if observe_rt is not None:
                observe_rt.runtime.client.pull_image(self.workloads_image)
        except Exception as err:  # gcc missing, a failed pull: the probe rows say why
            self.workloads_image, self.workloads_reason = None, f"workloads image: {err}"

    def observe_rt(self):
        return next((run for run in self.runs if run.name == "observe-rt" and run.active), None)

    def targets(self) -> list[Target]:
        """A Target per runtime that started, observe-rt first (the ratio's numerator)."""
        targets = []
        for run in self.runs:
            if not run.active:
                continue
            runtime = run.runtime
            url = None
            if isinstance(runtime, ObserveRtRuntime):
                url = metrics_url(runtime.log.read_text(errors="replace"))
            targets.append(Target(
                name=run.name, client=runtime.client, image=self.images.busybox,
                log_dir=self.tmp / "logs" / run.name[0], cgroup_parent=runtime.cgroup_parent,
                daemon_pid=runtime.daemon_pid(), metrics_url=url, version=run.version,
            ))  # fmt: skip
        return targets

    def stop_baseline(self) -> None:
        """containerd is not needed for the probe rows: stop it so it costs them nothing."""
        for run in self.runs:
            if run.name == BASELINE and run.runtime is not None:
                run.runtime.close()


def measure(args, say) -> dict:
    from observe_rt.bench.endpoint_command import settings as phase_settings
    from observe_rt.bench.endpoint_phases import run_phases
    from observe_rt.bench.endpoint_report import build_report
    from observe_rt.bench.probe_cost import ProbeSettings, measure_probes

    say("starting the registry, observe-rt and containerd; pulling images")
    with CompareBench() as bench:
        say(bench.describe())
        targets = bench.targets()
        settings = phase_settings(args, bench.session)
        run_phases(targets, settings, say)
        bench.stop_baseline()
        probes = {"available": False, "reason": bench.workloads_reason or "observe-rt is down"}
        observe_rt = bench.observe_rt()
        if args.probe_rounds and observe_rt is not None and bench.workloads_image:
            probe_settings = ProbeSettings(args.probe_rounds, args.syscalls, args.http_seconds,
                                           args.http_workers)  # fmt: skip
            target = next(t for t in targets if t.name == "observe-rt")
            probes = measure_probes(observe_rt.runtime, target, bench.workloads_image,
                                    probe_settings, say)  # fmt: skip
        elif not args.probe_rounds:
            probes = {"available": False, "reason": "--probe-rounds 0"}
        unavailable = {run.name: run.reason for run in bench.runs if run.reason}
        return build_report(targets, settings, BASELINE, common.host_info(), {
            "benchmark": "compare", "date": utc_now(), "probes": probes,
            "unavailable_endpoints": unavailable,
        })  # fmt: skip


def utc_now() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def write_results(report: dict, results_dir: Path) -> Path:
    """The report as <results_dir>/cri-<date>.json, and the same as latest.json."""
    results_dir.mkdir(parents=True, exist_ok=True)
    stamp = report["date"].replace(":", "").replace("-", "")
    path = results_dir / f"cri-{stamp}.json"
    text = json.dumps(report, indent=2) + "\n"
    path.write_text(text)
    (results_dir / "latest.json").write_text(text)
    return path
