"""The CNI execution protocol as plain data: CNI_ARGS, plugin environment, the stdin config
derived from a plugin's entry (spec 1.0 'deriving execution configuration'), result parsing;
and `run_plugin`, the one function that executes a plugin binary.
"""

from __future__ import annotations

import ipaddress
import json
import os
import signal
import subprocess
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from observe_rt.errors import FailedPrecondition, InvalidArgument, Unavailable
from observe_rt.network.cni_config import CniConfig

DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
PROTOCOLS = ("tcp", "udp", "sctp")
# Well-known error codes of the spec, named in messages so a person need not look them up.
ERROR_CODES = {
    1: "incompatible CNI version",
    2: "unsupported field in network configuration",
    3: "container unknown or does not exist",
    4: "invalid environment variables",
    5: "I/O failure",
    6: "failed to decode content",
    7: "invalid network config",
    11: "try again later",
}

_STDERR_TAIL = 2000


class CniPluginNotFound(FailedPrecondition):
    """A plugin named by the config is in none of the bin dirs."""


class CniPluginError(Unavailable):
    """A plugin failed (its CNI error code, msg and details are kept) or timed out."""

    def __init__(
        self, plugin: str, command: str, msg: str, code: int | None = None, details: str = ""
    ) -> None:
        self.plugin = plugin
        self.command = command
        self.code = code
        self.msg = msg
        self.details = details
        text = f"CNI plugin {plugin} {command} failed"
        if code is not None:
            text += f" (code {code}{': ' + ERROR_CODES[code] if code in ERROR_CODES else ''})"
        text += f": {msg}" + (f"; {details}" if details else "")
        super().__init__(text)


@dataclass(frozen=True)
class PortMapping:
    """A CRI hostPort mapping, passed to plugins with the portMappings capability."""

    host_port: int
    container_port: int
    protocol: str = "tcp"
    host_ip: str = ""

    @classmethod
    def coerce(cls, value: PortMapping | Mapping[str, Any]) -> PortMapping:
        """Take a PortMapping or a dict in the CNI convention's keys (hostPort, ...)."""
        if isinstance(value, PortMapping):
            return value
        try:
            host_port, container_port = int(value.get("hostPort") or 0), int(value["containerPort"])
            protocol, host_ip = str(value.get("protocol") or "tcp"), str(value.get("hostIP") or "")
        except (KeyError, TypeError, ValueError, AttributeError, OverflowError) as err:
            raise InvalidArgument(f"port mapping {value!r}: {err!r}") from None
        return cls(host_port, container_port, protocol, host_ip)

    def to_cni(self) -> dict[str, Any]:
        protocol = self.protocol.lower()
        if protocol not in PROTOCOLS:
            raise InvalidArgument(f"port mapping protocol {self.protocol!r}: want tcp/udp/sctp")
        for what, port in (("host", self.host_port), ("container", self.container_port)):
            if not 0 < port < 65536:
                raise InvalidArgument(f"port mapping {what} port {port} is out of 1-65535")
        entry: dict[str, Any] = {
            "hostPort": self.host_port,
            "containerPort": self.container_port,
            "protocol": protocol,
        }
        if self.host_ip:
            entry["hostIP"] = self.host_ip
        return entry


@dataclass(frozen=True)
class NetworkResult:
    """What a pod got: its IPs (IPv4 first, no prefix), the interfaces and the raw result."""

    ips: list[str]
    interfaces: list[dict[str, Any]]
    raw: dict[str, Any] = field(repr=False)

    @classmethod
    def from_cni(cls, result: Mapping[str, Any] | None, ifname: str = "eth0") -> NetworkResult:
        result = dict(result or {})
        interfaces = [i for i in _entries(result, "interfaces") if isinstance(i, dict)]
        ips = []
        for entry in _entries(result, "ips"):
            address = _pod_address(entry, interfaces, ifname)
            if address is not None:
                ips.append(address)
        ips.sort(key=lambda a: ipaddress.ip_address(a).version)
        return cls(ips, interfaces, result)


def _entries(result: Mapping[str, Any], key: str) -> list:
    """A list field of a result; junk in its place (a plugin's bug) counts as none, as junk
    inside the list does."""
    value = result.get(key)
    return value if isinstance(value, list) else []


def _pod_address(entry: Any, interfaces: list[dict[str, Any]], ifname: str) -> str | None:
    """The address of an `ips` entry when it sits on the pod's interface, else None."""
    if not isinstance(entry, dict) or not isinstance(entry.get("address"), str):
        return None
    index = entry.get("interface")
    if isinstance(index, int) and 0 <= index < len(interfaces):
        iface = interfaces[index]
        if iface.get("name") != ifname or not iface.get("sandbox"):
            return None  # the host side of a veth, or lo from the loopback plugin
    try:
        address = ipaddress.ip_interface(entry["address"]).ip
    except ValueError:
        return None
    return None if address.is_loopback else str(address)


