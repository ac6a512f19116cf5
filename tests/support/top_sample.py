"""A fixed /api/v1/view document and CRI listing, as the demo's pods produce them, for the
`observe-rt top` unit tests (model, keys, render)."""

from __future__ import annotations

from observe_rt.top.model import CriContainer, CriListing, CriPod, build_frame

NOW_NS = 1_800_000_000_000_000_000
SECOND = 1_000_000_000


def container(cid: str, pod_id: str, pod: str, name: str, **fields) -> dict:
    entry = {
        "id": cid, "pod_id": pod_id, "pod": pod, "namespace": "demo", "name": name,
        "attempt": 0, "state": "RUNNING", "image": "observe-rt.local/demo:1", "cgroup_id": 1,
        "cpu_cores": 0.0, "cpu_limit_cores": None, "memory_working_set_bytes": 1 << 20,
        "memory_limit_bytes": None, "processes": 1, "oom_kills": 0, "syscalls_per_s": 0.0,
        "syscall_errors_per_s": 0.0, "top_syscall": "read", "rx_bytes_per_s": 0.0,
        "tx_bytes_per_s": 0.0, "syscalls": [], "flows": [], "execs": [], "ooms": [],
        "tcp": {"connections_active": 0, "connections_passive": 0, "bytes_sent": 0,
                "bytes_received": 0, "retransmits": 0, "resets": 0},
    }  # fmt: skip
    entry.update(fields)
    return entry


def sample_doc() -> dict:
    flow = {"time_ns": NOW_NS - 2 * SECOND, "direction": "active", "local": "10.9.0.4:41000",
            "peer": "10.9.0.3:8080", "bytes_sent": 83, "bytes_received": 262_335,
            "duration_ns": 4_000_000, "retransmits": 0}  # fmt: skip
    syscalls = [
        {"name": "read", "calls": 5000, "per_s": 120.0, "errors": 0, "errnos": {},
         "mean_ns": 1500.0, "p99_ns": 8192.0},
        {"name": "openat", "calls": 60, "per_s": 2.0, "errors": 30, "errnos": {"ENOENT": 30},
         "mean_ns": 4000.0, "p99_ns": 16384.0},
    ]  # fmt: skip
    tcp = {"connections_active": 12, "connections_passive": 0, "bytes_sent": 996,
           "bytes_received": 3_148_020, "retransmits": 0, "resets": 0}  # fmt: skip
    return {
        "version": 1, "seq": 40, "timestamp_ns": NOW_NS, "uptime_s": 125.0,
        "node": {"cpus": 2, "cpu_percent": 61.5, "memory_total_bytes": 8 << 30,
                 "memory_used_bytes": 2 << 30},
        "pods": {"READY": 3}, "container_states": {"RUNNING": 4, "EXITED": 1},
        "probes": {"available": True, "reason": "", "events_lost": 0,
                   "up": {"oom": True, "process": True, "syscalls": True, "tcp": True}},
        "containers": [
            container("burner0", "shop", "shop", "cpu-burner", cpu_cores=0.5,
                      cpu_limit_cores=0.5, top_syscall="rt_sigaction"),
            container("hog1", "shop", "shop", "memory-hog", attempt=1, cpu_cores=0.1,
                      memory_working_set_bytes=40 << 20, memory_limit_bytes=48 << 20,
                      oom_kills=0, syscalls_per_s=9000.0),
            container("client0", "client", "tcp-client", "client", cpu_cores=0.01,
                      syscalls_per_s=110.0, syscall_errors_per_s=6.0, syscalls=syscalls,
                      flows=[flow], tcp=tcp, rx_bytes_per_s=262_000.0, tx_bytes_per_s=1_500.0,
                      execs=[{"time_ns": NOW_NS - SECOND, "pid": 77, "comm": "wget",
                              "filename": "/bin/wget"}]),
            container("server0", "server", "tcp-server", "server", cpu_cores=0.002),
        ],
        "events": [
            {"time_ns": NOW_NS - 20 * SECOND, "kind": "oom", "container_id": "hog0",
             "namespace": "demo", "pod": "shop", "name": "memory-hog",
             "text": "OOM killer stopped pid 4242 (sh), rss 49 MiB"},
            {"time_ns": NOW_NS - 19 * SECOND, "kind": "exit", "container_id": "hog0",
             "namespace": "demo", "pod": "shop", "name": "memory-hog",
             "text": "exited: OOMKilled, code 137"},
            {"time_ns": NOW_NS - 16 * SECOND, "kind": "restart", "container_id": "hog1",
             "namespace": "demo", "pod": "shop", "name": "memory-hog",
             "text": "restarted (attempt 1)"},
        ],
    }  # fmt: skip


def sample_listing() -> CriListing:
    return CriListing(
        containers=(
            CriContainer("burner0", "shop", "cpu-burner", 0, "RUNNING"),
            CriContainer("hog0", "shop", "memory-hog", 0, "EXITED"),
            CriContainer("hog1", "shop", "memory-hog", 1, "RUNNING"),
            CriContainer("client0", "client", "client", 0, "RUNNING"),
            CriContainer("server0", "server", "server", 0, "RUNNING"),
        ),
        pods=(
            CriPod("shop", "shop", "demo", "READY"),
            CriPod("client", "tcp-client", "demo", "READY"),
            CriPod("server", "tcp-server", "demo", "READY"),
        ),
    )


def sample_frame():
    return build_frame(sample_doc(), sample_listing(), NOW_NS)
