"""Assemble every check in report order, and render them as a rich table or JSON."""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path

from rich.console import Console
from rich.table import Table

from observe_rt.doctor import checks_host, checks_probes
from observe_rt.doctor.model import Check, Probes, Status, Tree, exit_code
from observe_rt.host.kernel_headers import find_kernel_headers

STYLES = {Status.OK: "green", Status.WARN: "yellow", Status.FAIL: "bold red"}


def collect(
    root: Path, probes: Probes, machine: str, env: Mapping[str, str] | None = None
) -> list[Check]:
    """All checks, decided from files under `root` and the given probe outcomes."""
    tree = Tree(root)
    release = checks_host.kernel_release(tree)
    headers = find_kernel_headers(tree.root, release, machine, env)
    bpf_refused = probes.bpf_syscall is not None and not probes.bpf_syscall.ok
    return [
        checks_host.check_kernel(tree),
        *checks_host.check_cgroups(tree),
        checks_host.check_overlayfs(tree),
        *checks_host.check_namespaces(tree, probes.namespaces),
        checks_host.check_seccomp(tree, probes.seccomp),
        checks_probes.check_bpf_syscall(tree, probes.bpf_syscall),
        checks_probes.check_btf(tree),
        *checks_probes.check_tracepoints(tree),
        checks_probes.check_kprobes(tree),
        *checks_probes.check_bcc(probes.bcc, probes.skipped_because, bpf_refused),
        checks_probes.check_kernel_headers(headers, machine),
        checks_host.check_cni(tree),
        checks_host.check_oom_score_adj(probes.oom_score_adj),
        checks_host.check_ip_forward(tree),
        checks_host.check_lsm(tree, probes.lsm),
    ]


def to_json(checks: list[Check]) -> str:
    return json.dumps([c.as_json() for c in checks], indent=2)


def summary(checks: list[Check]) -> str:
    counts = {s: sum(c.status is s for c in checks) for s in Status}
    probes_ok = all(
        c.status is Status.OK
        for c in checks
        if c.name in ("bpf syscall", "bcc compile+attach") or c.name.startswith("tracepoint ")
    )
    containers = "cannot run containers" if exit_code(checks) else "containers can run"
    probes = "eBPF probes usable" if probes_ok else "some eBPF probes off"
    if probes_ok and any(c.name == "kprobes" and c.status is not Status.OK for c in checks):
        probes += " (tracepoints only, no kprobes)"
    return (
        f"{counts[Status.OK]} OK, {counts[Status.WARN]} WARN, {counts[Status.FAIL]} FAIL: "
        f"{containers}; {probes}"
    )


def render_table(checks: list[Check], console: Console) -> None:
    table = Table(title="observe-rt doctor", title_justify="left")
    table.add_column("check", no_wrap=True)
    table.add_column("status", no_wrap=True)
    table.add_column("detail", overflow="fold")
    table.add_column("fix", overflow="fold")
    for check in checks:
        status = f"[{STYLES[check.status]}]{check.status.value}[/]"
        table.add_row(check.name, status, check.detail, check.fix)
    console.print(table)
    console.print(summary(checks))
