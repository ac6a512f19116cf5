"""Plain-data setup for `bench cri`: CNI conflists, daemon configs, hosts.toml, names.

Pure functions (no processes, no root), so they are unit-tested as text. cri_runtimes.py writes
them into the session's temp dir and starts the daemons on them.

Each runtime gets its own CNI network: a bridge with a unique name, a private /24 from
host-local (its dataDir in the temp dir), no gateway address on the host, no masquerading and
no routes, plus loopback; pods reach each other and nothing else.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

IFNAMSIZ = 15  # a Linux interface name has at most 15 bytes
# A unix socket path has at most 107 bytes. observe-rt's pod shim listens on
# <run_dir>/pods/<64-hex id>/shim/shim.sock, which leaves 22 bytes for its run dir.
SOCKADDR_MAX = 107
SHIM_SOCKET_SUFFIX = len("/pods/") + 64 + len("/shim/shim.sock")
CRI_NAMESPACE = "k8s.io"  # the containerd namespace the CRI plugin works in


def bridge_name(tag: str, runtime: str) -> str:
    """A unique bridge per session and runtime: "ocb" + tag + the runtime's initial."""
    name = f"ocb{tag}{runtime[0]}"
    if len(name) > IFNAMSIZ:
        raise ValueError(f"bridge name {name!r} is longer than {IFNAMSIZ} bytes")
    return name


def pick_subnets(count: int, rng: random.Random | None = None) -> list[str]:
    """`count` distinct private /24s in 10.200.0.0/13 .. 10.207.255.0/24."""
    rng = rng or random.Random()
    picked: list[str] = []
    while len(picked) < count:
        subnet = f"10.{rng.randint(200, 207)}.{rng.randint(0, 255)}.0/24"
        if subnet not in picked:
            picked.append(subnet)
    return picked


def conflist(network: str, bridge: str, subnet: str, data_dir: Path | str) -> dict:
    return {
        "cniVersion": "1.0.0",
        "name": network,
        "plugins": [
            {"type": "bridge", "bridge": bridge, "isGateway": False, "ipMasq": False,
             "ipam": {"type": "host-local", "dataDir": str(data_dir),
                      "ranges": [[{"subnet": subnet}]]}},
            {"type": "loopback"},
        ],
    }  # fmt: skip


def write_conflist(conf_dir: Path, network: str, bridge: str, subnet: str, data_dir: Path) -> Path:
    conf_dir.mkdir(parents=True, exist_ok=True)
    path = conf_dir / "10-bench.conflist"
    path.write_text(json.dumps(conflist(network, bridge, subnet, data_dir), indent=1))
    return path


def check_run_dir(run_dir: Path | str) -> None:
    if len(str(run_dir)) + SHIM_SOCKET_SUFFIX > SOCKADDR_MAX:
        raise ValueError(
            f"run dir {run_dir} is too long: its pod shims' sockets would exceed "
            f"{SOCKADDR_MAX} bytes"
        )


def _toml_string(value: str | Path) -> str:
    return json.dumps(str(value))  # a JSON string is a valid TOML basic string


def observe_rt_config(
    *, socket: Path, state_dir: Path, run_dir: Path, cni_conf_dir: Path, cni_bin_dir: str,
    hosts_dir: Path, policy: Path, cgroup_parent: str, probes: bool = True,
    bpf_pin_dir: Path | None = None,
) -> str:  # fmt: skip
    """observe-rt daemon's TOML (keys of observe_rt/config.py), every path private; `probes`
    false keeps the eBPF probes unloaded (the probe benchmark's "off"); `bpf_pin_dir`, a
    private bpffs directory for the probes' pinned maps, is written where the daemon's config
    has that key (pinning came later), so a session never shares a node daemon's pins."""
    values = {
        "socket": socket, "state_dir": state_dir, "run_dir": run_dir,
        "cni_conf_dir": cni_conf_dir, "registry_hosts_dir": hosts_dir, "policy": policy,
        "cgroup_parent": cgroup_parent, "log_level": "info",
        "metrics_address": "127.0.0.1:0",  # an ephemeral port, logged at start
    }  # fmt: skip
    lines = [f"{key} = {_toml_string(value)}" for key, value in values.items()]
    lines.append(f"cni_bin_dirs = [{_toml_string(cni_bin_dir)}]")
    lines.append(f"probes = {'true' if probes else 'false'}")
    if bpf_pin_dir is not None and "bpf_pin_dir" in _daemon_config_keys():
        lines.append(f"bpf_pin_dir = {_toml_string(bpf_pin_dir)}")
    return "\n".join(lines) + "\n"


def _daemon_config_keys() -> set[str]:
    from observe_rt.config import DaemonConfig

    return set(DaemonConfig.__dataclass_fields__)


def containerd_config(
    *, base: Path, cni_conf_dir: Path, cni_bin_dir: str, hosts_dir: Path, sandbox_image: str,
    runc: str,
) -> str:  # fmt: skip
    """containerd 1.6 (config version 2) with its CRI plugin, every path under `base`.

    cgroupfs driver, overlayfs, runc through io.containerd.runc.v2 with a private runc root,
    network namespaces under the state dir, registries from hosts.toml files in `hosts_dir`.
    restrict_oom_score_adj: the CRI plugin gives sandboxes oom_score_adj -998, and writing a
    negative value fails (EIO) on these machines, which fails every RunPodSandbox; restricted,
    it is clamped to containerd's own score (0), as in a rootless or nested setup.
    """
    q = _toml_string
    cri = '[plugins."io.containerd.grpc.v1.cri"'
    return f"""version = 2
root = {q(base / "root")}
state = {q(base / "state")}

[grpc]
  address = {q(base / "containerd.sock")}

[ttrpc]
  address = {q(base / "containerd.sock.ttrpc")}

[debug]
  address = ""

[metrics]
  address = ""

[plugins."io.containerd.internal.v1.opt"]
  path = {q(base / "opt")}

{cri}]
  sandbox_image = {q(sandbox_image)}
  stream_server_address = "127.0.0.1"
  stream_server_port = "0"
  netns_mounts_under_state_dir = true
  restrict_oom_score_adj = true
  enable_selinux = false

{cri}.containerd]
  snapshotter = "overlayfs"
  default_runtime_name = "runc"

{cri}.containerd.runtimes.runc]
  runtime_type = "io.containerd.runc.v2"

{cri}.containerd.runtimes.runc.options]
  BinaryName = {q(runc)}
  Root = {q(base / "runc")}
  SystemdCgroup = false

{cri}.cni]
  bin_dir = {q(cni_bin_dir)}
  conf_dir = {q(cni_conf_dir)}
  max_conf_num = 1

{cri}.registry]
  config_path = {q(hosts_dir)}
"""


def hosts_toml(registry_host: str) -> str:
    """containerd's hosts.toml for a plain-HTTP registry on `registry_host` (127.0.0.1:PORT)."""
    url = f"http://{registry_host}"
    return f'server = "{url}"\n\n[host."{url}"]\n  capabilities = ["pull", "resolve"]\n'


def write_hosts_dir(hosts_dir: Path, registry_host: str) -> Path:
    """`hosts_dir/<host:port>/hosts.toml` (containerd's config_path layout)."""
    namespace = hosts_dir / registry_host
    namespace.mkdir(parents=True, exist_ok=True)
    (namespace / "hosts.toml").write_text(hosts_toml(registry_host))
    return hosts_dir
