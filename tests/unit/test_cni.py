"""CNI config loading, the execution plan (CNI_ARGS, env, stdin config), result and error
parsing, and the ADD/DEL chain driven against fake plugins: small shell scripts that record
what they were given and print a canned result."""

from __future__ import annotations

import json
import os
import stat
import time
from pathlib import Path

import pytest

from observe_rt.errors import FailedPrecondition, InvalidArgument, Unavailable
from observe_rt.network.cni import CniManager
from observe_rt.network.cni_config import CniConfig, CniConfigError, find_config_file, load_config
from observe_rt.network.cni_exec import (
    CniPluginError,
    CniPluginNotFound,
    NetworkResult,
    PortMapping,
    cni_args,
    exec_config,
    parse_plugin_output,
    plugin_env,
)
from observe_rt.network.counters import default_interface, parse_net_dev
from observe_rt.network.netns import netns_path

BRIDGE_RESULT = {
    "cniVersion": "1.0.0",
    "interfaces": [
        {"name": "cni0", "mac": "00:11:22:33:44:55"},
        {"name": "veth1", "mac": "00:11:22:33:44:56"},
        {"name": "eth0", "mac": "00:11:22:33:44:57", "sandbox": "/run/netns/p"},
    ],
    "ips": [{"address": "10.1.0.5/24", "gateway": "10.1.0.1", "interface": 2}],
}
TUNED_RESULT = {**BRIDGE_RESULT, "dns": {"nameservers": ["10.1.0.1"]}}


def conflist(*plugins: dict, version: str = "1.0.0") -> dict:
    return {"cniVersion": version, "name": "testnet", "plugins": list(plugins)}


def write(path: Path, data) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(data if isinstance(data, str) else json.dumps(data))
    return path


class FakePlugins:
    """Plugin scripts in a tmp bin dir; each run appends to `calls` and saves env and stdin."""

    def __init__(self, root: Path) -> None:
        self.bin = root / "bin"
        self.log = root / "log"
        self.bin.mkdir()
        self.log.mkdir()

    def add(self, name: str, result: dict | None = None, fail: dict | None = None,
            sleep: float = 0) -> None:  # fmt: skip
        out = json.dumps(fail if fail is not None else result or {})
        script = f"""#!/bin/sh
n=$(wc -l < {self.log}/calls 2>/dev/null || echo 0)
echo "{name} $CNI_COMMAND" >> {self.log}/calls
env | grep '^CNI_' | sort > {self.log}/$n.env
cat > {self.log}/$n.json
{f"sleep {sleep}" if sleep else ""}
[ "$CNI_COMMAND" = ADD ] || exit 0
echo '{out}'
exit {1 if fail is not None else 0}
"""
        path = self.bin / name
        path.write_text(script)
        path.chmod(path.stat().st_mode | stat.S_IXUSR)

    def calls(self) -> list[str]:
        path = self.log / "calls"
        return path.read_text().splitlines() if path.exists() else []

    def stdin(self, n: int) -> dict:
        return json.loads((self.log / f"{n}.json").read_text())

    def env(self, n: int) -> dict[str, str]:
        lines = (self.log / f"{n}.env").read_text().splitlines()
        return dict(line.split("=", 1) for line in lines)


@pytest.fixture
def fake(tmp_path) -> FakePlugins:
    return FakePlugins(tmp_path)


def manager(tmp_path: Path, fake: FakePlugins, conf: dict, **kw) -> CniManager:
    write(tmp_path / "conf" / "10-test.conflist", conf)
    return CniManager(str(tmp_path / "conf"), [str(fake.bin)], str(tmp_path / "cache"), **kw)


# --- config ----------------------------------------------------------------------------------


