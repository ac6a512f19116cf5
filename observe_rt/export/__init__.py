"""Exporters: each reads the collector's latest Snapshot, never the kernel.

prometheus.py serves cAdvisor-compatible series and the runtime's own metrics over HTTP.
"""

from .prometheus import (
    DEFAULT_ADDRESS,
    PrometheusExporter,
    RuntimeMetrics,
    SnapshotCollector,
    parse_address,
)

__all__ = [
    "DEFAULT_ADDRESS",
    "PrometheusExporter",
    "RuntimeMetrics",
    "SnapshotCollector",
    "parse_address",
]
