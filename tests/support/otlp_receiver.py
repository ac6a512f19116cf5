"""Collectors for the trace tests, all on 127.0.0.1 and stopped on exit, also when a test fails.

    with OtlpReceiver() as receiver: ...       # a real OTLP/gRPC receiver (observe_rt.trace)
    with OtlpHttpReceiver() as receiver: ...   # OTLP/HTTP protobuf, POST /v1/traces
    with silent_collector() as endpoint: ...   # accepts TCP connections and never answers

The receiver lives in the package because `observe-rt bench trace` exports to it as well.
"""

from __future__ import annotations

import contextlib
import socket
import threading

from observe_rt.trace.receiver import OtlpReceiver, ReceivedSpan, attribute_dict

__all__ = ["OtlpHttpReceiver", "OtlpReceiver", "ReceivedSpan", "attribute_dict",
           "silent_collector"]  # fmt: skip


@contextlib.contextmanager
def silent_collector():
    """An endpoint whose connections are accepted and then left hanging: a collector that is
    up but stuck, the worst case for an exporter (it waits for its own timeout)."""
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.bind(("127.0.0.1", 0))
    listener.listen(16)
    held: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        listener.settimeout(0.2)
        while not stop.is_set():
            with contextlib.suppress(TimeoutError, OSError):
                held.append(listener.accept()[0])

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{listener.getsockname()[1]}"
    finally:
        stop.set()
        thread.join(5)
        for conn in held:
            conn.close()
        listener.close()


class OtlpHttpReceiver:
    """OTLP/HTTP (protobuf) on 127.0.0.1: POST /v1/traces bodies, decoded into spans."""

    def __init__(self) -> None:
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

        from opentelemetry.proto.collector.trace.v1 import trace_service_pb2

        received: list[ReceivedSpan] = []
        self.spans = received

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - http.server's name
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                request = trace_service_pb2.ExportTraceServiceRequest.FromString(body)
                received.extend(ReceivedSpan(attribute_dict(rs.resource.attributes), span)
                                for rs in request.resource_spans for ss in rs.scope_spans
                                for span in ss.spans)  # fmt: skip
                answer = trace_service_pb2.ExportTraceServiceResponse().SerializeToString()
                self.send_response(200 if self.path == "/v1/traces" else 404)
                self.send_header("Content-Type", "application/x-protobuf")
                self.send_header("Content-Length", str(len(answer)))
                self.end_headers()
                self.wfile.write(answer)

            def log_message(self, *args) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.endpoint = f"http://127.0.0.1:{self.server.server_address[1]}/v1/traces"
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> OtlpHttpReceiver:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.server.shutdown()
        self.server.server_close()
        self._thread.join(5)
