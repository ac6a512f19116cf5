"""Snapshot -> CRI stats messages: ContainerStats, PodSandboxStats, metric descriptors and values.

The stats RPCs answer from the collector's latest Snapshot, so their cost does not depend on
how often they are called:

    ListContainerStats     list_container_stats(snapshot, request.filter)
    ContainerStats         container_stats(snapshot, request.container_id)   (None: NotFound)
    ListPodSandboxStats    list_pod_sandbox_stats(snapshot, request.filter)
    PodSandboxStats        pod_sandbox_stats(snapshot, request.pod_sandbox_id)
    ListMetricDescriptors  metric_descriptors()                   (fixed for the process)
    ListPodSandboxMetrics  pod_sandbox_metrics(snapshot)
    ImageFsInfo            filesystem_usage(...) for image and container filesystems

Timestamps are each sample's own (they advance every tick); usage_nano_cores is left unset
until the collector has two samples. PSI totals are converted from µs to the ns CRI wants.
Metric values are UInt64: seconds series are whole seconds there, as in CRI-O.
"""

from __future__ import annotations

from observe_rt.cri.v1 import api_pb2
from observe_rt.model.series import SERIES, Subject, container_subject, pod_subject
from observe_rt.model.snapshot import (
    ContainerMetrics,
    CpuStats,
    FsStats,
    MemoryStats,
    NetworkStats,
    PodMetrics,
    Psi,
    PsiData,
    Snapshot,
)

_METRIC_TYPE = {"counter": api_pb2.COUNTER, "unknown": api_pb2.COUNTER, "gauge": api_pb2.GAUGE}


def _u64(value: int | float) -> api_pb2.UInt64Value:
    return api_pb2.UInt64Value(value=max(int(value), 0))


def _psi_data(data: PsiData | None) -> api_pb2.PsiData | None:
    if data is None:
        return None
    return api_pb2.PsiData(
        Total=data.total_us * 1000, Avg10=data.avg10, Avg60=data.avg60, Avg300=data.avg300
    )


def psi_stats(psi: Psi | None) -> api_pb2.PsiStats | None:
    if psi is None:
        return None
    return api_pb2.PsiStats(Full=_psi_data(psi.full), Some=_psi_data(psi.some))


def cpu_usage(ts: int, cpu: CpuStats) -> api_pb2.CpuUsage:
    msg = api_pb2.CpuUsage(timestamp=ts, usage_core_nano_seconds=_u64(cpu.usage_ns))
    if cpu.usage_nano_cores is not None:
        msg.usage_nano_cores.CopyFrom(_u64(cpu.usage_nano_cores))
    if cpu.psi is not None:
        msg.psi.CopyFrom(psi_stats(cpu.psi))
    return msg


def memory_usage(ts: int, mem: MemoryStats) -> api_pb2.MemoryUsage:
    msg = api_pb2.MemoryUsage(
        timestamp=ts,
        working_set_bytes=_u64(mem.working_set_bytes),
        available_bytes=_u64(mem.available_bytes),
        usage_bytes=_u64(mem.usage_bytes),
        rss_bytes=_u64(mem.rss_bytes),
        page_faults=_u64(mem.page_faults),
        major_page_faults=_u64(mem.major_page_faults),
    )
    if mem.psi is not None:
        msg.psi.CopyFrom(psi_stats(mem.psi))
    return msg


def filesystem_usage(ts: int, mountpoint: str, used_bytes: int, inodes_used: int):
    """A FilesystemUsage, for writable layers and for ImageFsInfo."""
    return api_pb2.FilesystemUsage(
        timestamp=ts,
        fs_id=api_pb2.FilesystemIdentifier(mountpoint=mountpoint),
        used_bytes=_u64(used_bytes),
        inodes_used=_u64(inodes_used),
    )


def _writable_layer(fs: FsStats) -> api_pb2.FilesystemUsage:
    return filesystem_usage(fs.timestamp_ns, fs.fs_id, fs.used_bytes, fs.inodes_used)


