"""Decisions about the eBPF probes: BPF syscall, BTF, tracefs, each tracepoint, kprobes, bcc
and the kernel headers it compiles against.

None of these is required: without them containers run and only observability is off, so
every check here is WARN at worst. Files come from a Tree, probe outcomes are arguments.
"""

from __future__ import annotations

from observe_rt.doctor.model import BccOutcome, Check, Outcome, Status, Tree, verdict
from observe_rt.host.kernel_headers import KernelHeaders, debian_arch


def _probe_tracepoints() -> tuple[str, ...]:
    """Every tracepoint a probe in bpf/ attaches to, from the probes' own specs."""
    from observe_rt.probes import oom, process, syscalls, tcp

    names = [tp for spec in (syscalls.SPEC, oom.SPEC, tcp.SPEC, process.SPEC)
             for tp in spec.tracepoints]  # fmt: skip
    return tuple(dict.fromkeys(names))


TRACEPOINTS = _probe_tracepoints()
TRACEFS_DIRS = ("sys/kernel/tracing", "sys/kernel/debug/tracing")
BCC_FIX = "apt-get install python3-bpfcc; run deploy/setup.sh"
TRACEFS_FIX = "mount -t tracefs tracefs /sys/kernel/tracing"


def check_bpf_syscall(tree: Tree, probed: Outcome | None) -> Check:
    # The sysctl exists exactly when the kernel has CONFIG_BPF_SYSCALL.
    has_sysctl = tree.exists("proc/sys/kernel/unprivileged_bpf_disabled")
    if probed is None:
        return verdict(
            "bpf syscall",
            has_sysctl,
            False,
            "kernel.unprivileged_bpf_disabled present (bpf() not probed)"
            if has_sysctl
            else "no kernel.unprivileged_bpf_disabled sysctl",
            "boot a kernel with CONFIG_BPF_SYSCALL=y",
        )
    detail = "bpf(BPF_MAP_CREATE) works" if probed.ok else f"bpf() failed: {probed.detail}"
    return verdict(
        "bpf syscall",
        probed.ok,
        False,
        detail,
        "run as root with CAP_BPF/CAP_SYS_ADMIN on a CONFIG_BPF_SYSCALL=y kernel",
    )


def check_btf(tree: Tree) -> Check:
    present = tree.exists("sys/kernel/btf/vmlinux")
    return verdict(
        "btf",
        present,
        False,
        "/sys/kernel/btf/vmlinux present" if present else "no /sys/kernel/btf/vmlinux",
        "boot a kernel with CONFIG_DEBUG_INFO_BTF=y (probes still work without)",
    )


def tracefs_dir(tree: Tree) -> str | None:
    """The mounted tracefs directory (one with events/), if any."""
    return next((d for d in TRACEFS_DIRS if tree.is_dir(f"{d}/events")), None)


def check_tracepoints(tree: Tree) -> list[Check]:
    tracefs = tracefs_dir(tree)
    if tracefs is None:
        unreadable = tree.exists(TRACEFS_DIRS[0]) and not tree.readable_dir(TRACEFS_DIRS[0])
        why, fix = (
            ("/sys/kernel/tracing not readable", "run observe-rt doctor as root")
            if unreadable
            else ("tracefs not mounted", TRACEFS_FIX)
        )
        unknown = [verdict(f"tracepoint {tp}", False, False, f"unknown: {why}", fix)
                   for tp in TRACEPOINTS]  # fmt: skip
        return [verdict("tracefs", False, False, why, fix), *unknown]
    checks = [verdict("tracefs", True, False, f"/{tracefs}", "")]
    for tracepoint in TRACEPOINTS:
        category, event = tracepoint.split(":")
        present = tree.exists(f"{tracefs}/events/{category}/{event}/id")
        detail = "present" if present else "not in this kernel"
        fix = "boot a kernel with this tracepoint; its probe stays off"
        checks.append(verdict(f"tracepoint {tracepoint}", present, False, detail, fix))
    return checks


def check_kprobes(tree: Tree) -> Check:
    # bcc attaches kprobes through the kprobe PMU or tracefs kprobe_events.
    present = tree.exists("sys/bus/event_source/devices/kprobe") or any(
        tree.exists(f"{d}/kprobe_events") for d in TRACEFS_DIRS
    )
    return verdict(
        "kprobes",
        present,
        False,
        "kprobe PMU present" if present else "kernel built without CONFIG_KPROBES",
        "none needed: observe-rt probes use tracepoints only",
    )


def check_bcc(
    probed: BccOutcome | None, skipped_because: str = "", bpf_refused: bool = False
) -> list[Check]:
    """bcc import, then compile+attach; `bpf_refused` (bpf() said EPERM) changes the fix."""
    if probed is None:
        why = f"not probed ({skipped_because})" if skipped_because else "not probed"
        return [
            Check("bcc", Status.WARN, False, why, "run doctor without --root to probe"),
            Check(
                "bcc compile+attach", Status.WARN, False, why, "run doctor without --root to probe"
            ),
        ]
    if not probed.imported:
        return [
            Check("bcc", Status.WARN, False, f"cannot import bcc: {probed.error}", BCC_FIX),
            Check("bcc compile+attach", Status.WARN, False, "skipped: bcc not importable", BCC_FIX),
        ]
    return [
        Check("bcc", Status.OK, False, f"bcc {probed.version or '?'} importable"),
        _bcc_compile_attach(probed, bpf_refused),
    ]


def _bcc_compile_attach(probed: BccOutcome, bpf_refused: bool) -> Check:
    name = "bcc compile+attach"
    # bcc reports a refused map creation as a compile failure: point at the real cause.
    compile_fix = (
        "run as root (bpf() is refused)"
        if bpf_refused
        else "run deploy/setup.sh (links kernel headers for bcc)"
    )
    if probed.compile_ms is None:
        return Check(name, Status.WARN, False, f"compile failed: {probed.error}", compile_fix)
    if probed.attach_ms is None:
        return Check(
            name,
            Status.WARN,
            False,
            f"compiled in {probed.compile_ms:.0f} ms; attach failed: {probed.error}",
            f"{TRACEFS_FIX}; run as root",
        )
    total_ms = probed.compile_ms + probed.attach_ms
    timing = (
        f"{total_ms:.0f} ms: compiled bpf/doctor_probe.c in {probed.compile_ms:.0f} ms, "
        f"attached to sched:sched_process_exec in {probed.attach_ms:.1f} ms"
    )
    if not probed.events:
        return Check(
            name,
            Status.WARN,
            False,
            f"{timing}; saw no exec event",
            "check that tracepoint programs can run (lockdown, LSM policy)",
        )
    return Check(name, Status.OK, False, f"{timing}; saw {probed.events} exec(s)")


def check_kernel_headers(headers: KernelHeaders, machine: str) -> Check:
    name = "kernel headers"
    if headers.in_use and headers.exact:
        return Check(name, Status.OK, False, headers.reason)
    if headers.in_use:
        # The designed workaround: fine because probes read only tracepoint arguments.
        return Check(
            name,
            Status.WARN,
            False,
            headers.reason,
            f"fine for tracepoint probes; install linux-headers-"
            f"{headers.kernel_release} for an exact match",
        )
    if headers.path is not None:
        return Check(
            name,
            Status.WARN,
            False,
            headers.reason,
            "run deploy/setup.sh (the daemon also links them at start)",
        )
    return Check(
        name,
        Status.WARN,
        False,
        headers.reason,
        f"apt-get install linux-headers-{debian_arch(machine)}; run deploy/setup.sh",
    )