def test_first_config_by_name_wins_and_other_files_are_ignored(tmp_path):
    write(tmp_path / "20-b.conflist", conflist({"type": "b"}))
    write(tmp_path / "10-a.conf", {"cniVersion": "0.4.0", "name": "a", "type": "bridge"})
    write(tmp_path / "05-notes.txt", "not a config")
    write(tmp_path / ".00-hidden.conflist", "{}")
    assert find_config_file(str(tmp_path)) == str(tmp_path / "10-a.conf")
    config = load_config(str(tmp_path))
    # A single plugin file is wrapped into a list of one.
    assert (config.name, config.cni_version, config.plugin_types) == ("a", "0.4.0", ["bridge"])


def test_missing_or_empty_conf_dir_says_where_it_looked(tmp_path):
    for directory in (tmp_path, tmp_path / "absent"):
        with pytest.raises(CniConfigError, match=f"no network config found in {directory}$"):
            load_config(str(directory))


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("{not json", "not valid JSON"),
        ([], "expected a JSON object"),
        ({"cniVersion": "1.0.0", "name": "n"}, "a .conflist needs a plugins list"),
        (conflist(), "plugins must be a non-empty list"),
        ({**conflist({"type": "x"}), "name": "-bad"}, "network name '-bad'"),
        (conflist({"type": "x"}, version="0.2.0"), "too old"),
        (conflist({"type": "x"}, version="one"), "is not a version"),
        (conflist({"type": "../../bin/sh"}), r"plugins\[0\]: type '../../bin/sh'"),
        (conflist({"type": "x"}, {"ipam": {}}), r"plugins\[1\]: type None"),
        (conflist({"type": "pm", "capabilities": {"portMappings": "yes"}}), "capabilities"),
        ({**conflist({"type": "x"}), "disableCheck": "no"}, "disableCheck"),
    ],
)
def test_invalid_configs_are_rejected_with_the_file_and_field(tmp_path, content, message):
    path = write(tmp_path / "10-x.conflist", content)
    with pytest.raises(CniConfigError, match=message) as info:
        load_config(str(tmp_path))
    assert str(path) in str(info.value)
    assert isinstance(info.value, FailedPrecondition)


# --- the execution plan --------------------------------------------------------------------


def test_cni_args_follow_containerd_and_reject_separators():
    args = cni_args("pod1", "default", "web", "u-1")
    assert ";".join(f"{k}={v}" for k, v in args) == (
        "IgnoreUnknown=1;K8S_POD_NAMESPACE=default;K8S_POD_NAME=web;"
        "K8S_POD_INFRA_CONTAINER_ID=pod1;K8S_POD_UID=u-1"
    )
    with pytest.raises(InvalidArgument, match="K8S_POD_NAME"):
        cni_args("pod1", "default", "web;X=1", "u-1")


def test_plugin_env_carries_the_cni_parameters():
    env = plugin_env("ADD", "pod1", "/run/ns", "eth0", [("A", "1"), ("B", "2")], ["/x", "/y"])
    assert {k: v for k, v in env.items() if k != "PATH"} == {
        "CNI_COMMAND": "ADD", "CNI_CONTAINERID": "pod1", "CNI_NETNS": "/run/ns",
        "CNI_IFNAME": "eth0", "CNI_ARGS": "A=1;B=2", "CNI_PATH": "/x:/y",
    }  # fmt: skip
    assert env["PATH"]


def test_exec_config_injects_name_version_runtime_config_and_prev_result():
    plugin = {"type": "portmap", "capabilities": {"portMappings": True, "bandwidth": False},
              "snat": False}  # fmt: skip
    config = CniConfig.from_dict(conflist({"type": "bridge"}, plugin))
    caps = {"portMappings": [{"hostPort": 8080}], "bandwidth": {"x": 1}, "mac": "aa"}
    conf = exec_config(config, plugin, {"ips": []}, caps)
    assert conf == {
        "type": "portmap", "snat": False, "name": "testnet", "cniVersion": "1.0.0",
        "runtimeConfig": {"portMappings": [{"hostPort": 8080}]}, "prevResult": {"ips": []},
    }  # fmt: skip
    # No capability declared or requested: no runtimeConfig; the first plugin: no prevResult.
    assert exec_config(config, config.plugins[0], None, caps) == {
        "type": "bridge", "name": "testnet", "cniVersion": "1.0.0",
    }  # fmt: skip


