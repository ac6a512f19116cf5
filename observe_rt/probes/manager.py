"""ProbeManager: load the probes once, track containers, drain counters and events.

    manager = ProbeManager()                 # enabled=("syscalls", "oom", "tcp", "process")
    manager.start()                          # never raises: status() says what is off and why
    manager.track(cgroup_id)                 # before the container's first exec
    manager.drain_counters()                 # each collector tick; cumulative, diff to get rates
    manager.poll_events(timeout_ms=100)      # OOM kills, closed flows, exec/exit
    manager.lost_events()                    # {probe: dropped records} for the lost metric
    manager.untrack(cgroup_id); manager.stop()
    manager.forget_others()                  # after a restart: drop pinned state of gone cgroups

Threads: poll_events may block in the kernel for timeout_ms, so it has its own lock; track,
untrack and drain take the state lock and never wait for a poll (a container start must not
wait for the collector); a drain holds it while reading the maps (about 40 ms for 100
containers x 80 syscalls). stop() takes both.

Counters live in kernel maps. With `pin_dir` (on bpffs; the daemon's bpf_pin_dir) the maps of
cumulative state are pinned there and a new start() (daemon restart) reuses them, so counters
resume where they were; without it they begin again from zero, and readers treat a decrease as
a counter reset, as Prometheus does. Pinned maps a new build cannot reuse (another layout or
size) are removed and made afresh, once, with a warning.
"""

from __future__ import annotations

import logging
import struct
import threading
import time
from collections.abc import Iterable, Mapping
from pathlib import Path

from observe_rt.probes import assemble, features, loader, oom, process, syscalls, tcp
from observe_rt.probes.events import ContainerCounters, Event, ProbeState, ProbeStatus, TcpCounters
from observe_rt.probes.spec import PROBE_IDS, ProbePlan, ProbeSpec, plan

SPECS: dict[str, ProbeSpec] = {s.name: s for s in (syscalls.SPEC, oom.SPEC, tcp.SPEC, process.SPEC)}
DEFAULT_PROBES = tuple(SPECS)
COLLECTORS = {"syscalls": syscalls, "tcp": tcp}  # probes with counter maps: collect/purge
LAYOUTS = {"syscalls": syscalls.LAYOUT, "tcp": tcp.LAYOUT}
log = logging.getLogger("observe_rt.probes")
_CGROUP_KEY = struct.Struct("=Q")
_ONE = b"\x01"
MAX_PENDING_EVENTS = 65536  # decoded but not yet polled; beyond this, counted as lost


