"""Pod networking through CNI plugins (CNI spec 1.0 execution protocol).

    setup:    ADD plugin 1 .. n, each given the previous plugin's result as prevResult;
              on a failure, DEL what was added (reverse order) and raise naming the plugin.
    teardown: DEL plugin n .. 1 with the config and final result cached at ADD time;
              no cache means nothing to undo; a gone netns is passed as an empty CNI_NETNS;
              plugin runs a killed daemon left behind for the pod are stopped first.

Plan, then apply: cni_exec.py computes each plugin run as plain data (unit-tested) and
`run_plugin` there is the only place that executes anything. The cache file is written before
the first ADD, so a daemon killed halfway through setup still tears down on the next try.

Errors: a missing or malformed config and a missing plugin binary are FailedPrecondition (the
node is not ready for pod networking); a plugin that fails or times out is Unavailable; bad
per-pod arguments are InvalidArgument.
"""

from __future__ import annotations

import json
import logging
import os
import re
import threading
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from observe_rt import trace
from observe_rt.errors import FailedPrecondition, InvalidArgument
from observe_rt.host.files import write_json_atomic
from observe_rt.network.cni_config import (
    DEFAULT_CONF_DIR,
    CniConfig,
    CniConfigError,
    load_config,
    version_tuple,
)
from observe_rt.network.cni_exec import (
    CniPluginError,
    CniPluginNotFound,
    NetworkResult,
    PortMapping,
    cni_args,
    exec_config,
    plugin_env,
    run_plugin,
    stop_plugins_of,
)
from observe_rt.network.netns import is_netns

__all__ = [
    "CniConfig",
    "CniConfigError",
    "CniManager",
    "CniPluginError",
    "CniPluginNotFound",
    "NetworkResult",
    "PortMapping",
]

log = logging.getLogger(__name__)

DEFAULT_BIN_DIRS = ("/opt/cni/bin", "/usr/lib/cni")
DEFAULT_CACHE_DIR = "/var/lib/observe-rt/cni/results"
DEFAULT_TIMEOUT = 60.0
CACHE_KIND = "observe-rt/cni-cache/v1"

_CONTAINER_ID = re.compile(r"^[a-zA-Z0-9][a-zA-Z0-9_.\-]*$")


@dataclass(frozen=True)
class _Attachment:
    """The per-pod parameters of one ADD, kept in the cache for the matching DEL."""

    pod_id: str
    ifname: str
    netns: str
    args: list[tuple[str, str]]
    capability_args: dict[str, Any]