def test_port_mappings_convert_to_the_cni_convention():
    assert PortMapping(8080, 80, "TCP").to_cni() == {
        "hostPort": 8080, "containerPort": 80, "protocol": "tcp",
    }  # fmt: skip
    assert PortMapping(53, 53, "udp", "127.0.0.1").to_cni()["hostIP"] == "127.0.0.1"
    with pytest.raises(InvalidArgument, match="protocol"):
        PortMapping(1, 1, "icmp").to_cni()
    with pytest.raises(InvalidArgument, match="container port 70000"):
        PortMapping(1, 70000).to_cni()
    as_dict = {"hostPort": 8080, "containerPort": 80, "protocol": "UDP", "hostIP": ""}
    assert PortMapping.coerce(as_dict) == PortMapping(8080, 80, "UDP")
    with pytest.raises(InvalidArgument, match="port mapping"):
        PortMapping.coerce({"hostPort": 1})


def test_result_ips_are_those_on_the_pod_interface_ipv4_first():
    result = {
        "interfaces": [
            {"name": "lo", "sandbox": "/ns"}, {"name": "br0"}, {"name": "eth0", "sandbox": "/ns"},
        ],
        "ips": [
            {"address": "fd00::5/64", "interface": 2}, {"address": "127.0.0.1/8", "interface": 0},
            {"address": "10.1.0.1/24", "interface": 1}, {"address": "10.1.0.5/24", "interface": 2},
        ],
    }  # fmt: skip
    assert NetworkResult.from_cni(result).ips == ["10.1.0.5", "fd00::5"]
    # 0.4.0 results carry a version field; IPAM-only results have no interface index.
    old = {"ips": [{"version": "4", "address": "10.2.0.9/16"}, {"address": "::1/128"}]}
    assert NetworkResult.from_cni(old).ips == ["10.2.0.9"]
    assert NetworkResult.from_cni(None).ips == []


def test_plugin_errors_keep_code_msg_details():
    out = b'{"cniVersion":"1.0.0","code":11,"msg":"busy","details":"lock held"}'
    with pytest.raises(CniPluginError) as info:
        parse_plugin_output("bridge", "ADD", 1, out, b"")
    err = info.value
    assert (err.plugin, err.command, err.code, err.msg, err.details) == (
        "bridge", "ADD", 11, "busy", "lock held",
    )  # fmt: skip
    assert str(err) == "CNI plugin bridge ADD failed (code 11: try again later): busy; lock held"
    assert isinstance(err, Unavailable)


def test_unstructured_failures_and_garbage_results_are_errors():
    with pytest.raises(CniPluginError, match="exit status 2: panic: boom"):
        parse_plugin_output("x", "DEL", 2, b"", b"panic: boom\n")
    with pytest.raises(CniPluginError, match="not JSON"):
        parse_plugin_output("x", "ADD", 0, b"hello", b"")
    assert parse_plugin_output("x", "DEL", 0, b"", b"") == {}


# --- the ADD/DEL chain against fake plugins --------------------------------------------------


