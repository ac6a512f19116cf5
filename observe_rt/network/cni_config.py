"""CNI network configuration: find the node's config file, load it and validate it.

Like containerd and CRI-O, the first file by name among *.conflist, *.conf and *.json in the
conf dir is the pod network. A single-plugin file (.conf) is wrapped into a list of one, as
libcni's ConfListFromConf does. Validation stops at what the runtime relies on (name, version,
plugin types); every other key is the plugins' business and is passed through untouched.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass, field
from typing import Any

from observe_rt.errors import FailedPrecondition

DEFAULT_CONF_DIR = "/etc/cni/net.d"
CONFIG_EXTENSIONS = (".conflist", ".conf", ".json")
MAX_CONFIG_BYTES = 1 << 20

_NAME = re.compile(r"^[a-zA-Z0-9][a-zA-Z0-9_.\-]*$")


class CniConfigError(FailedPrecondition):
    """The node's CNI config is missing or malformed: pods cannot get a network."""


@dataclass(frozen=True)
class CniConfig:
    """A validated network configuration list, as loaded from `source`."""

    name: str
    cni_version: str
    plugins: tuple[dict[str, Any], ...]
    raw: dict[str, Any] = field(repr=False)
    source: str = ""

    @property
    def plugin_types(self) -> list[str]:
        return [p["type"] for p in self.plugins]

    @classmethod
    def from_dict(cls, data: Any, source: str = "<config>") -> CniConfig:
        """Validate a parsed conflist (or single conf, wrapped) and build the config."""
        if not isinstance(data, dict):
            raise CniConfigError(f"{source}: expected a JSON object, got {type(data).__name__}")
        if "plugins" not in data:
            data = _wrap_single(data, source)
        name = _check_name(data.get("name"), source)
        version = _check_version(data.get("cniVersion"), source)
        if not isinstance(data.get("disableCheck", False), bool):
            raise CniConfigError(f"{source}: disableCheck must be true or false")
        plugins = data.get("plugins")
        if not isinstance(plugins, list) or not plugins:
            raise CniConfigError(f"{source}: plugins must be a non-empty list")
        for index, plugin in enumerate(plugins):
            _check_plugin(plugin, f"{source}: plugins[{index}]")
        return cls(name, version, tuple(plugins), data, source)


def find_config_file(conf_dir: str = DEFAULT_CONF_DIR) -> str | None:
    """The first config file by name in `conf_dir`, or None when there is none."""
    try:
        names = sorted(os.listdir(conf_dir))
    except (FileNotFoundError, NotADirectoryError):
        return None
    for name in names:
        path = os.path.join(conf_dir, name)
        if name.endswith(CONFIG_EXTENSIONS) and not name.startswith(".") and os.path.isfile(path):
            return path
    return None


def load_config_file(path: str) -> CniConfig:
    try:
        with open(path, "rb") as f:
            raw = f.read(MAX_CONFIG_BYTES + 1)
    except OSError as err:
        raise CniConfigError(f"cannot read CNI config {path}: {err.strerror}") from None
    if len(raw) > MAX_CONFIG_BYTES:
        raise CniConfigError(f"{path}: larger than {MAX_CONFIG_BYTES} bytes")
    try:
        data = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as err:
        raise CniConfigError(f"{path}: not valid JSON: {err}") from None
    if path.endswith(".conflist") and isinstance(data, dict) and "plugins" not in data:
        raise CniConfigError(f"{path}: a .conflist needs a plugins list")
    return CniConfig.from_dict(data, path)


def load_config(conf_dir: str = DEFAULT_CONF_DIR) -> CniConfig:
    """Load the pod network config from `conf_dir`; CniConfigError says why there is none."""
    path = find_config_file(conf_dir)
    if path is None:
        raise CniConfigError(f"no network config found in {conf_dir}")
    return load_config_file(path)


def version_tuple(version: str) -> tuple[int, ...]:
    return tuple(int(part) for part in version.split("."))


def _wrap_single(conf: dict[str, Any], source: str) -> dict[str, Any]:
    if "type" not in conf:
        raise CniConfigError(f"{source}: neither a plugins list nor a plugin type")
    return {"cniVersion": conf.get("cniVersion"), "name": conf.get("name"), "plugins": [conf]}


def _check_name(name: Any, source: str) -> str:
    if not isinstance(name, str) or not _NAME.match(name):
        raise CniConfigError(
            f"{source}: network name {name!r} must start with a letter or digit and hold only "
            "letters, digits, '_', '.' and '-'"
        )
    return name


def _check_version(version: Any, source: str) -> str:
    if not isinstance(version, str) or not re.fullmatch(r"\d+\.\d+\.\d+", version):
        raise CniConfigError(f"{source}: cniVersion {version!r} is not a version like 1.0.0")
    # Results before 0.3.0 have another shape (ip4/ip6) and no chaining; nobody ships them now.
    if version_tuple(version) < (0, 3, 0):
        raise CniConfigError(f"{source}: cniVersion {version} is too old (need 0.3.0 or later)")
    return version


def _check_plugin(plugin: Any, where: str) -> None:
    if not isinstance(plugin, dict):
        raise CniConfigError(f"{where}: expected a JSON object")
    kind = plugin.get("type")
    # The type names an executable in the bin dirs: it must not be able to leave them.
    if not isinstance(kind, str) or not kind or kind in (".", "..") or "/" in kind:
        raise CniConfigError(f"{where}: type {kind!r} must be a plugin file name")
    caps = plugin.get("capabilities", {})
    if not isinstance(caps, dict) or not all(isinstance(v, bool) for v in caps.values()):
        raise CniConfigError(f"{where} ({kind}): capabilities must map names to true/false")
    if "ipam" in plugin and not isinstance(plugin["ipam"], dict):
        raise CniConfigError(f"{where} ({kind}): ipam must be a JSON object")
