"""`bench oci`: the container lifecycle of /bin/true under several runtimes on one bundle.

Runtimes are interleaved round-robin, one lifecycle each per iteration, and the order is
rotated every iteration, so machine noise (and any cost one runtime's teardown leaves for the
next) lands on all of them alike. Each container gets a fresh id, bundle directory and cgroup
(<parent>/<id>, under one random parent), as a kubelet would ask for, and every runtime has a
private state root; all of it lives under one temp dir and one cgroup parent that `close`
removes even after a failure or Ctrl-C.
"""

from __future__ import annotations

import os
import re
import secrets
import shutil
import signal
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from observe_rt.bench import bundle as bundles
from observe_rt.bench.common import Session, round_robin, signals_ignored
from observe_rt.bench.runtimes import (
    LifecycleError,
    RuntimeCli,
    find_runtime,
    force_delete,
    lifecycle,
    reap_orphans,
)
from observe_rt.host import libc

WORKLOAD = ("/bin/true",)


@dataclass
class RuntimeRun:
    """One runtime's outcome: samples (ms per step) or the reason it could not be measured."""

    name: str
    slug: str  # the name made safe for container ids and directory names
    cli: RuntimeCli | None = None
    samples: list[dict[str, float]] = field(default_factory=list)
    reason: str | None = None

    @property
    def active(self) -> bool:
        return self.cli is not None and self.reason is None


def slugs(names: list[str]) -> list[str]:
    """Distinct id-safe short names: "/opt/bin/runc" -> "runc", a second "runc" -> "runc-2"."""
    result: list[str] = []
    for name in names:
        base = re.sub(r"[^A-Za-z0-9_.-]", "_", os.path.basename(name.rstrip("/"))) or "runtime"
        slug, n = base, 1
        while slug in result:
            n += 1
            slug = f"{base}-{n}"
        result.append(slug)
    return result


class OciBench(Session):
    """A benchmark session; use as a context manager so clean-up always runs."""

    def __init__(self, runtimes: list[str], workload: tuple[str, ...] = WORKLOAD) -> None:
        self.workload = list(workload)
        self.tmp = Path(tempfile.mkdtemp(prefix="observe-rt-bench-"))
        self.cgroup_parent = f"/observe-rt-bench-{secrets.token_hex(4)}"
        self.live: set[tuple[RuntimeCli, str]] = set()  # created, not yet deleted
        self.runs = [
            RuntimeRun(name, slug) for name, slug in zip(runtimes, slugs(runtimes), strict=True)
        ]
        try:
            self.rootfs = bundles.make_busybox_rootfs(self.tmp / "rootfs")
            for run in self.runs:
                found = find_runtime(run.name, self.tmp / "state" / run.slug)
                if isinstance(found, str):
                    run.reason = found
                else:
                    run.cli = found
        except BaseException:
            self.close()
            raise

    def measure(self, runs: int, warmup: int, progress: Callable[[], None] | None = None):
        """Warm up, then measure; a runtime that fails is dropped with its reason."""
        # Every runtime's create exits before its workload; as subreaper we inherit and reap it.
        libc.prctl(libc.PR_SET_CHILD_SUBREAPER, 1)
        return round_robin(self.runs, runs, warmup, self._one, progress)

    def _one(self, run: RuntimeRun, iteration: int, label: str) -> dict[str, float] | None:
        """One lifecycle in a fresh bundle and cgroup; on failure record why and clean up."""
        assert run.cli is not None
        container_id = f"{run.slug}-{iteration}"
        bundle = bundles.write_bench_bundle(
            self.tmp / "bundles" / container_id, self.rootfs, self.workload,
            f"{self.cgroup_parent}/{container_id}",
        )  # fmt: skip
        self.live.add((run.cli, container_id))
        steps = None
        try:
            steps = lifecycle(run.cli, container_id, bundle)
        except LifecycleError as err:
            run.reason = f"{label}: {err}"
            force_delete(run.cli, container_id)
        finally:
            reap_orphans()
        self.live.discard((run.cli, container_id))
        shutil.rmtree(bundle, ignore_errors=True)
        return steps

    def close(self) -> None:
        """Delete leftover containers, the cgroup parent and the temp dir; Ctrl-C can't stop it."""
        with signals_ignored(signal.SIGINT):  # a second Ctrl-C can't cut it short
            for cli, container_id in sorted(self.live, key=lambda live: live[1]):
                force_delete(cli, container_id)
            self.live.clear()
            reap_orphans()
            bundles.remove_cgroup_tree(self.cgroup_parent)
            shutil.rmtree(self.tmp, ignore_errors=True)