def test_setup_chains_prev_results_and_passes_capabilities(tmp_path, fake):
    fake.add("bridge", BRIDGE_RESULT)
    fake.add("tuner", TUNED_RESULT)
    conf = conflist(
        {"type": "bridge", "bridge": "cni0"},
        {"type": "tuner", "capabilities": {"portMappings": True}},
    )
    cni = manager(tmp_path, fake, conf)
    ports = [PortMapping(8080, 80), {"hostPort": 0, "containerPort": 81, "protocol": "tcp"}]
    result = cni.setup("pod1", "/run/netns/p", "default", "web", "u-1", ports)
    assert result.ips == ["10.1.0.5"] and result.raw == TUNED_RESULT
    assert fake.calls() == ["bridge ADD", "tuner ADD"]
    first, second = fake.stdin(0), fake.stdin(1)
    assert "prevResult" not in first and "runtimeConfig" not in first
    assert second["prevResult"] == BRIDGE_RESULT
    assert second["runtimeConfig"] == {
        "portMappings": [{"hostPort": 8080, "containerPort": 80, "protocol": "tcp"}]
    }
    assert "capabilities" not in second
    env = fake.env(0)
    assert env["CNI_NETNS"] == "/run/netns/p" and env["CNI_IFNAME"] == "eth0"
    assert "K8S_POD_UID=u-1" in env["CNI_ARGS"] and env["CNI_PATH"] == str(fake.bin)
    assert cni.cached_result("pod1").ips == ["10.1.0.5"]


def test_teardown_runs_del_in_reverse_with_the_cached_config(tmp_path, fake):
    fake.add("bridge", BRIDGE_RESULT)
    fake.add("tuner", TUNED_RESULT)
    cni = manager(tmp_path, fake, conflist({"type": "bridge"}, {"type": "tuner"}))
    cni.setup("pod1", "/proc/self/ns/net", "default", "web", "u-1")
    # The config changes after ADD: DEL must still use the one the pod was added with.
    write(tmp_path / "conf" / "10-test.conflist", conflist({"type": "other"}))
    cni.teardown("pod1")
    assert fake.calls()[2:] == ["tuner DEL", "bridge DEL"]
    assert fake.stdin(2)["prevResult"] == TUNED_RESULT == fake.stdin(3)["prevResult"]
    assert fake.env(2)["CNI_NETNS"] == "/proc/self/ns/net"  # still a namespace: passed on
    assert fake.env(2)["CNI_ARGS"] == fake.env(0)["CNI_ARGS"]
    assert os.listdir(tmp_path / "cache") == [] and cni.cached_result("pod1") is None
    cni.teardown("pod1")  # idempotent: nothing cached, nothing run
    assert len(fake.calls()) == 4


def test_teardown_of_a_gone_netns_passes_an_empty_cni_netns(tmp_path, fake):
    fake.add("bridge", BRIDGE_RESULT)
    cni = manager(tmp_path, fake, conflist({"type": "bridge"}, version="0.3.1"))
    cni.setup("pod1", str(tmp_path / "gone"), "default", "web", "u-1")
    cni.teardown("pod1")
    assert fake.env(1)["CNI_COMMAND"] == "DEL" and fake.env(1)["CNI_NETNS"] == ""
    assert "prevResult" not in fake.stdin(1)  # DEL got prevResult only from spec 0.4.0 on


def test_failure_midway_undoes_added_plugins_and_names_the_failing_one(tmp_path, fake):
    fake.add("bridge", BRIDGE_RESULT)
    fake.add("broken", fail={"cniVersion": "1.0.0", "code": 7, "msg": "bad", "details": "why"})
    fake.add("never", BRIDGE_RESULT)
    cni = manager(
        tmp_path, fake, conflist({"type": "bridge"}, {"type": "broken"}, {"type": "never"})
    )
    with pytest.raises(CniPluginError, match="CNI plugin broken ADD failed .code 7") as info:
        cni.setup("pod1", "/run/netns/p", "default", "web", "u-1")
    assert (info.value.code, info.value.msg, info.value.details) == (7, "bad", "why")
    assert fake.calls() == ["bridge ADD", "broken ADD", "broken DEL", "bridge DEL"]
    assert fake.stdin(3)["prevResult"] == BRIDGE_RESULT
    assert os.listdir(tmp_path / "cache") == []  # rolled back fully: a retry may ADD again


