"""A small OTLP/gRPC trace receiver on 127.0.0.1, built on opentelemetry-proto's service.

For `bench trace` (a live collector to export to) and the end-to-end tests:

    with OtlpReceiver() as receiver:          # listens on 127.0.0.1:<free port>
        ... point OTEL_EXPORTER_OTLP_TRACES_ENDPOINT at receiver.endpoint ...
        spans = receiver.wait_for(lambda spans: len(spans) >= 3, timeout=30)

It keeps every span with its resource attributes; it answers every Export with success.
"""

from __future__ import annotations

import threading
import time
from concurrent import futures
from dataclasses import dataclass

import grpc
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc


@dataclass(frozen=True)
class ReceivedSpan:
    resource: dict
    span: object  # opentelemetry.proto.trace.v1.trace_pb2.Span

    @property
    def name(self) -> str:
        return self.span.name

    @property
    def attributes(self) -> dict:
        return attribute_dict(self.span.attributes)


def attribute_dict(key_values) -> dict:
    """OTLP KeyValues as a plain dict (string, bool, int and double values)."""
    result = {}
    for kv in key_values:
        kind = kv.value.WhichOneof("value")
        result[kv.key] = getattr(kv.value, kind) if kind else None
    return result


class OtlpReceiver(trace_service_pb2_grpc.TraceServiceServicer):
    def __init__(self, address: str = "127.0.0.1:0") -> None:
        self._lock = threading.Condition()
        self._spans: list[ReceivedSpan] = []
        self.requests = 0
        pool = futures.ThreadPoolExecutor(max_workers=4, thread_name_prefix="otlp")
        self.server = grpc.server(pool)
        trace_service_pb2_grpc.add_TraceServiceServicer_to_server(self, self.server)
        self.port = self.server.add_insecure_port(address)
        self.endpoint = f"http://127.0.0.1:{self.port}"

    def Export(self, request, context):  # noqa: N802 - the gRPC method's name
        received = [
            ReceivedSpan(attribute_dict(rs.resource.attributes), span)
            for rs in request.resource_spans
            for ss in rs.scope_spans
            for span in ss.spans
        ]
        with self._lock:
            self.requests += 1
            self._spans.extend(received)
            self._lock.notify_all()
        return trace_service_pb2.ExportTraceServiceResponse()

    def spans(self) -> list[ReceivedSpan]:
        with self._lock:
            return list(self._spans)

    def wait_for(self, predicate, timeout: float = 30.0) -> list[ReceivedSpan]:
        """The spans once `predicate(spans)` holds; raises TimeoutError with what came."""
        deadline = time.monotonic() + timeout
        with self._lock:
            while not predicate(list(self._spans)):
                left = deadline - time.monotonic()
                if left <= 0:
                    names = sorted({s.name for s in self._spans})
                    raise TimeoutError(f"after {timeout:.0f}s the receiver has {len(self._spans)}"
                                       f" spans: {names}")  # fmt: skip
                self._lock.wait(left)
            return list(self._spans)

    def start(self) -> OtlpReceiver:
        self.server.start()
        return self

    def stop(self) -> None:
        self.server.stop(grace=1).wait()

    def __enter__(self) -> OtlpReceiver:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
