"""Registry hosts configuration in containerd's hosts.toml format (containerd docs/hosts.md).

    <config dir>/<namespace>/hosts.toml       namespace: "docker.io", "myreg.io:5000", or
                                              "_default" for every registry without its own dir

    server = "https://registry-1.docker.io"   # the upstream, tried last (default: the namespace)
    [host."http://127.0.0.1:5000"]            # mirrors, tried first, in file order
      capabilities = ["pull", "resolve"]      # of pull, resolve, push (default: all three)
      skip_verify = false
      ca = "mirror-ca.crt"                    # or a list; relative to this file's directory
      client = [["client.cert", "client.key"]]
      override_path = false                   # true: the URL path is the API root (no /v2)
      dial_timeout = "2s"
      [host."http://127.0.0.1:5000".header]
        x-custom = "value"                    # or a list of values

The root-level fields other than `server` apply to the upstream. A namespace dir with certificate
files but no hosts.toml uses Docker's certs.d layout (*.crt CAs, *.cert/*.key client pairs). A
port in the namespace is looked up as "host_port_" first, then "host:port".

Plain HTTP is used only for a host written as http://, and for a loopback upstream that was not
configured (localhost, 127.0.0.0/8, ::1): there, as in containerd, HTTPS (unverified) is tried
first and plain HTTP when the server answers in plain HTTP. Unlike containerd, which logs and
ignores a hosts.toml it cannot parse, we refuse it: a typo must not silently send pulls upstream.
"""

from __future__ import annotations

import functools
import ipaddress
import posixpath
import re
import ssl
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

from observe_rt.errors import InvalidArgument

DEFAULT_CONFIG_DIR = Path("/etc/observe-rt/certs.d")
DOCKER_HUB = "docker.io"
DOCKER_HUB_UPSTREAM = "registry-1.docker.io"
ALL_CAPABILITIES = frozenset({"pull", "resolve", "push"})


@dataclass(frozen=True)
class RegistryHost:
    scheme: str  # "https" or "http"
    host: str  # host[:port] as dialled
    path: str = "/v2"  # API root
    capabilities: frozenset[str] = ALL_CAPABILITIES
    ca: tuple[str, ...] = ()
    client: tuple[tuple[str, str], ...] = ()
    skip_verify: bool = False
    header: tuple[tuple[str, str], ...] = ()
    dial_timeout: float | None = None
    # Try HTTPS, and fall back to plain HTTP if the server answers in plain HTTP.
    http_fallback: bool = False
    mirror: bool = field(default=False, compare=False)

    @property
    def url(self) -> str:
        return f"{self.scheme}://{self.host}{self.path}"

    def can(self, capability: str) -> bool:
        return capability in self.capabilities

    def needs_namespace(self, domain: str) -> bool:
        """A host serving another namespace's images gets `?ns=<domain>`, as containerd sends."""
        if self.host == domain:
            return False
        return not (domain == DOCKER_HUB and self.host == DOCKER_HUB_UPSTREAM)

    def ssl_context(self) -> ssl.SSLContext:
        return _ssl_context(self.ca, self.client, self.skip_verify)


def hosts_for(
    domain: str, config_dir: str | Path | None = DEFAULT_CONFIG_DIR
) -> list[RegistryHost]:
    """The hosts to try for images of `domain`, in order: mirrors, then the upstream."""
    configs: list[dict] | None = None
    namespace_dir = find_namespace_dir(domain, config_dir) if config_dir else None
    if namespace_dir is not None:
        configs = _load_namespace_dir(namespace_dir)
    if not configs:
        configs = [{}]
    hosts = [_to_host(config, mirror=True) for config in configs[:-1]]
    upstream = configs[-1]
    if upstream.get("host"):
        hosts.append(_to_host(upstream))
    else:
        hosts.append(_default_upstream(domain, upstream))
    return hosts


def find_namespace_dir(domain: str, config_dir: str | Path) -> Path | None:
    config_dir = Path(config_dir)
    names = [domain, "_default"]
    host, port = split_host_port(domain)
    if port:
        names.insert(0, f"{host}_{port}_")
    for name in names:
        candidate = config_dir / name
        if candidate.is_dir():
            return candidate
    return None


