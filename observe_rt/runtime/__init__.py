"""The executor: runs OCI runtime bundles as namespaced, cgroup-limited containers."""