def _container_message(m: ContainerMetrics) -> api_pb2.ContainerStats:
    info, cg = m.info, m.cgroup
    msg = api_pb2.ContainerStats(
        attributes=api_pb2.ContainerAttributes(
            id=info.id,
            metadata=api_pb2.ContainerMetadata(name=info.name, attempt=info.attempt),
            labels=dict(info.labels),
            annotations=dict(info.annotations),
        )
    )
    if cg.cpu is not None:
        msg.cpu.CopyFrom(cpu_usage(cg.timestamp_ns, cg.cpu))
    if cg.memory is not None:
        msg.memory.CopyFrom(memory_usage(cg.timestamp_ns, cg.memory))
        msg.swap.CopyFrom(
            api_pb2.SwapUsage(
                timestamp=cg.timestamp_ns, swap_usage_bytes=_u64(cg.memory.swap_bytes)
            )
        )
    if m.fs is not None:
        msg.writable_layer.CopyFrom(_writable_layer(m.fs))
    if cg.io_psi is not None:
        msg.io.CopyFrom(api_pb2.IoUsage(timestamp=cg.timestamp_ns, psi=psi_stats(cg.io_psi)))
    return msg


def _resolve(ids, wanted: str) -> str | None:
    """`wanted` as a full id, or as a unique prefix of one (crictl lets people type those)."""
    if wanted in ids:
        return wanted
    matches = [i for i in ids if wanted and i.startswith(wanted)]
    return matches[0] if len(matches) == 1 else None


def _labels_match(labels, selector) -> bool:
    return all(labels.get(k) == v for k, v in selector.items())


def container_stats(snapshot: Snapshot, container_id: str) -> api_pb2.ContainerStats | None:
    """Stats of one container, or None when it is unknown or was not sampled this tick."""
    cid = _resolve(snapshot.containers, container_id)
    return _container_message(snapshot.containers[cid]) if cid else None


def list_container_stats(snapshot: Snapshot, filt=None) -> list[api_pb2.ContainerStats]:
    """Stats of every sampled container matching a ContainerStatsFilter (None: all)."""
    items = [snapshot.containers[cid] for cid in sorted(snapshot.containers)]
    if filt is not None and filt.id:
        cid = _resolve(snapshot.containers, filt.id)
        items = [snapshot.containers[cid]] if cid else []
    if filt is not None and filt.pod_sandbox_id:
        pod_id = _resolve(snapshot.pods, filt.pod_sandbox_id) or filt.pod_sandbox_id
        items = [m for m in items if m.info.pod_id == pod_id]
    if filt is not None and filt.label_selector:
        items = [m for m in items if _labels_match(m.info.labels, filt.label_selector)]
    return [_container_message(m) for m in items]


def _network_usage(net: NetworkStats) -> api_pb2.NetworkUsage:
    def one(i) -> api_pb2.NetworkInterfaceUsage:
        return api_pb2.NetworkInterfaceUsage(
            name=i.name,
            rx_bytes=_u64(i.rx_bytes),
            rx_errors=_u64(i.rx_errors),
            tx_bytes=_u64(i.tx_bytes),
            tx_errors=_u64(i.tx_errors),
        )

    msg = api_pb2.NetworkUsage(timestamp=net.timestamp_ns)
    default = net.interface(net.default_interface)
    if default is not None:
        msg.default_interface.CopyFrom(one(default))
    msg.interfaces.extend(one(i) for i in net.interfaces if i.name != net.default_interface)
    return msg


