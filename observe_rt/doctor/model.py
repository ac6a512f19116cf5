"""The data doctor works on: check results, active-probe outcomes, and a reader for a root tree.

Checks are decided from files under a root path (a fixture tree in unit tests, / for real)
plus the outcomes of active probes passed in as plain data, so every decision is testable
without root.
"""

from __future__ import annotations

import enum
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path


class Status(enum.Enum):
    OK = "OK"
    WARN = "WARN"
    FAIL = "FAIL"


@dataclass(frozen=True)
class Check:
    """One line of the report. `required` checks FAIL (exit 1); the others only WARN."""

    name: str
    status: Status
    required: bool
    detail: str
    fix: str = ""

    def as_json(self) -> dict:
        data = asdict(self)
        data["status"] = self.status.value
        return data


def verdict(name: str, ok: bool, required: bool, detail: str, fix: str) -> Check:
    """OK when `ok`; otherwise FAIL for what containers need, WARN for probes and extras."""
    if ok:
        return Check(name, Status.OK, required, detail)
    return Check(name, Status.FAIL if required else Status.WARN, required, detail, fix)


def exit_code(checks: list[Check]) -> int:
    """Non-zero only when something required to run containers is missing."""
    return 1 if any(c.required and c.status is Status.FAIL for c in checks) else 0


@dataclass(frozen=True)
class Outcome:
    """What an active probe saw: `ok`, and the detail (the value read or the error)."""

    ok: bool
    detail: str


@dataclass(frozen=True)
class BccOutcome:
    """The bcc probe: import, compile bpf/doctor_probe.c, attach it, see one exec."""

    imported: bool
    version: str = ""
    error: str = ""
    compile_ms: float | None = None
    attach_ms: float | None = None
    events: int | None = None


@dataclass(frozen=True)
class Probes:
    """Outcomes of the active probes; None means not probed (e.g. `--root` given)."""

    namespaces: dict[str, Outcome] | None = None
    seccomp: Outcome | None = None
    oom_score_adj: Outcome | None = None
    bpf_syscall: Outcome | None = None
    lsm: Outcome | None = None
    bcc: BccOutcome | None = None
    skipped_because: str = field(default="")


class Tree:
    """Read-only access to files under a root path standing in for /."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)

    def path(self, rel: str) -> Path:
        return self.root / rel.lstrip("/")

    def host_path(self, path: str) -> str:
        """`path` under the root (as runtime code joins it) named as on the host: /sys/..."""
        rel = os.path.relpath(path, self.root)
        return "/" if rel == "." else "/" + rel

    # Unreadable counts as absent (e.g. tracefs is root-only): never an exception.
    def exists(self, rel: str) -> bool:
        return _safely(self.path(rel).exists)

    def is_dir(self, rel: str) -> bool:
        return _safely(self.path(rel).is_dir)

    def is_executable(self, rel: str) -> bool:
        path = self.path(rel)
        return _safely(path.is_file) and os.access(path, os.X_OK)

    def readable_dir(self, rel: str) -> bool:
        """False when the directory exists but this user may not look inside it."""
        return os.access(self.path(rel), os.R_OK | os.X_OK)

    def read(self, rel: str) -> str | None:
        """The file's text, or None when it is missing or unreadable."""
        try:
            return self.path(rel).read_text(errors="replace")
        except OSError:
            return None

    def read_bytes(self, rel: str) -> bytes | None:
        try:
            return self.path(rel).read_bytes()
        except OSError:
            return None


def _safely(test) -> bool:
    try:
        return bool(test())
    except OSError:
        return False
