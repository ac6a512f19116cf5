"""What one refresh of `observe-rt top` knows, as plain immutable data.

    doc = GET /api/v1/view (export/liveview.py)    cri = CriListing (source.py, from the CRI)
    frame = build_frame(doc, cri, fetched_ns)      # pure: unit-tested from dicts
    rows = visible_rows(frame, ui)                 # filtered and sorted for the screen

One row per container name in a pod, as kubectl shows it: the newest attempt, with `restarts`
the attempt number (what the kubelet reports as restartCount). Live figures (CPU, memory,
syscalls, TCP) come from the daemon's view of running containers; exited ones keep their CRI
state, and their OOM kills come from the daemon's events.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace

SORT_KEYS = ("cpu", "mem", "syscalls", "errors", "oom", "net", "name")


@dataclass(frozen=True)
class CriContainer:
    id: str
    pod_id: str
    name: str
    attempt: int
    state: str  # CREATED | RUNNING | EXITED | UNKNOWN
    image: str = ""
    created_at_ns: int = 0


@dataclass(frozen=True)
class CriPod:
    id: str
    name: str
    namespace: str
    state: str


@dataclass(frozen=True)
class LastExit:
    """ContainerStatus of the newest exited attempt of the selected container."""

    container_id: str
    attempt: int
    reason: str
    exit_code: int
    message: str
    finished_at_ns: int


@dataclass(frozen=True)
class CriListing:
    containers: tuple[CriContainer, ...] = ()
    pods: tuple[CriPod, ...] = ()
    error: str = ""  # the CRI could not be asked (the view's own data still shows)


@dataclass(frozen=True)
class Row:
    key: str  # namespace/pod/container: stable across attempts, so a selection survives
    container_id: str
    pod_id: str
    namespace: str
    pod: str
    name: str
    state: str
    restarts: int
    attempts: tuple[str, ...] = ()  # container ids, newest first
    cpu_percent: float | None = None  # of one node (all cores)
    cpu_limit_percent: float | None = None
    memory_bytes: int | None = None
    memory_limit_percent: float | None = None
    oom_kills: int = 0
    syscalls_per_s: float | None = None
    errors_per_s: float | None = None
    top_syscall: str = ""
    tcp_connections: int | None = None
    rx_per_s: float | None = None
    tx_per_s: float | None = None
    detail: Mapping = field(default_factory=dict)  # the view's container entry (may be empty)


@dataclass(frozen=True)
class Frame:
    fetched_ns: int = 0
    error: str = ""  # why the daemon could not be read; the rest is then the last good frame
    node: Mapping = field(default_factory=dict)
    pods: Mapping[str, int] = field(default_factory=dict)
    container_states: Mapping[str, int] = field(default_factory=dict)
    probes: Mapping = field(default_factory=dict)
    uptime_s: float = 0.0
    rows: tuple[Row, ...] = ()
    events: tuple[Mapping, ...] = ()
    cri_error: str = ""
    last_exit: LastExit | None = None


@dataclass(frozen=True)
class UiState:
    sort: str = "cpu"
    filter: str = ""
    editing: bool = False  # typing a filter after "/"
    selected: str = ""  # Row.key
    detail: bool = True
    refresh_s: float = 1.0


def build_frame(doc: Mapping, cri: CriListing, fetched_ns: int) -> Frame:
    """Merge the daemon's view with the CRI's container list into rows."""
    live = {c["id"]: c for c in doc.get("containers", ())}
    pods = {p.id: p for p in cri.pods}
    cpus = max(int(doc.get("node", {}).get("cpus") or 1), 1)
    events = tuple(doc.get("events", ()))
    rows = [
        _row(group, live, pods, cpus, events) for group in _by_name(cri.containers, live).values()
    ]
    return Frame(
        fetched_ns=fetched_ns,
        node=doc.get("node", {}),
        pods=doc.get("pods", {}),
        container_states=doc.get("container_states", {}),
        probes=doc.get("probes", {}),
        uptime_s=doc.get("uptime_s", 0.0),
        rows=tuple(rows),
        events=events,
        cri_error=cri.error,
    )


def _by_name(cri: Sequence[CriContainer], live: Mapping) -> dict[tuple, list[CriContainer]]:
    """Attempts of each (pod, name), newest first; view-only containers when the CRI failed."""
    known = list(cri)
    ids = {c.id for c in known}
    for entry in live.values():
        if entry["id"] not in ids:
            attempt, state = entry.get("attempt", 0), entry.get("state", "RUNNING")
            known.append(CriContainer(entry["id"], entry["pod_id"], entry["name"], attempt, state))
    groups: dict[tuple, list[CriContainer]] = {}
    for container in known:
        groups.setdefault((container.pod_id, container.name), []).append(container)
    for attempts in groups.values():
        attempts.sort(key=lambda c: (c.attempt, c.created_at_ns), reverse=True)
    return groups


def _row(attempts, live, pods, cpus: int, events) -> Row:
    newest = attempts[0]
    pod = pods.get(newest.pod_id)
    entry = live.get(newest.id, {})
    namespace = pod.namespace if pod else entry.get("namespace", "")
    pod_name = pod.name if pod else entry.get("pod", "")
    ooms = sum(
        1
        for e in events
        if e.get("kind") == "oom" and (e.get("namespace"), e.get("pod"), e.get("name"))
        == (namespace, pod_name, newest.name)
    )  # fmt: skip
    tcp = entry.get("tcp") or None
    return Row(
        key=f"{namespace}/{pod_name}/{newest.name}",
        container_id=newest.id,
        pod_id=newest.pod_id,
        namespace=namespace,
        pod=pod_name,
        name=newest.name,
        state=newest.state,
        restarts=newest.attempt,
        attempts=tuple(c.id for c in attempts),
        cpu_percent=_percent(entry.get("cpu_cores"), cpus),
        cpu_limit_percent=_percent(entry.get("cpu_cores"), entry.get("cpu_limit_cores")),
        memory_bytes=entry.get("memory_working_set_bytes"),
        memory_limit_percent=_percent(
            entry.get("memory_working_set_bytes"), entry.get("memory_limit_bytes")
        ),
        oom_kills=max(entry.get("oom_kills") or 0, ooms),
        syscalls_per_s=entry.get("syscalls_per_s"),
        errors_per_s=entry.get("syscall_errors_per_s"),
        top_syscall=entry.get("top_syscall", ""),
        tcp_connections=(tcp["connections_active"] + tcp["connections_passive"]) if tcp else None,
        rx_per_s=entry.get("rx_bytes_per_s"),
        tx_per_s=entry.get("tx_bytes_per_s"),
        detail=entry,
    )


def _percent(value, of) -> float | None:
    if value is None or not of:
        return None
    return 100.0 * value / of


# --- what the screen shows ------------------------------------------------------------------


def _sort_key(sort: str):
    def number(value) -> float:
        return -(value or 0.0)

    keys = {
        "cpu": lambda r: (number(r.cpu_percent), r.key),
        "mem": lambda r: (number(r.memory_bytes), r.key),
        "syscalls": lambda r: (number(r.syscalls_per_s), r.key),
        "errors": lambda r: (number(r.errors_per_s), r.key),
        "oom": lambda r: (-r.oom_kills, r.key),
        "net": lambda r: (number((r.rx_per_s or 0) + (r.tx_per_s or 0)), r.key),
        "name": lambda r: (r.key,),
    }
    return keys[sort]


def visible_rows(frame: Frame, ui: UiState) -> list[Row]:
    """Rows whose namespace/pod/container or state contains the filter, in sort order."""
    wanted = ui.filter.lower()
    rows = [r for r in frame.rows if wanted in f"{r.key} {r.state}".lower()]
    return sorted(rows, key=_sort_key(ui.sort))


def selected_row(rows: Sequence[Row], ui: UiState) -> Row | None:
    return next((r for r in rows if r.key == ui.selected), rows[0] if rows else None)


def with_last_exit(frame: Frame, last_exit: LastExit | None) -> Frame:
    return replace(frame, last_exit=last_exit)


def failed(previous: Frame, error: str, fetched_ns: int) -> Frame:
    """The last good frame, marked with why this refresh failed."""
    return replace(previous, error=error, fetched_ns=fetched_ns)
