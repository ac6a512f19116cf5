"""The CRI RuntimeService (runtime.v1): pods, containers, runtime status.

Each RPC is a few lines: check the request, call Sandboxes or Containers, convert records
to messages (convert.py). Errors are raised as observe_rt.errors types and become status
codes in rpc.unary. Every RPC of runtime.v1 is answered; CheckpointContainer, which this runtime
does not offer, answers UNIMPLEMENTED with a message saying so.
"""

from __future__ import annotations

import contextlib
import json

from observe_rt import __version__, errors
from observe_rt.cri import convert, stats, streamed
from observe_rt.cri.containers import Containers
from observe_rt.cri.rpc import unary
from observe_rt.cri.sandboxes import Sandboxes
from observe_rt.cri.v1 import api_pb2, api_pb2_grpc


class RuntimeServicer(api_pb2_grpc.RuntimeServiceServicer):
    def __init__(self, sandboxes: Sandboxes, containers: Containers, network,
                 snapshot=None) -> None:  # fmt: skip
        self.sandboxes = sandboxes
        self.containers = containers
        self.network = network
        self.snapshot = snapshot  # the collector's latest Snapshot (stats answer from it)
        self.pod_cidr = ""

    # --- runtime --------------------------------------------------------------------------------

    @unary
    def Version(self, request, context):
        return api_pb2.VersionResponse(version="0.1.0", runtime_name="observe-rt",
                                       runtime_version=__version__,
                                       runtime_api_version="v1")  # fmt: skip

    @unary
    def Status(self, request, context):
        ready, reason = self.network.status()
        conditions = [
            api_pb2.RuntimeCondition(type="RuntimeReady", status=True),
            api_pb2.RuntimeCondition(
                type="NetworkReady",
                status=ready,
                reason="" if ready else "NetworkPluginNotReady",
                message="" if ready else reason,
            ),  # fmt: skip
        ]
        info = {"config": json.dumps({"podCIDR": self.pod_cidr})} if request.verbose else {}
        return api_pb2.StatusResponse(status=api_pb2.RuntimeStatus(conditions=conditions),
                                      info=info)  # fmt: skip

    @unary
    def RuntimeConfig(self, request, context):
        linux = api_pb2.LinuxRuntimeConfiguration(cgroup_driver=api_pb2.CGROUPFS)
        return api_pb2.RuntimeConfigResponse(linux=linux)

    @unary
    def UpdateRuntimeConfig(self, request, context):
        self.pod_cidr = request.runtime_config.network_config.pod_cidr
        return api_pb2.UpdateRuntimeConfigResponse()

    # --- pods -----------------------------------------------------------------------------------

    @unary
    def RunPodSandbox(self, request, context):
        record = self.sandboxes.run(request.config, request.runtime_handler)
        return api_pb2.RunPodSandboxResponse(pod_sandbox_id=record.id)

    @unary
    def StopPodSandbox(self, request, context):
        try:
            record = self.sandboxes.get(request.pod_sandbox_id)
        except errors.NotFound:
            return api_pb2.StopPodSandboxResponse()  # CRI: stopping twice is not an error
        for container in self.containers.of_sandbox(record.id):
            self.containers.stop(container, 0)
        self.sandboxes.stop(record)
        return api_pb2.StopPodSandboxResponse()

    @unary
    def RemovePodSandbox(self, request, context):
        try:
            record = self.sandboxes.get(request.pod_sandbox_id)
        except errors.NotFound:
            return api_pb2.RemovePodSandboxResponse()  # CRI: removing twice is not an error
        for container in self.containers.of_sandbox(record.id):
            self.containers.remove(container)
        self.sandboxes.remove(record)
        return api_pb2.RemovePodSandboxResponse()

    @unary
    def PodSandboxStatus(self, request, context):
        record = self.sandboxes.get(request.pod_sandbox_id)
        status = convert.sandbox_status(record)
        info = {}
        if request.verbose:
            info["info"] = json.dumps(convert.sandbox_info(record, self.sandboxes.shim(record)))
        return api_pb2.PodSandboxStatusResponse(status=status, info=info)

    @unary
    def ListPodSandbox(self, request, context):
        wanted = request.filter if request.HasField("filter") else None
        # From memory: the exit watcher marks pods whose shim died NOTREADY within 0.5 s.
        items = [convert.sandbox(r) for r in self.sandboxes.store.all() if r.state != "CREATING"]
        return api_pb2.ListPodSandboxResponse(items=convert.filter_sandboxes(items, wanted))

    # --- containers -----------------------------------------------------------------------------

    @unary
    def CreateContainer(self, request, context):
        sandbox = self.sandboxes.get(request.pod_sandbox_id)
        record = self.containers.create(sandbox, request.config, request.sandbox_config)
        return api_pb2.CreateContainerResponse(container_id=record.id)

    @unary
    def StartContainer(self, request, context):
        self.containers.start(self.containers.get(request.container_id))
        return api_pb2.StartContainerResponse()

    @unary
    def StopContainer(self, request, context):
        with contextlib.suppress(errors.NotFound):  # CRI: stopping twice is not an error
            self.containers.stop(self.containers.get(request.container_id), request.timeout)
        return api_pb2.StopContainerResponse()

    @unary
    def RemoveContainer(self, request, context):
        with contextlib.suppress(errors.NotFound):  # CRI: removing twice is not an error
            self.containers.remove(self.containers.get(request.container_id))
        return api_pb2.RemoveContainerResponse()

    @unary
    def ContainerStatus(self, request, context):
        record = self.containers.get(request.container_id)
        info = {}
        if request.verbose:
            info["info"] = json.dumps(convert.container_info(record))
        return api_pb2.ContainerStatusResponse(status=convert.container_status(record),
                                               info=info)  # fmt: skip

    @unary
    def ListContainers(self, request, context):
        wanted = request.filter if request.HasField("filter") else None
        # From memory, as containerd answers: the exit watcher folds exits in within 0.5 s
        # (re-reading every shim's files here cost 20 ms per call at 100 containers).
        records = [r for r in self.containers.store.all() if r.bundle and r.state != "CREATING"]
        items = [convert.container(r) for r in records]
        return api_pb2.ListContainersResponse(containers=convert.filter_containers(items, wanted))

    @unary
    def ExecSync(self, request, context):
        record = self.containers.get(request.container_id)
        result = self.containers.exec_sync(record, list(request.cmd), request.timeout)
        return api_pb2.ExecSyncResponse(stdout=result.stdout, stderr=result.stderr,
                                        exit_code=result.exit_code)  # fmt: skip

    @unary
    def Exec(self, request, context):
        return api_pb2.ExecResponse(url=self._streams().exec_url(request))

    @unary
    def Attach(self, request, context):
        return api_pb2.AttachResponse(url=self._streams().attach_url(request))

    @unary
    def PortForward(self, request, context):
        return api_pb2.PortForwardResponse(url=self._streams().portforward_url(request))

    def _streams(self):
        streams = getattr(self, "streams", None)  # set by server.build_server
        if streams is None:
            raise errors.Unavailable("the streaming server is not running")
        return streams

    @unary
    def UpdateContainerResources(self, request, context):
        record = self.containers.get(request.container_id)
        self.containers.update_resources(record, request.linux)
        return api_pb2.UpdateContainerResourcesResponse()

    @unary
    def UpdatePodSandboxResources(self, request, context):
        sandbox = self.sandboxes.get(request.pod_sandbox_id)
        self.sandboxes.update_resources(sandbox, request.resources)
        return api_pb2.UpdatePodSandboxResourcesResponse()

    @unary
    def CheckpointContainer(self, request, context):
        self.containers.get(request.container_id)  # an unknown id is still NotFound
        raise errors.Unimplemented(
            "CheckpointContainer: observe-rt does not checkpoint containers (no CRIU support); "
            "disable the kubelet's ContainerCheckpoint feature gate for this node"
        )

    def GetContainerEvents(self, request, context):
        """Stream lifecycle events until the client goes away (each client has its own queue)."""
        subscription = self.containers.bus.subscribe()
        try:
            while context.is_active():
                event = subscription.get(timeout=0.5)
                if event is not None:
                    yield self._event_message(event)
        finally:
            subscription.close()

    def _event_message(self, event) -> api_pb2.ContainerEventResponse:
        kinds = {"CREATED": api_pb2.CONTAINER_CREATED_EVENT,
                 "STARTED": api_pb2.CONTAINER_STARTED_EVENT,
                 "STOPPED": api_pb2.CONTAINER_STOPPED_EVENT,
                 "DELETED": api_pb2.CONTAINER_DELETED_EVENT}  # fmt: skip
        message = api_pb2.ContainerEventResponse(
            container_id=event.container_id, container_event_type=kinds[event.kind],
            created_at=event.at_ns,
        )  # fmt: skip
        with contextlib.suppress(errors.NotFound):
            sandbox = self.sandboxes.get(event.sandbox_id)
            message.pod_sandbox_status.CopyFrom(convert.sandbox_status(sandbox))
            for record in self.containers.of_sandbox(sandbox.id):
                message.containers_statuses.append(convert.container_status(record))
        return message

    # --- stats: answered from the collector's latest snapshot, never from the kernel -------------

    def _latest(self):
        if self.snapshot is None:
            raise errors.Unavailable("stats are not collected by this daemon")
        return self.snapshot()

    @unary
    def ContainerStats(self, request, context):
        found = stats.container_stats(self._latest(), request.container_id)
        if found is None:
            raise errors.NotFound(f"no stats for container {request.container_id!r} (not running?)")
        return api_pb2.ContainerStatsResponse(stats=found)

    @unary
    def ListContainerStats(self, request, context):
        wanted = request.filter if request.HasField("filter") else None
        found = stats.list_container_stats(self._latest(), wanted)
        return api_pb2.ListContainerStatsResponse(stats=found)

    @unary
    def PodSandboxStats(self, request, context):
        found = stats.pod_sandbox_stats(self._latest(), request.pod_sandbox_id)
        if found is None:
            raise errors.NotFound(f"no stats for pod sandbox {request.pod_sandbox_id!r}")
        return api_pb2.PodSandboxStatsResponse(stats=found)

    @unary
    def ListPodSandboxStats(self, request, context):
        wanted = request.filter if request.HasField("filter") else None
        found = stats.list_pod_sandbox_stats(self._latest(), wanted)
        return api_pb2.ListPodSandboxStatsResponse(stats=found)

    @unary
    def ListMetricDescriptors(self, request, context):
        return api_pb2.ListMetricDescriptorsResponse(descriptors=stats.metric_descriptors())

    @unary
    def ListPodSandboxMetrics(self, request, context):
        metrics = stats.pod_sandbox_metrics(self._latest())
        return api_pb2.ListPodSandboxMetricsResponse(pod_metrics=metrics)

    @unary
    def ReopenContainerLog(self, request, context):
        self.containers.reopen_log(self.containers.get(request.container_id))
        return api_pb2.ReopenContainerLogResponse()

    # --- Stream* lists: the List RPC's answer in chunks (streamed.py) ---------------------------

    StreamPodSandboxes = streamed.rpc(
        "ListPodSandbox",
        api_pb2.ListPodSandboxRequest,
        "items",
        api_pb2.StreamPodSandboxesResponse,
        "pod_sandboxes",
    )
    StreamContainers = streamed.rpc(
        "ListContainers",
        api_pb2.ListContainersRequest,
        "containers",
        api_pb2.StreamContainersResponse,
        "containers",
    )
    StreamContainerStats = streamed.rpc(
        "ListContainerStats",
        api_pb2.ListContainerStatsRequest,
        "stats",
        api_pb2.StreamContainerStatsResponse,
        "container_stats",
    )
    StreamPodSandboxStats = streamed.rpc(
        "ListPodSandboxStats",
        api_pb2.ListPodSandboxStatsRequest,
        "stats",
        api_pb2.StreamPodSandboxStatsResponse,
        "pod_sandbox_stats",
    )
    StreamPodSandboxMetrics = streamed.rpc("ListPodSandboxMetrics",
                                           api_pb2.ListPodSandboxMetricsRequest, "pod_metrics",
                                           api_pb2.StreamPodSandboxMetricsResponse,
                                           "pod_sandbox_metrics")  # fmt: skip