def test_missing_plugin_fails_before_any_add_and_lists_the_dirs(tmp_path, fake):
    fake.add("bridge", BRIDGE_RESULT)
    cni = manager(tmp_path, fake, conflist({"type": "bridge"}, {"type": "nonexistent"}))
    with pytest.raises(CniPluginNotFound, match=f"'nonexistent' not found in {fake.bin}"):
        cni.setup("pod1", "/run/netns/p", "default", "web", "u-1")
    assert fake.calls() == []
    ready, reason = cni.status()
    assert not ready and "nonexistent" in reason and str(fake.bin) in reason


def test_plugin_timeout_kills_it(tmp_path, fake):
    fake.add("slow", BRIDGE_RESULT, sleep=30)
    cni = manager(tmp_path, fake, conflist({"type": "slow"}), timeout=0.5)
    started = time.monotonic()
    with pytest.raises(CniPluginError, match="slow ADD failed: timed out after 0.5s"):
        cni.setup("pod1", "/run/netns/p", "default", "web", "u-1")
    assert time.monotonic() - started < 10  # the rollback DEL sleeps too, and is killed too


def test_status_and_bad_arguments(tmp_path, fake):
    fake.add("bridge", BRIDGE_RESULT)
    empty = CniManager(str(tmp_path / "none"), [str(fake.bin)], str(tmp_path / "cache"))
    assert empty.status() == (False, f"no network config found in {tmp_path / 'none'}")
    conf = conflist({"type": "bridge", "ipam": {"type": "host-local"}})
    cni = manager(tmp_path, fake, conf)
    assert cni.status() == (False, (
        f"CNI plugin(s) host-local of network testnet ({tmp_path}/conf/10-test.conflist) "
        f"not found in {fake.bin}"
    ))  # fmt: skip
    fake.add("host-local", {})
    assert cni.status()[0] is True
    for pod_id, ifname in (("../x", "eth0"), ("", "eth0"), ("pod1", "a/b"), ("pod1", "x" * 16)):
        with pytest.raises(InvalidArgument):
            cni.setup(pod_id, "/ns", "default", "web", "u-1", ifname=ifname)
    cni.setup("pod1", "/ns", "default", "web", "u-1")
    with pytest.raises(FailedPrecondition, match="already has CNI network"):
        cni.setup("pod1", "/ns", "default", "web", "u-1")


# --- counters and names --------------------------------------------------------------------

NET_DEV = """\
Inter-|   Receive                                                |  Transmit
 face |bytes    packets errs drop fifo frame compressed multicast|bytes    packets errs drop fifo colls carrier compressed
    lo:     140       2    0    0    0     0          0         0      140       2    0    0    0     0       0          0
  eth0:    1000      10    1    2    0     0          0         0     2000      20    3    4    0     0       0          0
"""  # noqa: E501


def test_net_dev_counters_and_default_interface():
    counters = parse_net_dev(NET_DEV)
    eth0 = counters["eth0"]
    assert (eth0.rx_bytes, eth0.rx_packets, eth0.rx_errors, eth0.rx_dropped) == (1000, 10, 1, 2)
    assert (eth0.tx_bytes, eth0.tx_packets, eth0.tx_errors, eth0.tx_dropped) == (2000, 20, 3, 4)
    assert default_interface(counters) == "eth0"
    assert default_interface({"lo": counters["lo"], "net1": eth0}) == "net1"
    assert default_interface({}) is None


def test_netns_names_must_be_plain_file_names():
    assert netns_path("pod1", "/run/x") == "/run/x/pod1"
    for bad in ("", ".", "..", "a/b"):
        with pytest.raises(InvalidArgument):
            netns_path(bad)


def test_the_shipped_node_conflist_is_valid():
    conf_dir = Path(__file__).resolve().parents[2] / "deploy" / "cni"
    config = load_config(str(conf_dir))
    assert config.plugin_types == ["bridge", "portmap", "loopback"]
    assert config.plugins[0]["ipam"]["type"] == "host-local"
    assert config.plugins[1]["capabilities"] == {"portMappings": True}
