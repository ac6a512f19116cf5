"""observe-rt: a CRI container runtime with eBPF observability built in."""

__version__ = "0.1.0"