def is_loopback(hostport: str) -> bool:
    host, _ = split_host_port(hostport)
    host = host.strip("[]")
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def split_host_port(hostport: str) -> tuple[str, str]:
    """("127.0.0.1", "5000") from "127.0.0.1:5000"; ("[::1]", "5000") from "[::1]:5000"."""
    if hostport.startswith("["):
        host, _, rest = hostport.partition("]")
        return host + "]", rest.removeprefix(":")
    if hostport.count(":") == 1:
        host, _, port = hostport.partition(":")
        return host, port
    return hostport, ""


def _load_namespace_dir(namespace_dir: Path) -> list[dict]:
    hosts_file = namespace_dir / "hosts.toml"
    text = hosts_file.read_text() if hosts_file.is_file() else ""
    if not text.strip():
        return [_docker_cert_files(namespace_dir)]
    try:
        document = tomllib.loads(text)
    except tomllib.TOMLDecodeError as error:
        raise InvalidArgument(f"{hosts_file}: not valid TOML: {error}") from None
    return parse_hosts_document(document, namespace_dir, str(hosts_file))


def parse_hosts_document(document: dict, base_dir: Path, where: str = "hosts.toml") -> list[dict]:
    """Mirror configs in file order, then the server's (its "host" empty when not set)."""
    mirrors = document.get("host") or {}
    if not isinstance(mirrors, dict):
        raise InvalidArgument(f"{where}: [host] must be a table of host sections")
    configs = [
        _host_config(url, section, base_dir, f'{where}: [host."{url}"]')
        for url, section in mirrors.items()  # tomllib keeps the order of first appearance
    ]
    server = document.get("server", "")
    if not isinstance(server, str):
        raise InvalidArgument(f"{where}: server must be a string")
    configs.append(_host_config(server, document, base_dir, f"{where}: server"))
    return configs


def _host_config(url: str, section: object, base_dir: Path, where: str) -> dict:
    if not isinstance(section, dict):
        raise InvalidArgument(f"{where}: must be a table")
    config: dict = {"host": ""}
    override_path = _typed(section, "override_path", bool, where, False)
    if url:
        config.update(_parse_url(url, override_path, where))
    config["capabilities"] = _capabilities(section, where)
    config["skip_verify"] = _typed(section, "skip_verify", bool, where, None)
    config["ca"] = tuple(_paths(section.get("ca"), base_dir, f"{where} ca"))
    config["client"] = tuple(_client_pairs(section.get("client"), base_dir, where))
    config["header"] = tuple(_headers(section.get("header"), where))
    timeout = _typed(section, "dial_timeout", str, where, None)
    config["dial_timeout"] = _go_duration(timeout, where) if timeout else None
    return config


def _parse_url(url: str, override_path: bool, where: str) -> dict:
    if "://" not in url:
        url = "https://" + url
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise InvalidArgument(f"{where}: {url!r} is not an http:// or https:// host")
    path = posixpath.normpath(parts.path) if parts.path else ""
    if not override_path and not path.endswith("/v2"):
        path = path.rstrip("/") + "/v2"
    return {"scheme": parts.scheme, "host": parts.netloc, "path": path}


def _typed(section: dict, key: str, kind: type, where: str, default):
    value = section.get(key, default)
    if value is not default and not isinstance(value, kind):
        raise InvalidArgument(f"{where}: {key} must be a {kind.__name__}")
    return value


def _capabilities(section: dict, where: str) -> frozenset[str]:
    names = section.get("capabilities") or []
    if not isinstance(names, list):
        raise InvalidArgument(f"{where}: capabilities must be a list")
    unknown = [name for name in names if str(name).lower() not in ALL_CAPABILITIES]
    if unknown:
        raise InvalidArgument(f"{where}: unknown capability {unknown[0]!r} (pull, resolve, push)")
    return frozenset(name.lower() for name in names) or ALL_CAPABILITIES


def _paths(value: object, base_dir: Path, where: str) -> list[str]:
    if value is None:
        return []
    values = [value] if isinstance(value, str) else value
    if not isinstance(values, list) or not all(isinstance(item, str) for item in values):
        raise InvalidArgument(f"{where}: must be a path or a list of paths")
    return [str(base_dir / item) for item in values]  # an absolute item replaces base_dir


