"""Pod networking: pinned network namespaces, CNI plugin invocation, interface counters.

    netns.py       create/bind/remove namespace files under /run/observe-rt/netns, lo up
    cni_config.py  find, load and validate the node's CNI config (/etc/cni/net.d)
    cni.py         CniManager: status, setup (ADD chain), teardown (DEL chain), result cache
    counters.py    per-interface counters of a pod's namespace for stats and metrics

The daemon's use, per pod with its own network namespace:

    path = netns.bind_netns(shim_pid, netns.netns_path(pod_id))
    result = cni.setup(pod_id, path, namespace, name, uid, port_mappings)  # result.ips
    ...
    cni.teardown(pod_id)          # idempotent; works after the namespace is gone
    netns.remove_netns(path)

The loopback plugin in the conflist sets lo up; `netns.bring_up_loopback` does it for
configs without it.
"""
