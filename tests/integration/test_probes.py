"""The eBPF probes on the real kernel, with exact counts from known workloads.

Each test makes its own cgroup v2 directory (its inode is the cgroup id the kernel reports),
tracks it, and runs a tiny static C program from tests/support/workloads inside it through
`sh -c 'echo $$ > cgroup.procs; exec prog'`. Network traffic stays on 127.0.0.1.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
import uuid
from contextlib import contextmanager
from pathlib import Path

import pytest

from observe_rt.probes.events import FlowClosed, OomKill, ProcessExec, ProcessExit
from observe_rt.probes.features import TRACEFS
from observe_rt.probes.manager import SPECS, ProbeManager
from observe_rt.probes.syscall_names import numbers

WORKLOADS = Path(__file__).resolve().parents[1] / "support" / "workloads"
NR = numbers()
ENOENT = 2


def cgroup2_root() -> Path:
    with open("/proc/mounts") as mounts:
        for line in mounts:
            fields = line.split()
            if fields[2] == "cgroup2":
                return Path(fields[1])
    pytest.skip("no cgroup2 mount")


@pytest.fixture(scope="session")
def bins(tmp_path_factory) -> dict[str, str]:
    if shutil.which("gcc") is None:
        pytest.skip("gcc is needed to build the workloads")
    out = tmp_path_factory.mktemp("workloads")
    built = {}
    for source in WORKLOADS.glob("*.c"):
        target = out / source.stem
        subprocess.run(["gcc", "-static", "-O1", "-o", target, source], check=True)
        built[source.stem] = str(target)
    return built


@pytest.fixture(scope="module")
def probes():
    pytest.importorskip("bcc")
    manager = ProbeManager()
    status = manager.start()
    assert status.available, status
    assert all(p.up for p in status.probes), status
    yield manager
    manager.stop()


class Cgroup:
    """A fresh v2 cgroup (and, for memory limits on hybrid hosts, a v1 memory one)."""

    def __init__(self, memory_limit: int | None = None) -> None:
        name = f"observe-rt-probe-{uuid.uuid4().hex[:8]}"
        self.path = cgroup2_root() / name
        self.path.mkdir()
        self.id = os.stat(self.path).st_ino
        self.v1_memory: Path | None = None
        if memory_limit is not None:
            self._limit_memory(name, memory_limit)

    def _limit_memory(self, name: str, limit: int) -> None:
        if (self.path / "memory.max").exists():  # pure v2 with the memory controller
            (self.path / "memory.max").write_text(str(limit))
            (self.path / "memory.swap.max").write_text("0")
            return
        v1 = Path("/sys/fs/cgroup/memory")
        if not v1.is_dir():
            pytest.skip("no memory controller to put a limit on")
        self.v1_memory = v1 / name
        self.v1_memory.mkdir()
        (self.v1_memory / "memory.limit_in_bytes").write_text(str(limit))

    def wrap(self, argv: list[str]) -> list[str]:
        """argv run inside this cgroup (and its v1 memory cgroup), from its first exec on."""
        joins = [self.path / "cgroup.procs"]
        if self.v1_memory is not None:
            joins.append(self.v1_memory / "cgroup.procs")
        script = " && ".join(f"echo $$ > {procs}" for procs in joins) + ' && exec "$@"'
        return ["sh", "-c", script, "sh", *argv]

    def run(self, argv: list[str], **kw) -> subprocess.CompletedProcess:
        return subprocess.run(self.wrap(argv), capture_output=True, text=True, timeout=60, **kw)

    def remove(self) -> None:
        for directory in (self.path, self.v1_memory):
            if directory is not None and directory.exists():
                _empty_and_remove(directory)


def _empty_and_remove(directory: Path) -> None:
    deadline = time.monotonic() + 10
    while True:
        pids = (directory / "cgroup.procs").read_text().split()
        for pid in pids:
            try:
                os.kill(int(pid), signal.SIGKILL)
            except ProcessLookupError:
                pass
        try:
            directory.rmdir()
            return
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)


@contextmanager
def tracked(probes: ProbeManager, memory_limit: int | None = None):
    cgroup = Cgroup(memory_limit)
    probes.track(cgroup.id)
    try:
        yield cgroup
    finally:
        probes.untrack(cgroup.id)
        cgroup.remove()


def events_for(probes: ProbeManager, cgroup_id: int, want, seconds: float = 5.0) -> list:
    """Poll until want(events of this cgroup) holds or time runs out; those events."""
    got: list = []
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        got += [e for e in probes.poll_events(100) if e.cgroup_id == cgroup_id]
        if want(got):
            break
    return got


def test_exact_count_for_the_container_and_zero_for_its_neighbour(probes, bins):
    with tracked(probes) as worker, tracked(probes) as neighbour:
        assert worker.run([bins["syscall_loop"], "getcpu", "23"]).returncode == 0
        assert neighbour.run([bins["syscall_loop"], "getppid", "23"]).returncode == 0
        counters = probes.drain_counters()
        assert counters[worker.id].calls(NR["getcpu"]) == 23
        assert counters[neighbour.id].calls(NR["getcpu"]) == 0
        assert counters[neighbour.id].calls(NR["getppid"]) >= 23
        stats = counters[worker.id].syscalls[NR["getcpu"]]
        assert stats.returned == 23 and stats.errors == 0 and stats.total_ns > 0


def test_failing_opens_count_enoent(probes, bins):
    with tracked(probes) as cgroup:
        assert cgroup.run([bins["syscall_loop"], "enoent", "23"]).returncode == 0
        counters = probes.drain_counters()[cgroup.id]
        assert counters.errors(NR["openat"], ENOENT) == 23
        assert counters.named_errors()[("openat", "ENOENT")] == 23


def test_counters_are_cumulative(probes, bins):
    with tracked(probes) as cgroup:
        cgroup.run([bins["syscall_loop"], "getcpu", "23"])
        first = probes.drain_counters()[cgroup.id].calls(NR["getcpu"])
        cgroup.run([bins["syscall_loop"], "getcpu", "23"])
        assert first == 23
        assert probes.drain_counters()[cgroup.id].calls(NR["getcpu"]) == 46


def test_first_syscalls_counted_when_tracked_right_before_exec(probes, bins):
    cgroup = Cgroup()
    # The shell joins the cgroup untracked and waits; tracking happens right before its exec
    # (an absolute path: exactly one execve), as the runtime's init waits for the daemon.
    script = f'echo $$ > {cgroup.path}/cgroup.procs && read go && exec "$@"'
    argv = ["sh", "-c", script, "sh", bins["syscall_loop"], "getcpu", "23"]
    shell = subprocess.Popen(argv, stdin=subprocess.PIPE, text=True)
    try:
        _wait_for_member(cgroup, shell.pid)
        probes.track(cgroup.id)
        shell.communicate("go\n", timeout=30)
        counters = probes.drain_counters()[cgroup.id]
        assert counters.calls(NR["execve"]) == 1
        assert counters.calls(NR["getcpu"]) == 23
        execs = events_for(probes, cgroup.id, lambda got: any(_is_exec_of(e, bins) for e in got))
        assert any(_is_exec_of(e, bins) for e in execs)
    finally:
        probes.untrack(cgroup.id)
        cgroup.remove()


def _wait_for_member(cgroup: Cgroup, pid: int) -> None:
    deadline = time.monotonic() + 10
    while str(pid) not in (cgroup.path / "cgroup.procs").read_text().split():
        assert time.monotonic() < deadline, "the shell never joined its cgroup"
        time.sleep(0.01)


def _is_exec_of(event, bins) -> bool:
    return isinstance(event, ProcessExec) and event.filename == bins["syscall_loop"]


def test_exec_and_exit_events_carry_the_exit_code(probes, bins):
    with tracked(probes) as cgroup:
        run = cgroup.run([bins["syscall_loop"], "getcpu", "1", "7"])
        assert run.returncode == 7
        got = events_for(probes, cgroup.id, lambda e: any(isinstance(x, ProcessExit) for x in e))
        execs = [e for e in got if isinstance(e, ProcessExec)]
        exits = [e for e in got if isinstance(e, ProcessExit)]
        assert [(e.filename, e.comm) for e in execs] == [(bins["syscall_loop"], "syscall_loop")]
        assert [(e.pid, e.exit_code, e.signal) for e in exits] == [(execs[0].pid, 7, None)]


def test_oom_kill_is_one_event_naming_the_victim(probes, bins):
    with tracked(probes, memory_limit=32 << 20) as cgroup:
        hog = subprocess.Popen(cgroup.wrap([bins["memhog"]]))
        assert hog.wait(timeout=60) == -signal.SIGKILL
        got = events_for(
            probes, cgroup.id, lambda e: any(isinstance(x, ProcessExit) for x in e), seconds=10
        )
        time.sleep(0.2)  # nothing else may follow
        got += [e for e in probes.poll_events(100) if e.cgroup_id == cgroup.id]
        kills = [e for e in got if isinstance(e, OomKill)]
        assert len(kills) == 1, got
        kill = kills[0]
        assert (kill.victim_pid, kill.victim_comm, kill.attribution) == (
            hog.pid,
            "memhog",
            "victim",
        )
        assert kill.anon_rss_kb > 16 << 10 and kill.total_vm_kb >= kill.anon_rss_kb
        exits = [e for e in got if isinstance(e, ProcessExit)]
        assert [(e.pid, e.signal) for e in exits] == [(hog.pid, signal.SIGKILL)]


def test_tcp_exchange_appears_as_one_flow_each_way(probes, bins):
    up, down = 100_000, 50_000
    with tracked(probes) as cgroup:
        run = cgroup.run([bins["tcp_pair"], str(up), str(down)])
        assert run.returncode == 0, run.stderr
        port = int(run.stdout.split()[1])
        flows = events_for(probes, cgroup.id, lambda e: _flows(e) and len(_flows(e)) >= 2)
        flows = _flows(flows)
        by_direction = {f.direction: f for f in flows}
        assert len(flows) == 2 and set(by_direction) == {"active", "passive"}, flows
        client, server = by_direction["active"], by_direction["passive"]
        assert client.dport == port == server.sport and client.sport == server.dport
        assert client.saddr == client.daddr == "127.0.0.1"
        assert client.bytes_sent == pytest.approx(up, rel=0.02)
        assert client.bytes_received == pytest.approx(down, rel=0.02)
        assert server.bytes_received == pytest.approx(up, rel=0.02)
        assert server.bytes_sent == pytest.approx(down, rel=0.02)
        assert client.duration_ns > 0 and server.duration_ns > 0
        assert {"SYN_SENT", "ESTABLISHED", "CLOSE"} <= set(client.states)
        totals = probes.drain_counters()[cgroup.id].tcp
        assert totals.bytes_sent == totals.bytes_received == up + down
        assert (totals.connections_active, totals.connections_passive) == (1, 1)


def _flows(events) -> list[FlowClosed]:
    return [e for e in events if isinstance(e, FlowClosed)]


def test_host_processes_produce_nothing(probes, bins):
    while probes.poll_events(50):  # whatever earlier tests left
        pass
    with tracked(probes) as idle:
        host = Cgroup()  # a cgroup nobody tracks
        try:
            for run in (host.run, _run_here):
                assert run([bins["syscall_loop"], "getcpu", "23"]).returncode == 0
                assert run([bins["tcp_pair"], "20000", "10000"]).returncode == 0
            time.sleep(0.1)
            assert probes.poll_events(200) == []
            assert probes.counted_cgroups() <= {idle.id}
            assert probes.drain_counters()[idle.id].syscalls == {}
        finally:
            host.remove()


def _run_here(argv: list[str]) -> subprocess.CompletedProcess:
    return subprocess.run(argv, capture_output=True, text=True, timeout=60)


def test_untrack_forgets_the_counters(probes, bins):
    with tracked(probes) as cgroup:
        cgroup.run([bins["syscall_loop"], "getcpu", "3"])
        assert cgroup.id in probes.counted_cgroups()
    assert cgroup.id not in probes.counted_cgroups()
    assert cgroup.id not in probes.drain_counters()


def test_full_ring_buffer_is_counted_not_hidden(bins):
    pytest.importorskip("bcc")
    manager = ProbeManager(enabled=("process",), sizes={"PROC_RINGBUF_PAGES": 1})
    assert manager.start().available
    try:
        with tracked(manager) as cgroup:
            loop = "i=0; while [ $i -lt 50 ]; do /bin/true; i=$((i+1)); done"
            assert cgroup.run(["sh", "-c", loop]).returncode == 0
            got = events_for(manager, cgroup.id, lambda e: False, seconds=0.5)
            lost = manager.lost_events()["process"]
            # 51 execs (the loop's shell, 50 x true) and 51 exits: each seen or counted lost
            assert lost > 0
            assert len(got) + lost == 102
    finally:
        manager.stop()


def test_perf_buffer_fallback_delivers_events(bins):
    pytest.importorskip("bcc")
    manager = ProbeManager(enabled=("process", "oom"), output="perf")
    status = manager.start()
    assert status.available and status.output == "perf", status
    try:
        with tracked(manager) as cgroup:
            cgroup.run([bins["syscall_loop"], "getcpu", "1", "4"])
            got = events_for(
                manager, cgroup.id, lambda e: any(isinstance(x, ProcessExit) for x in e)
            )
            assert [e.exit_code for e in got if isinstance(e, ProcessExit)] == [4]
    finally:
        manager.stop()


def test_missing_tracepoints_disable_only_what_needs_them(tmp_path):
    pytest.importorskip("bcc")
    # A tracefs copy without oom:mark_victim and the socket length tracepoints.
    missing = {"oom:mark_victim", "sock:sock_send_length", "sock:sock_recv_length"}
    names = {tp for spec in SPECS.values() for tp in spec.tracepoints} - missing
    for name in names:
        source = TRACEFS / "events" / name.replace(":", "/") / "format"
        target = tmp_path / "events" / name.replace(":", "/") / "format"
        target.parent.mkdir(parents=True)
        target.write_text(source.read_text())
    manager = ProbeManager(tracefs=tmp_path)
    try:
        status = manager.start()
        states = {p.name: p for p in status.probes}
        assert status.available
        assert not states["oom"].up and "oom:mark_victim" in states["oom"].reason
        assert states["tcp"].up and any("tcp_send_length" in n for n in states["tcp"].notes)
        assert states["syscalls"].up and states["process"].up
    finally:
        manager.stop()


def test_pinned_maps_of_another_layout_are_made_afresh(tmp_path, bins):
    """A pin left by another build (here: sc_stats with 8-byte values) must not keep the
    syscalls probe down: the manager unpins and loads again."""
    bcc = pytest.importorskip("bcc")
    pins = Path("/sys/fs/bpf") / f"ort-test-{uuid.uuid4().hex[:8]}"
    from observe_rt.host.kernel_headers import ensure_bpffs

    ensure_bpffs(pins)
    try:
        text = (f'BPF_TABLE_PINNED("hash", u64, u64, sc_stats, 16, "{pins}/sc_stats");\n'
                "int dummy(void *ctx) { return 0; }")  # fmt: skip
        stale = bcc.BPF(text=text)
        stale.cleanup()
        assert (pins / "sc_stats").exists()
        manager = ProbeManager(enabled=("syscalls",), pin_dir=pins)
        try:
            status = manager.start()
            assert status.available and status.up("syscalls"), status
            with tracked(manager) as cgroup:
                cgroup.run([bins["syscall_loop"], "getcpu", "23"])
                assert manager.drain_counters()[cgroup.id].calls(NR["getcpu"]) == 23
        finally:
            manager.stop()
    finally:
        shutil.rmtree(pins, ignore_errors=True)