def _client_pairs(value: object, base_dir: Path, where: str) -> list[tuple[str, str]]:
    if value is None:
        return []
    pairs = []
    for item in [value] if isinstance(value, str) else value:
        if isinstance(item, str):
            pairs.append((str(base_dir / item), ""))
        elif isinstance(item, list) and len(item) == 2 and all(isinstance(p, str) for p in item):
            pairs.append((str(base_dir / item[0]), str(base_dir / item[1]) if item[1] else ""))
        else:
            raise InvalidArgument(f"{where}: client must be paths or [cert, key] pairs")
    return pairs


def _headers(value: object, where: str) -> list[tuple[str, str]]:
    if value is None:
        return []
    if not isinstance(value, dict):
        raise InvalidArgument(f"{where}: header must be a table")
    headers = []
    for name, values in value.items():
        items = [values] if isinstance(values, str) else values
        for item in items if isinstance(items, list) and items else [None]:
            if not isinstance(item, str) or "\n" in item or "\r" in item:
                raise InvalidArgument(f"{where}: header {name!r} must be strings on one line")
            headers.append((name, item))
    return headers


_DURATION_UNITS = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}
_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)(ns|us|µs|ms|s|m|h)")


def _go_duration(text: str, where: str) -> float:
    """Seconds from a Go duration string such as "1s", "500ms" or "1m30s"."""
    parts = _DURATION_PART.findall(text)
    if not parts or "".join(number + unit for number, unit in parts) != text:
        raise InvalidArgument(f"{where}: dial_timeout {text!r} is not a duration such as '2s'")
    return sum(float(number) * _DURATION_UNITS[unit] for number, unit in parts)


def _docker_cert_files(namespace_dir: Path) -> dict:
    ca = sorted(str(path) for path in namespace_dir.glob("*.crt"))
    client = []
    for cert in sorted(namespace_dir.glob("*.cert")):
        key = cert.with_suffix(".key")
        client.append((str(cert), str(key) if key.exists() else ""))
    return {"host": "", "ca": tuple(ca), "client": tuple(client)}


def _to_host(config: dict, mirror: bool = False) -> RegistryHost:
    scheme = config["scheme"]
    explicit_tls = bool(config.get("ca") or config.get("client")) or (
        config.get("skip_verify") is not None
    )
    _, port = split_host_port(config["host"])
    # containerd: an http:// host that also has TLS settings is tried over HTTPS first.
    fallback = scheme == "http" and explicit_tls and port != "80"
    return RegistryHost(
        scheme="https" if fallback else scheme,
        host=config["host"],
        path=config.get("path", "/v2"),
        capabilities=config.get("capabilities", ALL_CAPABILITIES),
        ca=config.get("ca", ()),
        client=config.get("client", ()),
        skip_verify=bool(config.get("skip_verify")),
        header=config.get("header", ()),
        dial_timeout=config.get("dial_timeout"),
        http_fallback=fallback,
        mirror=mirror,
    )


def _default_upstream(domain: str, config: dict) -> RegistryHost:
    """The upstream when no server is configured: the namespace itself, by containerd's rules."""
    config = {**config, "path": "/v2", "capabilities": ALL_CAPABILITIES}
    if domain == DOCKER_HUB:
        return _to_host({**config, "scheme": "https", "host": DOCKER_HUB_UPSTREAM})
    _, port = split_host_port(domain)
    if not is_loopback(domain) or port in ("", "443"):
        return _to_host({**config, "scheme": "https", "host": domain})
    if port == "80":
        return _to_host({**config, "scheme": "http", "host": domain})
    # Loopback on another port: the protocol is ambiguous, so HTTPS (unverified) then HTTP.
    return _to_host({**config, "scheme": "http", "host": domain, "skip_verify": True})


@functools.lru_cache(maxsize=64)
def _ssl_context(
    ca: tuple[str, ...], client: tuple[tuple[str, str], ...], skip_verify: bool
) -> ssl.SSLContext:
    context = ssl.create_default_context()
    try:
        for path in ca:
            context.load_verify_locations(cafile=path)
        for cert, key in client:
            context.load_cert_chain(cert, key or None)
    except (OSError, ssl.SSLError) as error:
        raise InvalidArgument(f"registry TLS files: {error}") from None
    if skip_verify:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    return context
