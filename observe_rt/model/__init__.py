"""The runtime's model of what runs: identity, per-container metrics, immutable snapshots.

snapshot.py holds the data classes; series.py names them as cAdvisor does, once, for both the
Prometheus endpoint and CRI ListPodSandboxMetrics.
"""

from .snapshot import (
    CgroupStats,
    ContainerInfo,
    ContainerMetrics,
    CpuStats,
    FsStats,
    Inventory,
    Limits,
    MemoryStats,
    NetworkStats,
    PodInfo,
    PodMetrics,
    ProcessStats,
    Psi,
    PsiData,
    Snapshot,
)

__all__ = [
    "CgroupStats",
    "ContainerInfo",
    "ContainerMetrics",
    "CpuStats",
    "FsStats",
    "Inventory",
    "Limits",
    "MemoryStats",
    "NetworkStats",
    "PodInfo",
    "PodMetrics",
    "ProcessStats",
    "Psi",
    "PsiData",
    "Snapshot",
]
