"""CNI with the real plugins in /usr/lib/cni on the real kernel.

Every test network is sealed: its own bridge (ort-t<random>), a private /24 from host-local in
a tmp dataDir, no gateway on the bridge, no routes, no masquerading. The only traffic is ping
between two test namespaces on that bridge.
"""

from __future__ import annotations

import ipaddress
import json
import os
import random
import shutil
import subprocess
import threading
import time
import uuid
from pathlib import Path

import pytest

from observe_rt.errors import AlreadyExists
from observe_rt.network import netns
from observe_rt.network.cni import CniManager
from observe_rt.network.cni_exec import CniPluginError, CniPluginNotFound, PortMapping
from observe_rt.network.counters import read_netns_counters

SYSTEM_BIN = "/usr/lib/cni"
PING = ["ping"] if shutil.which("ping") else ["busybox", "ping"]

pytestmark = pytest.mark.skipif(
    not os.path.exists(f"{SYSTEM_BIN}/bridge"), reason="CNI plugins not installed"
)


def run(*argv: str, check: bool = True) -> subprocess.CompletedProcess:
    return subprocess.run(argv, capture_output=True, text=True, check=check, timeout=30)


def links(*args: str) -> list[dict]:
    return json.loads(run("ip", "-j", "link", "show", *args, check=False).stdout or "[]")


def ns_addrs(path: str) -> dict[str, dict]:
    out = run("nsenter", f"--net={path}", "ip", "-j", "addr", "show").stdout
    return {link["ifname"]: link for link in json.loads(out)}


class SealedNet:
    """A sealed test network and everything made on it, all removed by `cleanup`."""

    def __init__(self, tmp: Path) -> None:
        self.tag = uuid.uuid4().hex[:6]
        self.bridge = f"ort-t{self.tag}"
        self.name = f"ort-test-{self.tag}"
        self.subnet = ipaddress.ip_network(
            f"10.{random.randint(200, 250)}.{random.randrange(256)}.0/24"
        )
        self.tmp = tmp
        self.ipam_dir = tmp / "ipam"
        self.bin_dir = tmp / "bin"
        self.bin_dir.mkdir()
        self.paths: list[str] = []
        # Its own namespace directory: the runtime's /run/observe-rt/netns is left alone.
        self.netns_dir = str(tmp / "netns")
        self.managers: list[tuple[CniManager, str]] = []

    def bridge_plugin(self) -> dict:
        return {
            "type": "bridge", "bridge": self.bridge, "isGateway": False, "ipMasq": False,
            "ipam": {"type": "host-local", "ranges": [[{"subnet": str(self.subnet)}]],
                     "dataDir": str(self.ipam_dir)},
        }  # fmt: skip

    def manager(self, *plugins: dict) -> CniManager:
        conf_dir = self.tmp / "conf"
        conf_dir.mkdir(exist_ok=True)
        plugins = plugins or (self.bridge_plugin(), {"type": "loopback"})
        conf = {"cniVersion": "1.0.0", "name": self.name, "plugins": list(plugins)}
        (conf_dir / "10-test.conflist").write_text(json.dumps(conf))
        bins = [str(self.bin_dir), SYSTEM_BIN]
        return CniManager(str(conf_dir), bins, str(self.tmp / "cache"), timeout=30)

    def new_netns(self) -> str:
        path = netns.netns_path(f"{self.name}-{len(self.paths)}", self.netns_dir)
        self.paths.append(path)
        return netns.create_netns(path)

    def setup(self, cni: CniManager, pod_id: str, path: str, **kw):
        self.managers.append((cni, pod_id))
        return cni.setup(pod_id, path, "default", pod_id, f"uid-{pod_id}", **kw)

    def allocated(self) -> set[str]:
        directory = self.ipam_dir / self.name
        return {n for n in os.listdir(directory) if n[0].isdigit()} if directory.exists() else set()

    def cleanup(self) -> None:
        for cni, pod_id in self.managers:
            try:
                cni.teardown(pod_id)
            except Exception as err:  # cleanup goes on; the test has failed already
                print(f"cleanup: teardown {pod_id}: {err}")
        for path in self.paths:
            netns.remove_netns(path)
        run("umount", "-l", self.netns_dir, check=False)  # the directory's own shared mount
        run("ip", "link", "del", self.bridge, check=False)


@pytest.fixture
def net(tmp_path):
    test_net = SealedNet(tmp_path)
    yield test_net
    test_net.cleanup()


