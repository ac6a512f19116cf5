"""The Stream* list RPCs: the List answer in chunks, the filter passed on."""

from __future__ import annotations

from observe_rt.cri import streamed
from observe_rt.cri.v1 import api_pb2


class FakeServicer:
    def __init__(self, count: int) -> None:
        self.count, self.seen = count, []

    def ListContainers(self, request, context):
        self.seen.append(request)
        return api_pb2.ListContainersResponse(
            containers=[api_pb2.Container(id=str(i)) for i in range(self.count)]
        )

    StreamContainers = streamed.rpc("ListContainers", api_pb2.ListContainersRequest, "containers",
                                    api_pb2.StreamContainersResponse, "containers")  # fmt: skip


def test_chunks_of_500_and_one_empty_answer_for_none():
    servicer = FakeServicer(1201)
    parts = list(servicer.StreamContainers(api_pb2.StreamContainersRequest(), None))
    assert [len(p.containers) for p in parts] == [500, 500, 201]
    assert [c.id for p in parts for c in p.containers] == [str(i) for i in range(1201)]
    assert [len(p.containers) for p in FakeServicer(0).StreamContainers(
        api_pb2.StreamContainersRequest(), None)] == [0]  # fmt: skip


def test_the_filter_reaches_the_list_rpc():
    servicer = FakeServicer(1)
    wanted = api_pb2.ContainerFilter(id="abc")
    list(servicer.StreamContainers(api_pb2.StreamContainersRequest(filter=wanted), None))
    list(servicer.StreamContainers(api_pb2.StreamContainersRequest(), None))
    assert servicer.seen[0].filter == wanted and not servicer.seen[1].HasField("filter")
    # A Stream request without a filter field at all (StreamPodSandboxMetrics) is fine too.
    assert streamed.list_request(api_pb2.ListPodSandboxMetricsRequest,
                                 api_pb2.StreamPodSandboxMetricsRequest()) is not None  # fmt: skip