def cni_args(pod_id: str, namespace: str, name: str, uid: str) -> list[tuple[str, str]]:
    """CNI_ARGS as containerd and CRI-O pass them (IgnoreUnknown: plugins skip the rest)."""
    args = [
        ("IgnoreUnknown", "1"),
        ("K8S_POD_NAMESPACE", namespace),
        ("K8S_POD_NAME", name),
        ("K8S_POD_INFRA_CONTAINER_ID", pod_id),
        ("K8S_POD_UID", uid),
    ]
    for key, value in args:
        if any(c in value for c in ";=\0\n"):
            raise InvalidArgument(f"{key} value {value!r} may not hold ';', '=' or newlines")
    return args


def plugin_env(
    command: str,
    container_id: str,
    netns: str,
    ifname: str,
    args: Iterable[Sequence[str]],
    bin_dirs: Sequence[str],
) -> dict[str, str]:
    """The environment of one plugin run: the CNI parameters plus a PATH for its tools."""
    return {
        "PATH": os.environ.get("PATH") or DEFAULT_PATH,  # portmap runs iptables
        "CNI_COMMAND": command,
        "CNI_CONTAINERID": container_id,
        "CNI_NETNS": netns,
        "CNI_IFNAME": ifname,
        "CNI_ARGS": ";".join(f"{k}={v}" for k, v in args),
        "CNI_PATH": os.pathsep.join(bin_dirs),
    }


def exec_config(
    config: CniConfig,
    plugin: Mapping[str, Any],
    prev_result: Mapping | None,
    capability_args: Mapping[str, Any],
) -> dict[str, Any]:
    """The JSON a plugin reads on stdin (spec: 'deriving execution configuration')."""
    conf = {k: v for k, v in plugin.items() if k != "capabilities"}
    conf["name"], conf["cniVersion"] = config.name, config.cni_version
    declared = plugin.get("capabilities") or {}
    runtime = {k: v for k, v in capability_args.items() if declared.get(k) is True}
    if runtime:
        conf["runtimeConfig"] = runtime
    if prev_result is not None:
        conf["prevResult"] = prev_result
    return conf


def parse_plugin_output(
    plugin: str, command: str, returncode: int, stdout: bytes, stderr: bytes
) -> dict[str, Any]:
    """The plugin's result; a CniPluginError carrying its code/msg/details when it failed."""
    text = stdout.decode(errors="replace").strip()
    try:
        data = json.loads(text) if text else {}
    except ValueError:
        data = None
    if returncode == 0:
        if not isinstance(data, dict):
            raise CniPluginError(
                plugin, command, f"printed a result that is not JSON: {text[:200]}"
            )
        return data
    if isinstance(data, dict) and ("code" in data or "msg" in data):
        code = data.get("code") if isinstance(data.get("code"), int) else None
        details = str(data.get("details") or "")
        raise CniPluginError(plugin, command, str(data.get("msg", "")), code, details)
    tail = (stderr.decode(errors="replace").strip() or text)[-_STDERR_TAIL:]
    raise CniPluginError(plugin, command, f"exit status {returncode}: {tail or 'no output'}")


def run_plugin(
    binary: str, env: Mapping[str, str], conf: Mapping[str, Any] | None, timeout: float
) -> dict[str, Any]:
    """Execute one plugin with `conf` on stdin; kill its process group when it overruns."""
    plugin, command = os.path.basename(binary), env.get("CNI_COMMAND", "")
    stdin = json.dumps(conf).encode() if conf is not None else b""
    try:
        # Own session: on timeout the plugin and the IPAM plugin it started die together.
        proc = subprocess.Popen(
            [binary],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=dict(env),
            cwd="/",
            start_new_session=True,
        )
    except OSError as err:
        raise CniPluginNotFound(f"cannot execute CNI plugin {binary}: {err.strerror}") from None
    try:
        out, err = proc.communicate(stdin, timeout=timeout)
    except subprocess.TimeoutExpired:
        _kill_and_reap(proc)
        raise CniPluginError(plugin, command, f"timed out after {timeout:g}s") from None
    return parse_plugin_output(plugin, command, proc.returncode, out, err)


def stop_plugins_of(container_id: str, ifname: str = "", proc: str = "/proc") -> list[int]:
    """SIGKILL plugin runs still working for `container_id` (CNI_CONTAINERID, and CNI_IFNAME
    when given, in their environment): a daemon killed during an ADD leaves it running in its
    own session, and a DEL must not race it. Returns the pids signalled."""
    markers = {f"CNI_CONTAINERID={container_id}".encode()}
    if ifname:
        markers.add(f"CNI_IFNAME={ifname}".encode())
    killed = []
    for entry in os.listdir(proc):
        if not entry.isdigit():
            continue
        try:
            with open(os.path.join(proc, entry, "environ"), "rb") as f:
                environ = f.read().split(b"\0")
            if markers <= set(environ):
                os.kill(int(entry), signal.SIGKILL)
                killed.append(int(entry))
        except OSError:  # gone meanwhile, or a kernel thread
            continue
    return killed


def _kill_and_reap(proc: subprocess.Popen) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    try:
        proc.communicate(timeout=5)
    except subprocess.TimeoutExpired:
        # A descendant that left the group still holds the pipes: stop reading them.
        for pipe in (proc.stdin, proc.stdout, proc.stderr):
            if pipe is not None:
                pipe.close()
        proc.wait()
