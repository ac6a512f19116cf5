"""Collectors for the trace tests, all on 127.0.0.1 and stopped on exit, also when a test fails.

    with OtlpReceiver() as receiver: ...       # a real OTLP/gRPC receiver (observe_rt.trace)
    with silent_collector() as endpoint: ...   # accepts TCP connections and never answers

The receiver lives in the package because `observe-rt bench trace` exports to it as well.
"""

from __future__ import annotations

import contextlib
import socket
import threading

from observe_rt.trace.receiver import OtlpReceiver, ReceivedSpan, attribute_dict

__all__ = ["OtlpReceiver", "ReceivedSpan", "attribute_dict", "silent_collector"]


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
