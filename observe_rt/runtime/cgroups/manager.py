"""Apply a CgroupPlan to cgroupfs, and find, signal and remove a container's cgroups later.

Life of a container's cgroups:

    CgroupManager(plan).create()     mkdir -p in every hierarchy (remembering what it made),
                                     copy cpuset down (v1), enable controllers (v2), write
      |                              limits; any failure undoes what it made and raises
      v
    add_process(pid)                 pid -> cgroup.procs in every hierarchy, unified included
      |
    to_state() --(JSON on disk)--> CgroupManager.from_state(d)   (e.g. `observe-rt oci delete`)
      |
      v
    destroy(timeout)                 SIGKILL until empty, rmdir what create() made, leaf first;
                                     safe to call twice and after a failed create()

Only paths from the plan (or the saved state) are touched, so unit tests run it on tmp trees.
"""

from __future__ import annotations

import errno
import os
import signal
import time

from observe_rt.errors import ObserveRtError

from .plan import CgroupPlan, Write

STATE_VERSION = 1
#: Limits at or above this are "unlimited" (v1 reports PAGE_COUNTER_MAX in bytes).
UNLIMITED = 1 << 62


class CgroupError(ObserveRtError):
    """A cgroup could not be created, joined or removed; the message names file and value."""


def _write(path: str, value: str) -> None:
    """One write(2) of `value`, as cgroupfs expects (O_CREAT only matters on fixture trees)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o644)
    try:
        os.write(fd, value.encode())
    finally:
        os.close(fd)


def _read(path: str) -> str:
    with open(path) as f:
        return f.read()


def _read_or_empty(path: str) -> str:
    try:
        return _read(path).strip()
    except FileNotFoundError:
        return ""


def _read_keyed(path: str) -> dict[str, int]:
    """A flat-keyed file ("key value" per line) as a dict of ints."""
    out = {}
    for line in _read(path).splitlines():
        key, _, value = line.partition(" ")
        if value.strip().lstrip("-").isdigit():
            out[key] = int(value)
    return out


# The rmdir call, one name so unit tests can emulate cgroupfs (where a directory holding
# only interface files can be removed).
_rmdir = os.rmdir


class CgroupManager:
    """The cgroups of one container, in every hierarchy of the host."""

    def __init__(self, plan: CgroupPlan) -> None:
        self._plan: CgroupPlan | None = plan
        self.mode = plan.mode
        self.cgroup_path = plan.cgroup_path
        self._roots = dict(plan.roots)
        self._dirs = dict(plan.dirs)
        self._created: list[str] = []

    # -- state -------------------------------------------------------------------------------

    def to_state(self) -> dict:
        """JSON-serialisable state; from_state() in another process can destroy() with it."""
        return {
            "version": STATE_VERSION,
            "mode": self.mode,
            "cgroup_path": self.cgroup_path,
            "roots": dict(self._roots),
            "dirs": dict(self._dirs),
            "created": list(self._created),
        }

    @classmethod
    def from_state(cls, state: dict) -> CgroupManager:
        if not isinstance(state, dict) or state.get("version") != STATE_VERSION:
            raise ValueError(f"cgroup state: unknown version in {state!r}")
        try:
            plan = CgroupPlan(
                mode=state["mode"],
                cgroup_path=state["cgroup_path"],
                roots=dict(state["roots"]),
                dirs=dict(state["dirs"]),
            )
            created = [str(d) for d in state["created"]]
        except (KeyError, TypeError) as err:
            raise ValueError(f"cgroup state: missing or malformed field {err}") from err
        mgr = cls(plan)
        mgr._plan = None  # restored managers may not create() again
        mgr._created = created
        return mgr

    def paths(self) -> dict[str, str]:
        """Hierarchy name ("memory", "cpu", "name=systemd", "unified") -> directory."""
        return dict(self._dirs)

    def _distinct(self) -> list[tuple[str, str]]:
        """(mount root, directory) once per directory: co-mounted controllers share one."""
        seen: dict[str, str] = {}
        for hierarchy, directory in self._dirs.items():
            seen.setdefault(directory, self._roots[hierarchy])
        return [(root, directory) for directory, root in seen.items()]

    # -- create ------------------------------------------------------------------------------

    def create(self) -> None:
        """Make the directories and apply the plan; on failure undo and raise CgroupError."""
        if self._plan is None:
            raise CgroupError(f"cgroup {self.cgroup_path}: restored from state, cannot create")
        plan = self._plan
        try:
            for root, directory in self._distinct():
                self._make_dirs(root, directory)
            if plan.cpuset_inherit:
                self._inherit_cpuset(self._roots["cpuset"], self._dirs["cpuset"])
            for write in plan.enable + plan.writes:
                if not write.after_init:
                    self._apply(write)
        except BaseException:
            self._remove_created(time.monotonic() + 1.0, quiet=True)
            raise

    def apply_after_init(self) -> None:
        """The writes create() left for when the container's init has built its rootfs, and
        the device filter of the v2 cgroup (it would refuse the mknods of /dev too)."""
        for write in self._plan.writes if self._plan else ():
            if write.after_init:
                self._apply(write)
        if self._plan and self._plan.device_rules:
            from observe_rt.runtime.cgroups import devices_bpf

            try:
                devices_bpf.apply(self._dirs["unified"], list(self._plan.device_rules))
            except OSError as err:
                raise CgroupError(f"cgroup: cannot install the device filter: {err}") from err

    def apply_writes(self) -> None:
        """Write the plan's limits to existing directories (a resource update).

        When memory and swap move together, v1 wants the larger value written last; a failed
        write is retried once after the others (containerd's order problem, solved by retry).
        """
        if self._plan is None:
            raise CgroupError(f"cgroup {self.cgroup_path}: restored from state, no plan to apply")
        failed = []
        for write in self._plan.writes:
            try:
                self._apply(write)
            except CgroupError:
                failed.append(write)
        for write in failed:
            self._apply(write)

    def _make_dirs(self, root: str, leaf: str) -> None:
        parts = os.path.relpath(leaf, root).split(os.sep)
        for attempt in range(3):
            try:
                self._make_levels(root, leaf, parts)
                return
            except FileNotFoundError as err:  # a shared parent removed under us: retry
                if attempt == 2:
                    raise CgroupError(f"cgroup: cannot create {leaf}: {err.strerror}") from err

    def _make_levels(self, root: str, leaf: str, parts: list[str]) -> None:
        current = root
        for part in parts:
            current = os.path.join(current, part)
            try:
                os.mkdir(current, 0o755)
            except FileExistsError:
                if current == leaf:
                    raise CgroupError(
                        f"cgroup {leaf} already exists (another container, or a leftover)"
                    ) from None
                continue
            except OSError as err:
                if err.errno == errno.ENOENT:
                    raise
                raise CgroupError(f"cgroup: cannot create {current}: {err.strerror}") from err
            self._created.append(current)

    def _inherit_cpuset(self, root: str, leaf: str) -> None:
        """v1 cpuset: a new cgroup starts with empty cpus/mems; copy the parent's down."""
        parent = root
        for part in os.path.relpath(leaf, root).split(os.sep):
            current = os.path.join(parent, part)
            for name in ("cpuset.cpus", "cpuset.mems"):
                mine = _read_or_empty(os.path.join(current, name))
                theirs = _read_or_empty(os.path.join(parent, name))
                if not mine and theirs:
                    self._apply(Write("cpuset", os.path.join(current, name), theirs, "cpuset"))
            parent = current

    def _apply(self, write: Write) -> None:
        if write.optional and not os.path.exists(write.path):
            return
        try:
            _write(write.path, write.value)
        except OSError as err:
            hint = ""
            if not os.path.exists(write.path):
                hint = " (no such file: controller not enabled or not supported here)"
            raise CgroupError(
                f"cgroup: cannot write {write.value!r} to {write.path} for {write.field}: "
                f"{err.strerror}{hint}"
            ) from err

    # -- processes ---------------------------------------------------------------------------

    def add_process(self, pid: int) -> None:
        """Move `pid` (with its threads) into the container's cgroup in every hierarchy."""
        for _root, directory in self._distinct():
            path = os.path.join(directory, "cgroup.procs")
            for attempt in range(5):
                try:
                    _write(path, str(pid))
                    break
                except OSError as err:
                    # EINVAL: the task may still be TASK_NEW (just forked); runc retries too.
                    if err.errno == errno.EINVAL and attempt < 4:
                        time.sleep(0.03)
                        continue
                    raise CgroupError(
                        f"cgroup: cannot write pid {pid} to {path}: {err.strerror}"
                    ) from err

    def cgroup_id(self) -> int:
        """The cgroup v2 id (inode of the unified directory) BPF sees; 0 on pure v1."""
        unified = self._dirs.get("unified")
        return os.stat(unified).st_ino if unified else 0

    def pids(self) -> list[int]:
        """Processes in the container's cgroups (and their sub-cgroups), all hierarchies."""
        found: set[int] = set()
        for _root, directory in self._distinct():
            for current, _subdirs, _files in os.walk(directory):
                try:
                    text = _read(os.path.join(current, "cgroup.procs"))
                except OSError:
                    continue
                found.update(int(p) for p in text.split() if p.isdigit())
        return sorted(found)

    def kill_all(self, sig: int = signal.SIGKILL) -> None:
        """Send `sig` to every process; SIGKILL goes through cgroup.kill where there is one."""
        unified = self._dirs.get("unified")
        if sig == signal.SIGKILL and unified:
            kill_file = os.path.join(unified, "cgroup.kill")
            if os.path.exists(kill_file):
                try:
                    _write(kill_file, "1")
                except OSError:
                    pass  # fall back to signalling each pid below
        for pid in self.pids():
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                pass

    # -- destroy -----------------------------------------------------------------------------

    def destroy(self, timeout: float = 5.0) -> None:
        """Kill what is left, wait until it is gone, remove the directories create() made."""
        deadline = time.monotonic() + timeout
        while pids := self.pids():
            if time.monotonic() > deadline:
                raise CgroupError(
                    f"cgroup {self.cgroup_path}: processes {pids} still running after {timeout}s"
                )
            self.kill_all(signal.SIGKILL)
            time.sleep(0.01)
        self._remove_created(deadline)

    def _remove_created(self, deadline: float, quiet: bool = False) -> None:
        # Only directories we made: a leaf that already existed is someone else's.
        leaves = {d for _root, d in self._distinct()} & set(self._created)
        failures = []
        for directory in sorted(leaves):
            failures += self._remove_subtree(directory, deadline)
        for directory in reversed(list(self._created)):
            err = self._rmdir_retry(directory, deadline if directory in leaves else 0.0)
            if err is None:
                self._created.remove(directory)
            elif directory in leaves:
                failures.append(f"{directory}: {err.strerror}")
            # a shared parent still in use by another container is left in place
        if failures and not quiet:
            raise CgroupError(f"cgroup {self.cgroup_path}: cannot remove " + "; ".join(failures))

    def _remove_subtree(self, directory: str, deadline: float) -> list[str]:
        """rmdir cgroups the container made below its own directory, deepest first."""
        failures = []
        for current, subdirs, _files in os.walk(directory, topdown=False):
            for sub in subdirs:
                err = self._rmdir_retry(os.path.join(current, sub), deadline)
                if err is not None:
                    failures.append(f"{os.path.join(current, sub)}: {err.strerror}")
        return failures

    @staticmethod
    def _rmdir_retry(path: str, deadline: float) -> OSError | None:
        """rmdir, retrying EBUSY (exiting tasks) until `deadline`; None on success or gone."""
        while True:
            try:
                _rmdir(path)
                return None
            except FileNotFoundError:
                return None
            except OSError as err:
                if err.errno != errno.EBUSY or time.monotonic() > deadline:
                    return err
                time.sleep(0.01)

    # -- readers -----------------------------------------------------------------------------

    def _file(self, v1_hierarchy: str, name: str) -> str:
        hierarchy = "unified" if self.mode == "v2" else v1_hierarchy
        if hierarchy not in self._dirs:
            raise CgroupError(f"cgroup {self.cgroup_path}: no {hierarchy} hierarchy on this host")
        return os.path.join(self._dirs[hierarchy], name)

    def oom_kill_count(self) -> int:
        """Processes the kernel OOM-killed in this cgroup (v2 memory.events, v1 oom_control)."""
        name = "memory.events" if self.mode == "v2" else "memory.oom_control"
        return _read_keyed(self._file("memory", name)).get("oom_kill", 0)

    def cpu_stat(self) -> dict[str, int]:
        """cpu.stat as ints. v2: usage_usec, nr_periods, nr_throttled, throttled_usec, ...
        v1: nr_periods, nr_throttled, throttled_time (ns), plus usage_usec from cpuacct.usage
        when the cpuacct hierarchy is mounted."""
        stat = _read_keyed(self._file("cpu", "cpu.stat"))
        if self.mode != "v2" and "cpuacct" in self._dirs:
            usage_ns = int(_read(os.path.join(self._dirs["cpuacct"], "cpuacct.usage")))
            stat["usage_usec"] = usage_ns // 1000
        return stat

    def memory_limit(self) -> int | None:
        """The memory limit in bytes, or None when unlimited."""
        name = "memory.max" if self.mode == "v2" else "memory.limit_in_bytes"
        text = _read(self._file("memory", name)).strip()
        if text == "max" or int(text) >= UNLIMITED:
            return None
        return int(text)