class ProbeManager:
    def __init__(
        self,
        enabled: Iterable[str] = DEFAULT_PROBES,
        *,
        tracefs: Path = features.TRACEFS,
        bpf_dir: Path = loader.BPF_DIR,
        prepare_host: bool = True,
        sizes: Mapping[str, int] | None = None,
        oom_stale_s: float = 5.0,
        output: str = "auto",
        pin_dir: Path | None = None,
    ) -> None:
        self.enabled = tuple(dict.fromkeys(enabled))
        unknown = [name for name in self.enabled if name not in SPECS]
        if unknown:
            raise ValueError(f"unknown probe(s) {unknown}; known: {list(SPECS)}")
        self._tracefs = Path(tracefs)
        self._bpf_dir = Path(bpf_dir)
        self._prepare_host = prepare_host
        self._pin_dir = Path(pin_dir) if pin_dir else None
        # -D overrides of the map and buffer sizes the bpf/ files default (MAX_TRACKED,
        # SC_MAX_KEYS, TCP_MAX_FLOWS, PROC_RINGBUF_PAGES, ...).
        self._sizes = dict(sizes or {})
        self._oom_stale_ns = int(oom_stale_s * 1e9)
        if output not in ("auto", "ringbuf", "perf"):
            raise ValueError(f"output must be auto, ringbuf or perf, not {output!r}")
        self._output = output
        self._state_lock = threading.Lock()
        self._poll_lock = threading.Lock()
        self._program: loader.Program | None = None
        self._tracked: set[int] = set()
        self._pending: list[Event] = []
        self._dropped: dict[str, int] = dict.fromkeys(self.enabled, 0)
        self._offset_ns = 0
        self._last_flush = 0.0
        self._status = ProbeStatus(False, "not started")

    # --- lifecycle ----------------------------------------------------------------------

    def start(self) -> ProbeStatus:
        """Compile and attach once; a failure anywhere becomes a reason in status()."""
        with self._state_lock:
            if self._program is None:
                self._status = self._load()
            return self._status

    def status(self) -> ProbeStatus:
        return self._status

    def stop(self) -> None:
        with self._poll_lock, self._state_lock:
            if self._program is not None:
                self._program.close()
                self._program = None
                down = tuple(ProbeState(p.name, False, "stopped") for p in self._status.probes)
                self._status = ProbeStatus(False, "stopped", probes=down)

    def _load(self) -> ProbeStatus:
        try:
            loader.import_bcc()
            if self._prepare_host:
                self._prepare()
        except (loader.BccUnavailable, OSError) as exc:
            return self._all_down(str(exc))
        initial = self._plans()
        ringbuf = self._output != "perf" and loader.ringbuf_supported()
        if self._output == "ringbuf" and not ringbuf:
            return self._all_down("this kernel cannot create BPF ring buffers")
        program, plans, error, times = self._compile_and_attach(initial, ringbuf)
        # A probe that could load but did not may have met pinned maps of another layout or
        # size (an upgrade, new -D sizes): unpin them and load once more.
        dropped = {p.name for p in initial if p.up} - {p.name for p in plans if p.up}
        if dropped and self._pin_dir is not None and _remove_pins(self._pin_dir):
            log.warning("probes %s did not load beside the maps pinned in %s: unpinned and "
                        "made afresh (counters restart from zero)",
                        ", ".join(sorted(dropped)), self._pin_dir)  # fmt: skip
            if program is not None:
                program.close()
            program, plans, error, times = self._compile_and_attach(initial, ringbuf)
        if program is None:
            return self._all_down(error, plans)
        compile_ms, attach_ms = times
        self._program = program
        self._open_buffers(program, plans, ringbuf)
        for cgroup_id in self._tracked:
            program.map("tracked").set(_CGROUP_KEY.pack(cgroup_id), _ONE)
        states = tuple(ProbeState(p.name, p.up, p.reason, p.notes) for p in plans)
        output = "ringbuf" if ringbuf else "perf"
        return ProbeStatus(True, "", compile_ms, attach_ms, output, states)

    def _compile_and_attach(self, plans: list[ProbePlan], ringbuf: bool):
        """(program or None, plans with what failed marked down, error, (compile, attach) ms)."""
        started = time.perf_counter()
        program, plans, error = self._compile(plans, ringbuf)
        compiled = time.perf_counter()
        if program is not None:
            plans = [self._attach(program, p) for p in plans]
        attached = time.perf_counter()
        return program, plans, error, ((compiled - started) * 1000, (attached - compiled) * 1000)

    def _prepare(self) -> None:
        # The host doorway: mount tracefs, link substitute kernel headers (deploy/setup.sh).
        from observe_rt.host.kernel_headers import ensure_kernel_headers, ensure_tracefs

        ensure_tracefs()
        if self._pin_dir is not None:
            from observe_rt.host.kernel_headers import ensure_bpffs

            ensure_bpffs(self._pin_dir)
        headers = ensure_kernel_headers().headers
        if not headers.in_use:
            raise loader.BccUnavailable(f"no kernel headers for bcc: {headers.reason}")

    def _all_down(self, reason: str, plans: Iterable[ProbePlan] = ()) -> ProbeStatus:
        known = {p.name: p for p in plans}
        states = tuple(
            ProbeState(name, False, known[name].reason if name in known else reason)
            for name in self.enabled
        )
        return ProbeStatus(False, reason, probes=states)

    def _plans(self) -> list[ProbePlan]:
        names = {tp for name in self.enabled for tp in SPECS[name].tracepoints}
        formats = {tp: features.read_format(tp, self._tracefs) for tp in names}
        return [plan(SPECS[name], formats) for name in self.enabled]

    def _compile(
        self, plans: list[ProbePlan], ringbuf: bool
    ) -> tuple[loader.Program | None, list[ProbePlan], str]:
        """Compile all up probes together; if that fails, find and drop the culprits."""
        if not any(p.up for p in plans):
            return None, plans, "no probe can load: " + "; ".join(p.reason for p in plans)
        try:
            return self._compile_plans(plans, ringbuf), plans, ""
        except loader.BccUnavailable as exc:
            error = str(exc)
        checked = [self._compile_alone(p, ringbuf) for p in plans]
        culprits = [c for c, p in zip(checked, plans, strict=True) if p.up and not c.up]
        if not culprits or not any(c.up for c in checked):
            return None, checked, error
        try:
            return self._compile_plans(checked, ringbuf), checked, ""
        except loader.BccUnavailable as exc:
            return None, checked, str(exc)

    def _compile_alone(self, probe: ProbePlan, ringbuf: bool) -> ProbePlan:
        if not probe.up:
            return probe
        try:
            self._compile_plans([probe], ringbuf).close()
        except loader.BccUnavailable as exc:
            return ProbePlan(probe.name, False, str(exc))
        return probe

    def _compile_plans(self, plans: list[ProbePlan], ringbuf: bool) -> loader.Program:
        pairs = [(SPECS[p.name], p) for p in plans]
        text = assemble.program_text(pairs, self._bpf_dir)
        flags = assemble.cflags(plans, ringbuf, self._bpf_dir, self._sizes, self._pin_dir)
        return loader.Program(text, flags)

    def _attach(self, program: loader.Program, probe: ProbePlan) -> ProbePlan:
        """Attach every planned hook. Optional hooks were dropped at planning when their
        tracepoint is missing; once compiled in, the code relies on them, so any attach
        failure takes the probe down."""
        if not probe.up:
            return probe
        for hook in probe.hooks:
            try:
                program.attach(hook.tracepoint, hook.function, hook.raw)
            except Exception as exc:  # bcc raises bare Exception for verifier rejections
                program.detach(h.function for h in probe.hooks)
                return ProbePlan(probe.name, False, f"{hook.function}: {loader.first_line(exc)}")
        problem = self._layout_problem(program, probe.name)
        if problem:
            program.detach(h.function for h in probe.hooks)
            return ProbePlan(probe.name, False, problem)
        return probe

    @staticmethod
    def _layout_problem(program: loader.Program, name: str) -> str:
        for map_name, (key, value) in LAYOUTS.get(name, {}).items():
            view = program.map(map_name)
            if (view.key_size, view.value_size) != (key, value):
                return f"{map_name} layout {view.key_size}/{view.value_size} != {key}/{value}"
        return ""

    def _open_buffers(self, program: loader.Program, plans: list[ProbePlan], ringbuf: bool):
        for p in plans:
            if not p.up:
                continue
            for buffer in SPECS[p.name].buffers:
                handler = self._handler(p.name, buffer.decode)
                program.open_events(buffer.map_name, handler, ringbuf, buffer.perf_pages)

    def _handler(self, probe: str, decode):
        def handle(record: bytes) -> None:
            # Runs inside poll(); an exception here would only be printed by ctypes.
            try:
                event = decode(record, self._offset_ns)
            except Exception:
                event = None
            if event is None or len(self._pending) >= MAX_PENDING_EVENTS:
                self._dropped[probe] += 1
            else:
                self._pending.append(event)

        return handle

    # --- containers ---------------------------------------------------------------------

    def track(self, cgroup_id: int) -> None:
        """Start observing the cgroup v2 `cgroup_id`; call before the workload's first exec."""
        with self._state_lock:
            self._tracked.add(cgroup_id)
            if self._program is not None:
                self._program.map("tracked").set(_CGROUP_KEY.pack(cgroup_id), _ONE)

    def untrack(self, cgroup_id: int) -> None:
        """Stop observing it and drop its counters from the kernel maps."""
        with self._state_lock:
            self._tracked.discard(cgroup_id)
            if self._program is None:
                return
            self._program.map("tracked").delete(_CGROUP_KEY.pack(cgroup_id))
            for name, module in COLLECTORS.items():
                if self._status.up(name):
                    module.purge(self._program, [cgroup_id])

    def forget_others(self) -> int:
        """Drop what the maps hold for cgroups not tracked now: after a restart with pinned
        maps, those of containers that went while no daemon ran. Returns how many."""
        with self._state_lock:
            if self._program is None:
                return 0
            present = {_CGROUP_KEY.unpack_from(key)[0] for key in self._program.map("tracked")}
            for name, module in COLLECTORS.items():
                if self._status.up(name):
                    present |= module.cgroups(self._program)
            stale = present - self._tracked
            for cgroup_id in stale:
                self._program.map("tracked").delete(_CGROUP_KEY.pack(cgroup_id))
            for name, module in COLLECTORS.items():
                if stale and self._status.up(name):
                    module.purge(self._program, stale)
            return len(stale)

    def tracked(self) -> frozenset[int]:
        return frozenset(self._tracked)

    # --- reading ------------------------------------------------------------------------

    def drain_counters(self) -> dict[int, ContainerCounters]:
        """Cumulative counters of every tracked container (zeros when nothing was counted)."""
        with self._state_lock:
            into = {
                cgroup_id: {"syscalls": {}, "syscall_errors": {}, "tcp": TcpCounters()}
                for cgroup_id in self._tracked
            }
            if self._program is not None:
                for name, module in COLLECTORS.items():
                    if self._status.up(name):
                        module.collect(self._program, into)
        return {
            cgroup_id: ContainerCounters(cgroup_id, **parts) for cgroup_id, parts in into.items()
        }

    def poll_events(self, timeout_ms: int = 0) -> list[Event]:
        """Events decoded since the last call, waiting up to timeout_ms for the first ones."""
        with self._poll_lock:
            program = self._program
            if program is None:  # nothing can arrive: wait as asked so callers do not spin
                time.sleep(max(timeout_ms, 0) / 1000)
                return []
            self._offset_ns = time.time_ns() - time.monotonic_ns()
            program.poll(timeout_ms)
            if self._status.up("oom"):
                self._flush_stale_kills(program)
            events, self._pending = self._pending, []
        # One buffer per probe: merge them into kernel time order.
        return sorted(events, key=lambda event: event.time_ns)

    def _flush_stale_kills(self, program: loader.Program) -> None:
        now = time.monotonic()
        if now - self._last_flush < 1.0:
            return
        self._last_flush = now
        stale = oom.flush_stale(
            program, time.monotonic_ns(), self._oom_stale_ns, self.tracked(), self._offset_ns
        )
        self._pending.extend(stale)

    def counted_cgroups(self) -> set[int]:
        """Cgroup ids that have entries in the kernel counter maps, tracked or not (should be
        a subset of tracked(): the kernel filters, untrack purges)."""
        found: set[int] = set()
        with self._state_lock:
            if self._program is None:
                return found
            for name, module in COLLECTORS.items():
                if self._status.up(name):
                    found |= module.cgroups(self._program)
        return found

    def lost_events(self) -> dict[str, int]:
        """{probe: records lost} (full buffers or maps in the kernel, undecodable records)."""
        lost = dict(self._dropped)
        with self._state_lock:
            if self._program is None:
                return lost
            view = self._program.map("lost_events")
            for name in self.enabled:
                value = view.get(struct.pack("=I", PROBE_IDS[name])) or b""
                per_cpu = struct.unpack(f"={len(value) // 8}Q", value)
                lost[name] += sum(per_cpu)
        return lost


def _remove_pins(pin_dir: Path) -> bool:
    """Unpin every map in pin_dir (the kernel frees them once unused); False if none was."""
    pins = [p for p in pin_dir.iterdir() if p.is_file()] if pin_dir.is_dir() else []
    for pin in pins:
        pin.unlink(missing_ok=True)
    return bool(pins)