class CniManager:
    """Runs the node's CNI network for pods; one instance per daemon, safe across threads."""

    def __init__(
        self,
        conf_dir: str = DEFAULT_CONF_DIR,
        bin_dirs: Sequence[str] = DEFAULT_BIN_DIRS,
        cache_dir: str = DEFAULT_CACHE_DIR,
        timeout: float = DEFAULT_TIMEOUT,
    ) -> None:
        self.conf_dir = conf_dir
        self.bin_dirs = list(bin_dirs)
        self.cache_dir = cache_dir
        self.timeout = timeout
        # The spec forbids parallel operations on one pod; striped locks keep that bounded.
        self._locks = [threading.Lock() for _ in range(64)]

    def load(self) -> CniConfig:
        """The current config: re-read on each call, as an admin may install it at any time."""
        return load_config(self.conf_dir)

    def find_plugin(self, kind: str) -> str:
        for directory in self.bin_dirs:
            path = os.path.join(directory, kind)
            if os.path.isfile(path) and os.access(path, os.X_OK):
                return path
        raise CniPluginNotFound(
            f"CNI plugin {kind!r} not found in {', '.join(self.bin_dirs) or '(no bin dirs)'}"
        )

    def status(self) -> tuple[bool, str]:
        """(ready, reason) for the CRI NetworkReady condition."""
        try:
            config = self.load()
        except CniConfigError as err:
            return False, str(err)
        missing = [kind for kind in _all_plugin_types(config) if not self._exists(kind)]
        if missing:
            return False, (
                f"CNI plugin(s) {', '.join(missing)} of network {config.name} ({config.source}) "
                f"not found in {', '.join(self.bin_dirs)}"
            )
        return True, f"network {config.name} from {config.source}"

    def setup(
        self,
        pod_id: str,
        netns_path: str,
        namespace: str,
        name: str,
        uid: str,
        port_mappings: Iterable[PortMapping | Mapping[str, Any]] = (),
        ifname: str = "eth0",
        capability_args: Mapping[str, Any] | None = None,
    ) -> NetworkResult:
        """ADD the pod's netns to the network; undo and raise if any plugin fails.

        `port_mappings` are PortMapping objects or dicts with the CNI keys (hostPort,
        containerPort, protocol, hostIP); `capability_args` adds other capabilities
        (bandwidth, dns ...), each passed only to plugins that declare it.
        """
        _check_attachment(pod_id, ifname)
        caps = dict(capability_args or {})
        # Only mappings with a hostPort need the node to forward anything (as containerd).
        mappings = [m.to_cni() for m in map(PortMapping.coerce, port_mappings) if m.host_port > 0]
        if mappings:
            caps["portMappings"] = mappings
        att = _Attachment(pod_id, ifname, netns_path, cni_args(pod_id, namespace, name, uid), caps)
        with self._lock(pod_id, ifname):
            if os.path.exists(self._cache_path(pod_id, ifname)):
                # A second ADD would overwrite what the pending DEL needs to know.
                raise FailedPrecondition(
                    f"pod {pod_id} already has CNI network on {ifname}; tear it down first"
                )
            config = self.load()
            binaries = [self.find_plugin(kind) for kind in config.plugin_types]  # fail early
            self._write_cache(att, config, None)
            result = self._add_all(config, binaries, att)
            self._write_cache(att, config, result)
        return NetworkResult.from_cni(result, ifname)

    def teardown(self, pod_id: str, netns_path: str | None = None, ifname: str = "eth0") -> None:
        """DEL the pod from the network it was added to; a no-op when it never was (or is gone).

        `netns_path` defaults to the one used at ADD; when the namespace no longer exists,
        plugins get an empty CNI_NETNS and still release what they hold (IP addresses).
        """
        _check_attachment(pod_id, ifname)
        with self._lock(pod_id, ifname):
            cached = self._read_cache(pod_id, ifname)
            if cached is None:  # written before the first ADD: without it nothing can run
                return
            # Under the lock no run of ours is in flight for this attachment: any still running
            # was started by a daemon killed meanwhile, and would race the DELs.
            stop_plugins_of(pod_id, ifname)
            config, att, result = cached
            path = att.netns if netns_path is None else netns_path
            netns = path if path and is_netns(path) else ""
            binaries = [self.find_plugin(kind) for kind in config.plugin_types]
            for plugin, binary in reversed(list(zip(config.plugins, binaries, strict=True))):
                self._run(binary, plugin, "DEL", config, att, netns, _del_prev(config, result))
            _unlink(self._cache_path(pod_id, ifname))

    def cached_result(self, pod_id: str, ifname: str = "eth0") -> NetworkResult | None:
        """The result of a completed ADD (for a daemon that restarted), or None."""
        _check_attachment(pod_id, ifname)
        cached = self._read_cache(pod_id, ifname)
        if cached is None or cached[2] is None:
            return None
        return NetworkResult.from_cni(cached[2], ifname)

    def _add_all(self, config: CniConfig, binaries: list[str], att: _Attachment) -> dict:
        result: dict[str, Any] | None = None
        for index, (plugin, binary) in enumerate(zip(config.plugins, binaries, strict=True)):
            try:
                result = self._run(binary, plugin, "ADD", config, att, att.netns, result)
            except Exception:
                # The failing plugin may have half-applied its change: DEL it too.
                self._rollback(config, binaries[: index + 1], att, result)
                raise
        return result or {}

    def _rollback(
        self, config: CniConfig, binaries: list[str], att: _Attachment, result: dict | None
    ) -> None:
        prev = _del_prev(config, result)
        failures = 0
        for plugin, binary in reversed(list(zip(config.plugins, binaries, strict=False))):
            try:
                self._run(binary, plugin, "DEL", config, att, att.netns, prev)
            except Exception as err:  # keep undoing; the ADD error is what gets raised
                failures += 1
                log.warning("pod %s: undoing CNI ADD: %s", att.pod_id, err)
        if failures == 0:  # else the cache stays, so a later teardown retries the DELs
            _unlink(self._cache_path(att.pod_id, att.ifname))

    def _run(
        self,
        binary: str,
        plugin: Mapping[str, Any],
        command: str,
        config: CniConfig,
        att: _Attachment,
        netns: str,
        prev: Mapping | None,
    ) -> dict[str, Any]:
        conf = exec_config(config, plugin, prev, att.capability_args)
        env = plugin_env(command, att.pod_id, netns, att.ifname, att.args, self.bin_dirs)
        log.debug("pod %s: CNI %s %s", att.pod_id, command, plugin["type"])
        with trace.span(f"cni.{command.lower()}", {"cni.plugin.type": plugin["type"],
                                                   "cni.network.name": config.name}):  # fmt: skip
            result = run_plugin(binary, env, conf, self.timeout)
        if command == "ADD" and not result:
            raise CniPluginError(plugin["type"], command, "returned no result")
        return result

    def _exists(self, kind: str) -> bool:
        try:
            self.find_plugin(kind)
        except CniPluginNotFound:
            return False
        return True

    def _lock(self, pod_id: str, ifname: str) -> threading.Lock:
        return self._locks[hash((pod_id, ifname)) % len(self._locks)]

    def _cache_path(self, pod_id: str, ifname: str) -> str:
        return os.path.join(self.cache_dir, f"{pod_id}-{ifname}.json")

    def _write_cache(self, att: _Attachment, config: CniConfig, result: dict | None) -> None:
        entry = {
            "kind": CACHE_KIND,
            "containerId": att.pod_id,
            "ifName": att.ifname,
            "netns": att.netns,
            "cniArgs": att.args,
            "capabilityArgs": att.capability_args,
            "config": config.raw,
            "source": config.source,
            "result": result,
        }
        _write_json_atomic(self._cache_path(att.pod_id, att.ifname), entry)

    def _read_cache(self, pod_id: str, ifname: str):
        path = self._cache_path(pod_id, ifname)
        try:
            with open(path, encoding="utf-8") as f:
                entry = json.load(f)
            config = CniConfig.from_dict(entry["config"], path)
            att = _Attachment(
                pod_id,
                ifname,
                str(entry.get("netns") or ""),
                [tuple(a) for a in entry["cniArgs"]],
                dict(entry.get("capabilityArgs") or {}),
            )
            return config, att, entry.get("result")
        except FileNotFoundError:
            return None
        except (ValueError, KeyError, TypeError, CniConfigError) as err:
            # Never let a damaged file block pod removal: DEL with today's config instead.
            log.warning("CNI cache %s is unreadable (%s); using the current config", path, err)
            return self.load(), _Attachment(pod_id, ifname, "", [], {}), None


