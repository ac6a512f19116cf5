"""Fuzz target: CNI configs, plugin output and results (network/cni_config.py, cni_exec.py, cni.py).

A node's conflist is validated (CniConfig.from_dict), each plugin's stdin is derived from it
(exec_config, with the previous result and capability args), the plugin's exit status and
output become a result or a CniPluginError (parse_plugin_output), and the pod's addresses come
out of the result (NetworkResult.from_cni). Config, output and port mappings are hostile.
Documented errors: ObserveRtError (CniConfigError, CniPluginError, InvalidArgument).
"""

from __future__ import annotations

import json
import sys

from tests.fuzz import harness

with harness.instrumented():
    from observe_rt.errors import ObserveRtError
    from observe_rt.network import cni, cni_exec
    from observe_rt.network.cni_config import CniConfig

CONFLIST = {
    "cniVersion": "1.0.0",
    "name": "observe-rt-test",
    "plugins": [
        {"type": "bridge", "bridge": "ort0", "ipam": {"type": "host-local", "ranges": [[]]}},
        {"type": "portmap", "capabilities": {"portMappings": True}},
        {"type": "tuning"},
    ],
}
RESULT = {
    "cniVersion": "1.0.0",
    "interfaces": [
        {"name": "ort0", "mac": "aa:bb:cc:dd:ee:ff"},
        {"name": "eth0", "sandbox": "/run/netns/x"},
        {"name": "lo", "sandbox": "/run/netns/x"},
    ],
    "ips": [
        {"address": "10.88.0.5/16", "interface": 1, "gateway": "10.88.0.1"},
        {"address": "fd00::5/64", "interface": 1},
        {"address": "127.0.0.1/8", "interface": 2},
    ],
}
ERROR = {"cniVersion": "1.0.0", "code": 7, "msg": "no IP addresses left", "details": "range full"}
PORT = {"hostPort": 8080, "containerPort": 80, "protocol": "tcp", "hostIP": "127.0.0.1"}


def one_input(data: bytes) -> None:
    fdp = harness.provider(data)
    conflist = harness.mutate_json(CONFLIST, fdp, 3)
    result = harness.mutate_json(fdp.PickValueInList([RESULT, ERROR]), fdp, 4)
    port = harness.mutate_json(PORT, fdp, 2)
    returncode = fdp.PickValueInList([0, 0, 1, 2, -9])
    stdout = json.dumps(result).encode() if fdp.ConsumeBool() else fdp.ConsumeBytes(300)
    stderr = fdp.ConsumeBytes(100)
    ifname = fdp.PickValueInList(["eth0", "lo", "", "a" * 20, "../x"])
    pod_id = fdp.PickValueInList(["a" * 64, "", "../../etc", "x;y=z"])
    try:
        add(conflist, result, port)
    except ObserveRtError:
        pass
    try:
        output = cni_exec.parse_plugin_output("bridge", "ADD", returncode, stdout, stderr)
        cni_exec.NetworkResult.from_cni(output, ifname)
    except ObserveRtError:
        pass
    try:
        cni._check_attachment(pod_id, ifname)
        cni_exec.cni_args(pod_id, "default", fdp.ConsumeUnicodeNoSurrogates(20), "uid")
    except ObserveRtError:
        pass


def add(conflist, result, port) -> None:
    """What CniManager.setup derives from a config before and between plugin runs."""
    config = CniConfig.from_dict(conflist, "fuzz.conflist")
    cni._all_plugin_types(config)
    capability_args = {"portMappings": [cni_exec.PortMapping.coerce(port).to_cni()]}
    prev = None
    for plugin in config.plugins:
        cni_exec.exec_config(config, plugin, prev, capability_args)
        prev = result if isinstance(result, dict) else None
    cni._del_prev(config, prev)


if __name__ == "__main__":
    harness.main("cni", one_input, [json.dumps(doc).encode() for doc in (CONFLIST, RESULT)])
    sys.exit(0)