def wait_for(predicate, timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


def test_setup_gives_eth0_an_address_from_the_subnet_and_lo_up(net):
    cni = net.manager()
    assert cni.status() == (True, f"network {net.name} from {net.tmp}/conf/10-test.conflist")
    path = net.new_netns()
    result = net.setup(cni, "pod-a", path)
    [ip] = result.ips
    assert ipaddress.ip_address(ip) in net.subnet
    addrs = ns_addrs(path)
    assert ip in [a["local"] for a in addrs["eth0"]["addr_info"]]
    assert "UP" in addrs["lo"]["flags"]
    assert links(net.bridge), "the bridge exists on the host"
    routes = run("nsenter", f"--net={path}", "ip", "route").stdout
    assert "default" not in routes and str(net.subnet) in routes
    assert net.allocated() == {ip}
    assert cni.cached_result("pod-a").ips == [ip]


def test_two_pods_on_the_bridge_ping_each_other(net):
    cni = net.manager()
    a, b = net.new_netns(), net.new_netns()
    ip_a = net.setup(cni, "pod-a", a).ips[0]
    ip_b = net.setup(cni, "pod-b", b).ips[0]
    assert ip_a != ip_b
    for src, dst in ((a, ip_b), (b, ip_a)):
        ping = run("nsenter", f"--net={src}", *PING, "-c1", "-W1", dst, check=False)
        assert ping.returncode == 0, ping.stdout + ping.stderr
    eth0 = read_netns_counters(b)["eth0"]
    assert eth0.rx_packets >= 1 and eth0.tx_packets >= 1


def test_teardown_removes_the_veth_releases_the_ip_and_is_idempotent(net):
    cni = net.manager()
    path = net.new_netns()
    result = net.setup(cni, "pod-a", path)
    host_veths = [i["name"] for i in result.interfaces if i["name"].startswith("veth")]
    assert host_veths and links(host_veths[0])
    cni.teardown("pod-a")
    assert links("master", net.bridge) == [] and links(host_veths[0]) == []
    assert net.allocated() == set()
    assert "eth0" not in ns_addrs(path)
    cni.teardown("pod-a")
    cni.teardown("pod-a", path)


def test_teardown_after_the_netns_was_removed_still_releases_the_ip(net):
    cni = net.manager()
    path = net.new_netns()
    net.setup(cni, "pod-a", path)
    netns.remove_netns(path)
    assert not os.path.exists(path)
    cni.teardown("pod-a")
    assert net.allocated() == set()
    # The kernel frees a dead namespace (and its veth end) asynchronously.
    assert wait_for(lambda: links("master", net.bridge) == [])


def test_a_failing_plugin_midway_undoes_the_bridge(net):
    failing = net.bin_dir / "ort-fail"
    failing.write_text(
        '#!/bin/sh\ncat >/dev/null\n[ "$CNI_COMMAND" = ADD ] || exit 0\n'
        'echo \'{"cniVersion":"1.0.0","code":100,"msg":"refused","details":"by the test"}\'\n'
        "exit 1\n"
    )
    failing.chmod(0o755)
    cni = net.manager(net.bridge_plugin(), {"type": "ort-fail"})
    path = net.new_netns()
    with pytest.raises(CniPluginError) as info:
        net.setup(cni, "pod-a", path)
    assert str(info.value) == "CNI plugin ort-fail ADD failed (code 100): refused; by the test"
    assert links("master", net.bridge) == []
    assert "eth0" not in ns_addrs(path)
    assert net.allocated() == set()
    assert not os.listdir(net.tmp / "cache")


def test_a_missing_plugin_fails_before_anything_is_made(net):
    cni = net.manager(net.bridge_plugin(), {"type": "ort-nonexistent"})
    path = net.new_netns()
    with pytest.raises(CniPluginNotFound) as info:
        net.setup(cni, "pod-a", path)
    assert str(info.value) == (
        f"CNI plugin 'ort-nonexistent' not found in {net.bin_dir}, {SYSTEM_BIN}"
    )
    assert links(net.bridge) == [] and "eth0" not in ns_addrs(path)


def test_status_with_an_empty_conf_dir(tmp_path):
    cni = CniManager(str(tmp_path), [SYSTEM_BIN], str(tmp_path / "cache"))
    assert cni.status() == (False, f"no network config found in {tmp_path}")


def test_bind_netns_pins_the_namespace_of_a_process(net):
    holder = subprocess.Popen(["unshare", "--net", "sleep", "60"])
    try:
        own = os.stat("/proc/self/ns/net").st_ino
        assert wait_for(lambda: os.stat(f"/proc/{holder.pid}/ns/net").st_ino != own)
        path = netns.netns_path(f"{net.name}-held", net.netns_dir)
        net.paths.append(path)
        netns.bind_netns(holder.pid, path)
        assert os.stat(path).st_ino == os.stat(f"/proc/{holder.pid}/ns/net").st_ino
    finally:
        holder.kill()
        holder.wait()
    assert netns.is_netns(path)  # outlives the process
    cni = net.manager()
    assert net.setup(cni, "pod-a", path).ips
    cni.teardown("pod-a")
    netns.remove_netns(path)
    assert not os.path.exists(path) and not netns.is_netns(path)
    netns.remove_netns(path)


def test_create_netns_leaves_the_daemon_thread_alone_and_loopback_comes_up(net):
    before = os.stat(f"/proc/self/task/{threading.get_native_id()}/ns/net").st_ino
    path = net.new_netns()
    assert os.stat(f"/proc/self/task/{threading.get_native_id()}/ns/net").st_ino == before
    assert os.stat(path).st_ino != before
    assert "UP" not in ns_addrs(path)["lo"]["flags"]
    netns.bring_up_loopback(path)
    assert "UP" in ns_addrs(path)["lo"]["flags"]
    with pytest.raises(AlreadyExists):
        netns.create_netns(path)


def test_portmap_gets_the_port_mappings_and_removes_its_rules(net):
    # Rules only: no packet is sent to the mapped port. snat off: no masquerading.
    portmap = {"type": "portmap", "capabilities": {"portMappings": True}, "snat": False}
    cni = net.manager(net.bridge_plugin(), portmap, {"type": "loopback"})
    port = random.randint(40000, 49999)
    ip = net.setup(cni, "pod-a", net.new_netns(), port_mappings=[
        PortMapping(port, 80, "TCP", "127.0.0.1"), PortMapping(0, 81),  # 0: no hostPort
    ]).ips[0]  # fmt: skip
    rules = run("iptables-save", "-t", "nat").stdout
    assert f"--dport {port}" in rules and f"{ip}:80" in rules and ":81" not in rules
    cni.teardown("pod-a")
    assert f"--dport {port}" not in run("iptables-save", "-t", "nat").stdout