def _check_attachment(pod_id: str, ifname: str) -> None:
    if not isinstance(pod_id, str) or not _CONTAINER_ID.match(pod_id):
        raise InvalidArgument(
            f"pod id {pod_id!r} must start with a letter or digit and hold only letters, "
            "digits, '_', '.' and '-'"
        )
    if not 0 < len(ifname) < 16 or ifname in (".", "..") or re.search(r"[/:\s]", ifname):
        raise InvalidArgument(f"interface name {ifname!r} is not a valid Linux interface name")


def _all_plugin_types(config: CniConfig) -> list[str]:
    kinds = list(config.plugin_types)
    for plugin in config.plugins:
        ipam = plugin.get("ipam") or {}
        if isinstance(ipam.get("type"), str) and ipam["type"] not in kinds:
            kinds.append(ipam["type"])
    return kinds


def _del_prev(config: CniConfig, result: Mapping | None) -> Mapping | None:
    # prevResult on DEL arrived with spec 0.4.0; older plugins would reject the field.
    return result if version_tuple(config.cni_version) >= (0, 4, 0) else None


def _write_json_atomic(path: str, data: Any) -> None:
    os.makedirs(os.path.dirname(path), mode=0o700, exist_ok=True)
    write_json_atomic(path, data, mode=0o600)


def _unlink(path: str) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass
