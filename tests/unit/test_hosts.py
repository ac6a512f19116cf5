"""hosts.toml directories, read as containerd reads them (docs/hosts.md)."""

from pathlib import Path

import pytest

from observe_rt.errors import InvalidArgument
from observe_rt.oci.hosts import RegistryHost, find_namespace_dir, hosts_for, is_loopback

MIRROR = "http://127.0.0.1:5000"


def write(config_dir: Path, namespace: str, text: str) -> Path:
    directory = config_dir / namespace
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "hosts.toml").write_text(text)
    return directory


def urls(hosts: list[RegistryHost]) -> list[str]:
    return [host.url for host in hosts]


@pytest.mark.parametrize(
    ("domain", "upstream"),
    [
        ("docker.io", "https://registry-1.docker.io/v2"),
        ("registry.k8s.io", "https://registry.k8s.io/v2"),
        ("gcr.io", "https://gcr.io/v2"),
        ("quay.io", "https://quay.io/v2"),
    ],
)
def test_a_local_mirror_is_tried_before_the_upstream(tmp_path, domain, upstream):
    write(tmp_path, domain, f'[host."{MIRROR}"]\n  capabilities = ["pull", "resolve"]\n')
    mirror, last = hosts_for(domain, tmp_path)
    assert (mirror.url, mirror.scheme, mirror.mirror) == (f"{MIRROR}/v2", "http", True)
    assert mirror.capabilities == {"pull", "resolve"} and not mirror.http_fallback
    assert (last.url, last.capabilities) == (upstream, {"pull", "resolve", "push"})
    assert mirror.needs_namespace(domain) and not last.needs_namespace(domain)


def test_mirrors_keep_file_order_and_server_comes_last(tmp_path):
    write(
        tmp_path, "docker.io",
        'server = "https://upstream.example"\n'
        '[host."https://b.example"]\n[host."https://a.example"]\n'
        '[host."https://b.example".header]\n  x-one = "1"\n'
        '[host."https://c.example/prefix"]\n',
    )  # fmt: skip
    hosts = hosts_for("docker.io", tmp_path)
    assert urls(hosts) == [
        "https://b.example/v2", "https://a.example/v2", "https://c.example/prefix/v2",
        "https://upstream.example/v2",
    ]  # fmt: skip
    assert hosts[0].header == (("x-one", "1"),)


def test_server_alone_replaces_the_upstream(tmp_path):
    write(tmp_path, "_default", f'server = "{MIRROR}"\n')
    assert urls(hosts_for("quay.io", tmp_path)) == [f"{MIRROR}/v2"]


def test_default_namespace_applies_to_registries_without_their_own(tmp_path):
    write(tmp_path, "_default", f'[host."{MIRROR}"]\n')
    write(tmp_path, "quay.io", '[host."https://quay-mirror.example"]\n')
    assert urls(hosts_for("gcr.io", tmp_path)) == [f"{MIRROR}/v2", "https://gcr.io/v2"]
    assert urls(hosts_for("quay.io", tmp_path))[0] == "https://quay-mirror.example/v2"


def test_namespace_with_port_looks_for_host_port_underscore_first(tmp_path):
    (tmp_path / "myreg.io:5000").mkdir()
    assert find_namespace_dir("myreg.io:5000", tmp_path) == tmp_path / "myreg.io:5000"
    (tmp_path / "myreg.io_5000_").mkdir()
    assert find_namespace_dir("myreg.io:5000", tmp_path) == tmp_path / "myreg.io_5000_"
    assert find_namespace_dir("other.io", tmp_path) is None


def test_no_config_dir_gives_the_default_upstream(tmp_path):
    assert urls(hosts_for("docker.io", tmp_path / "missing")) == ["https://registry-1.docker.io/v2"]
    assert urls(hosts_for("example.com:5000", None)) == ["https://example.com:5000/v2"]


@pytest.mark.parametrize(
    ("domain", "scheme", "fallback", "skip_verify"),
    [
        ("localhost:5000", "https", True, True),  # ambiguous: HTTPS, then plain HTTP
        ("127.0.0.1:5000", "https", True, True),
        ("[::1]:5000", "https", True, True),
        ("127.0.0.1", "https", False, False),  # no port: HTTPS only
        ("127.0.0.1:443", "https", False, False),
        ("127.0.0.1:80", "http", False, False),
        ("10.0.0.1:5000", "https", False, False),  # not loopback: HTTPS only
        ("myregistry:5000", "https", False, False),
    ],
)
def test_plain_http_only_for_loopback_upstreams(domain, scheme, fallback, skip_verify):
    (host,) = hosts_for(domain, None)
    assert (host.scheme, host.http_fallback, host.skip_verify) == (scheme, fallback, skip_verify)


