"""The collector: samples cgroups, network namespaces and writable layers into Snapshots.

collector = Collector(sources, interval=1.0)   # sources() -> model.Inventory
collector.start(); snap = collector.snapshot(); collector.stop()
"""

from .cgroup_reader import CgroupGone, read_cgroup
from .collector import Collector, OomLedger
from .layer_usage import LayerUsage, disk_usage

__all__ = ["CgroupGone", "Collector", "LayerUsage", "OomLedger", "disk_usage", "read_cgroup"]
