"""Pods: the per-pod shim, sandbox state, container logs and exit records."""