def test_http_host_with_tls_settings_tries_https_first(tmp_path):
    write(
        tmp_path, "docker.io",
        'server = "http://10.1.1.4:5000"\n'
        '[host."http://10.1.1.1:5000"]\n  ca = "ca.pem"\n'
        '[host."http://10.1.1.2:5000"]\n'
        '[host."http://10.1.1.3:80"]\n  skip_verify = true\n',
    )  # fmt: skip
    first, second, third, server = hosts_for("docker.io", tmp_path)
    assert (first.scheme, first.http_fallback) == ("https", True)
    assert first.ca == (str(tmp_path / "docker.io" / "ca.pem"),)
    assert (second.scheme, second.http_fallback) == ("http", False)
    assert (third.scheme, third.http_fallback, third.skip_verify) == ("http", False, True)
    assert (server.scheme, server.http_fallback) == ("http", False)


def test_all_host_fields(tmp_path):
    write(
        tmp_path, "registry.k8s.io",
        'ca = "upstream-ca.pem"\nclient = "upstream.pem"\n'
        '[host."https://mirror.example/v2/k8s"]\n'
        '  capabilities = ["PULL"]\n  override_path = true\n  skip_verify = true\n'
        '  ca = ["/etc/ca-1.pem", "ca-2.pem"]\n'
        '  client = [["c.cert", "c.key"], ["/abs/both.pem", ""]]\n'
        '  dial_timeout = "1m500ms"\n'
        '  [host."https://mirror.example/v2/k8s".header]\n    x-a = ["1", "2"]\n'
        '[host."https://plain.example"]\n  override_path = true\n'
    )  # fmt: skip
    base = tmp_path / "registry.k8s.io"
    mirror, plain, upstream = hosts_for("registry.k8s.io", tmp_path)
    assert (mirror.url, mirror.capabilities, mirror.skip_verify) == (
        "https://mirror.example/v2/k8s", {"pull"}, True,
    )  # fmt: skip
    assert mirror.ca == ("/etc/ca-1.pem", str(base / "ca-2.pem"))
    assert mirror.client == ((str(base / "c.cert"), str(base / "c.key")), ("/abs/both.pem", ""))
    assert mirror.dial_timeout == 60.5
    assert mirror.header == (("x-a", "1"), ("x-a", "2"))
    assert plain.url == "https://plain.example"
    assert upstream.url == "https://registry.k8s.io/v2"
    assert upstream.ca == (str(base / "upstream-ca.pem"),)
    assert upstream.client == ((str(base / "upstream.pem"), ""),)


def test_docker_certs_d_layout_without_hosts_toml(tmp_path):
    directory = tmp_path / "myreg.example"
    directory.mkdir()
    for name in ("ca.crt", "client.cert", "client.key", "readme.txt"):
        (directory / name).write_text("")
    (host,) = hosts_for("myreg.example", tmp_path)
    assert host.url == "https://myreg.example/v2"
    assert host.ca == (str(directory / "ca.crt"),)
    assert host.client == ((str(directory / "client.cert"), str(directory / "client.key")),)


@pytest.mark.parametrize(
    ("text", "words"),
    [
        ("server = ", "not valid TOML"),
        ('[host."https://m"]\n  capabilities = ["pull", "fly"]\n', "unknown capability 'fly'"),
        ('[host."ftp://m"]\n', "not an http:// or https:// host"),
        ('[host."https://m"]\n  skip_verify = "yes"\n', "skip_verify must be a bool"),
        ('[host."https://m"]\n  dial_timeout = "soon"\n', "not a duration"),
        ('[host."https://m"]\n  client = [["a"]]\n', "[cert, key] pairs"),
        ('[host."https://m".header]\n  x = 1\n', "header 'x' must be strings"),
        ("server = 5\n", "server must be a string"),
    ],
)
def test_a_bad_hosts_toml_is_refused_naming_the_file(tmp_path, text, words):
    write(tmp_path, "docker.io", text)
    with pytest.raises(InvalidArgument) as raised:
        hosts_for("docker.io", tmp_path)
    assert words in str(raised.value)
    assert str(tmp_path / "docker.io" / "hosts.toml") in str(raised.value)


def test_loopback_detection():
    assert all(map(is_loopback, ["localhost", "localhost:5000", "127.0.0.1", "127.9.9.9:1"]))
    assert all(map(is_loopback, ["[::1]:5000", "::1"]))
    assert not any(map(is_loopback, ["10.0.0.1:5000", "example.com", "localhost.example"]))


def test_docker_hub_upstream_gets_no_namespace_parameter():
    (hub,) = hosts_for("docker.io", None)
    assert not hub.needs_namespace("docker.io")
    assert hub.needs_namespace("quay.io")
