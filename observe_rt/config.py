"""The daemon's configuration: documented defaults, a TOML file, then command-line flags.

# /etc/observe-rt/config.toml (every key optional)
socket = "/run/observe-rt/observe-rt.sock"
socket_mode = "0660"
state_dir = "/var/lib/observe-rt"      # survives reboots: images, pod and container records
run_dir = "/run/observe-rt"            # tmpfs: shims, netns files, rootfs mounts, OCI state
cni_conf_dir = "/etc/cni/net.d"
cni_bin_dirs = ["/opt/cni/bin", "/usr/lib/cni"]
cni_timeout = 60.0                     # seconds one CNI plugin run may take before it is killed
registry_hosts_dir = "/etc/observe-rt/certs.d"
policy = "/etc/observe-rt/policy.json"
cgroup_parent = "/observe-rt"          # pods without a CRI cgroup_parent go below this
log_level = "info"
probes = true                          # eBPF probes (bcc); false: off, the runtime runs the same
bpf_pin_dir = "/sys/fs/bpf/observe-rt" # probe counters pinned here resume after a restart ("": off)
# OpenTelemetry traces (README "Traces"; observe_rt/trace/settings.py): off unless an endpoint
# is set here or in OTEL_EXPORTER_OTLP_(TRACES_)ENDPOINT. A key set here wins over OTEL_*.
tracing_endpoint = ""                  # e.g. "localhost:4317" (no scheme: plain text)
tracing_protocol = ""                  # grpc (the default) | http (OTLP/HTTP protobuf)
tracing_sampling_ratio = 1.0           # unset: OTEL_TRACES_SAMPLER; parent-based either way

[runtime_handlers]                     # CRI runtime_handler -> OCI runtime binary
runc = "/usr/sbin/runc"                # "" (the default handler) is the built-in executor
"""

from __future__ import annotations

import dataclasses
import os
import tomllib
from dataclasses import dataclass, field

from observe_rt.daemon import DEFAULT_CONFIG_FILE
from observe_rt.errors import InvalidArgument


@dataclass(frozen=True)
class DaemonConfig:
    socket: str = "/run/observe-rt/observe-rt.sock"
    socket_mode: int = 0o660
    state_dir: str = "/var/lib/observe-rt"
    run_dir: str = "/run/observe-rt"
    cni_conf_dir: str = "/etc/cni/net.d"
    cni_bin_dirs: tuple[str, ...] = ("/opt/cni/bin", "/usr/lib/cni")
    cni_timeout: float = 60.0
    registry_hosts_dir: str = "/etc/observe-rt/certs.d"
    policy: str = "/etc/observe-rt/policy.json"
    cgroup_parent: str = "/observe-rt"
    log_level: str = "info"
    stream_address: str = "127.0.0.1:0"
    metrics_address: str = "127.0.0.1:9464"
    stats_interval: float = 1.0
    probes: bool = True
    bpf_pin_dir: str = "/sys/fs/bpf/observe-rt"
    tracing_endpoint: str = ""
    tracing_protocol: str = ""
    tracing_sampling_ratio: float | None = None
    runtime_handlers: dict[str, str] = field(default_factory=dict)

    @property
    def images_dir(self) -> str:
        return os.path.join(self.state_dir, "images")

    @property
    def oci_root(self) -> str:
        return os.path.join(self.run_dir, "oci")

    def with_overrides(self, **overrides) -> DaemonConfig:
        return dataclasses.replace(self, **{k: v for k, v in overrides.items() if v is not None})


def load(path: str | None = None, **overrides) -> DaemonConfig:
    """Defaults, then the TOML file (when present, or when named explicitly), then overrides."""
    values: dict = {}
    file = path or DEFAULT_CONFIG_FILE
    if path or os.path.exists(file):
        try:
            with open(file, "rb") as f:
                values = tomllib.load(f)
        except (OSError, tomllib.TOMLDecodeError) as err:
            raise InvalidArgument(f"config {file}: {err}") from None
    known = {f.name for f in dataclasses.fields(DaemonConfig)}
    unknown = set(values) - known
    if unknown:
        raise InvalidArgument(f"config {file}: unknown keys {', '.join(sorted(unknown))}")
    if "socket_mode" in values:
        values["socket_mode"] = int(str(values["socket_mode"]), 8)
    if "cni_bin_dirs" in values:
        values["cni_bin_dirs"] = tuple(values["cni_bin_dirs"])
    return DaemonConfig(**values).with_overrides(**overrides)