def _linux_pod_stats(snapshot: Snapshot, pod: PodMetrics) -> api_pb2.LinuxPodSandboxStats:
    linux = api_pb2.LinuxPodSandboxStats()
    cg = pod.cgroup
    if cg is not None and cg.cpu is not None:
        linux.cpu.CopyFrom(cpu_usage(cg.timestamp_ns, cg.cpu))
    if cg is not None and cg.memory is not None:
        linux.memory.CopyFrom(memory_usage(cg.timestamp_ns, cg.memory))
    if cg is not None and cg.processes is not None:
        linux.process.CopyFrom(
            api_pb2.ProcessUsage(
                timestamp=cg.timestamp_ns, process_count=_u64(cg.processes.processes)
            )
        )
    if cg is not None and cg.io_psi is not None:
        linux.io.CopyFrom(api_pb2.IoUsage(timestamp=cg.timestamp_ns, psi=psi_stats(cg.io_psi)))
    if pod.network is not None:
        linux.network.CopyFrom(_network_usage(pod.network))
    for cid in pod.container_ids:
        if cid in snapshot.containers:
            linux.containers.append(_container_message(snapshot.containers[cid]))
    return linux


def _pod_message(snapshot: Snapshot, pod: PodMetrics) -> api_pb2.PodSandboxStats:
    info = pod.info
    attributes = api_pb2.PodSandboxAttributes(
        id=info.id,
        metadata=api_pb2.PodSandboxMetadata(
            name=info.name, uid=info.uid, namespace=info.namespace, attempt=info.attempt
        ),
        labels=dict(info.labels),
        annotations=dict(info.annotations),
    )
    return api_pb2.PodSandboxStats(attributes=attributes, linux=_linux_pod_stats(snapshot, pod))


def pod_sandbox_stats(snapshot: Snapshot, pod_id: str) -> api_pb2.PodSandboxStats | None:
    pid = _resolve(snapshot.pods, pod_id)
    return _pod_message(snapshot, snapshot.pods[pid]) if pid else None


def list_pod_sandbox_stats(snapshot: Snapshot, filt=None) -> list[api_pb2.PodSandboxStats]:
    """Stats of every sampled pod matching a PodSandboxStatsFilter (None: all)."""
    pods = [snapshot.pods[p] for p in sorted(snapshot.pods)]
    if filt is not None and filt.id:
        pid = _resolve(snapshot.pods, filt.id)
        pods = [snapshot.pods[pid]] if pid else []
    if filt is not None and filt.label_selector:
        pods = [p for p in pods if _labels_match(p.info.labels, filt.label_selector)]
    return [_pod_message(snapshot, p) for p in pods]


# --- ListMetricDescriptors / ListPodSandboxMetrics ----------------------------------------

_DESCRIPTORS = tuple(
    api_pb2.MetricDescriptor(name=s.name, help=s.help, label_keys=list(s.label_names))
    for s in SERIES
)


def metric_descriptors() -> list[api_pb2.MetricDescriptor]:
    """Every metric ListPodSandboxMetrics may carry; the same set for the whole process."""
    out = []
    for desc in _DESCRIPTORS:
        copy = api_pb2.MetricDescriptor()
        copy.CopyFrom(desc)
        out.append(copy)
    return out


def _metrics(subject: Subject) -> list[api_pb2.Metric]:
    out = []
    for series in SERIES:
        for extra, value in series.values(subject):
            out.append(
                api_pb2.Metric(
                    name=series.name,
                    timestamp=subject.timestamp_ns,
                    metric_type=_METRIC_TYPE[series.kind],
                    label_values=list(subject.labels + extra),
                    value=_u64(value),
                )
            )
    return out


def pod_sandbox_metrics(snapshot: Snapshot) -> list[api_pb2.PodSandboxMetrics]:
    """One PodSandboxMetrics per sampled pod: pod-level series, then each container's."""
    out = []
    for pod_id in sorted(snapshot.pods):
        pod = snapshot.pods[pod_id]
        msg = api_pb2.PodSandboxMetrics(
            pod_sandbox_id=pod_id, metrics=_metrics(pod_subject(snapshot, pod))
        )
        for cid in pod.container_ids:
            m = snapshot.containers.get(cid)
            if m is not None:
                msg.container_metrics.append(
                    api_pb2.ContainerMetrics(
                        container_id=cid, metrics=_metrics(container_subject(snapshot, m))
                    )
                )
        out.append(msg)
    return out
