"""OpenTelemetry traces of the runtime's work: one span per CRI call, child spans for its steps.

    trace.setup(cfg)                    # once, in the daemon: off unless configured (settings.py)
    with trace.span("image.download", {"oci.blob.digest": digest}) as s:
        s.set_attribute("oci.blob.bytes", n)
    trace.container_event(container_id, "container.oom_kill", {...})   # lifecycle.py

Tracing is off by default, and then every helper here returns at once (a shared no-op span):
nothing of the OpenTelemetry SDK is imported, so the hot path pays one global check.
When on, spans go through a bounded queue (queue.py) to an OTLP exporter on its own thread;
a slow or dead collector costs dropped spans (counted in `stats`), never a slower CRI call.

Attributes come only from allow-listed fields (rpc.py, the call sites); `clean` also drops any
key that names a secret, so credentials, auth headers and environment values never get in.
"""

from __future__ import annotations

import threading

_tracer = None  # an SDK Tracer while tracing is on
_provider = None
_SECRET_WORDS = ("auth", "password", "passwd", "secret", "token", "credential", "cookie", "env")


class QueueStats:
    """What happened to finished spans; read by the Prometheus exporter (zeros while off)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.exported = 0
        self.dropped = {"queue_full": 0, "export_failed": 0}

    def add(self, exported: int = 0, **dropped: int) -> None:
        with self._lock:
            self.exported += exported
            for reason, count in dropped.items():
                self.dropped[reason] = self.dropped.get(reason, 0) + count

    def snapshot(self) -> tuple[int, dict[str, int]]:
        with self._lock:
            return self.exported, dict(self.dropped)


stats = QueueStats()


class _NoopSpan:
    """Stands in for a span while tracing is off: every method does nothing."""

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> bool:
        return False

    def set_attribute(self, key, value) -> None:
        pass

    def set_attributes(self, attributes) -> None:
        pass

    def add_event(self, name, attributes=None) -> None:
        pass

    def finish(self, *args, **kwargs) -> None:
        pass


NOOP = _NoopSpan()


def enabled() -> bool:
    return _tracer is not None


def clean(attributes: dict | None) -> dict:
    """Attributes without None values and without any key that names a secret."""
    if not attributes:
        return {}
    return {key: value for key, value in attributes.items()
            if value is not None and not any(w in key.lower() for w in _SECRET_WORDS)}  # fmt: skip


def span(name: str, attributes: dict | None = None):
    """A child span of the current one, as a context manager (NOOP while tracing is off)."""
    if _tracer is None:
        return NOOP
    return _tracer.start_as_current_span(name, attributes=clean(attributes))


def annotate(attributes: dict) -> None:
    """Add attributes to the current span (e.g. ids learnt halfway through a call)."""
    if _tracer is None:
        return
    from opentelemetry import trace as otel_trace

    otel_trace.get_current_span().set_attributes(clean(attributes))


def carry(function):
    """`function` bound to the caller's trace context, for a worker thread to run."""
    if _tracer is None:
        return function
    from opentelemetry import context

    captured = context.get_current()

    def run(*args, **kwargs):
        token = context.attach(captured)
        try:
            return function(*args, **kwargs)
        finally:
            context.detach(token)

    return run


def server_span(servicer, method: str, request, context):
    """The server span of one CRI call (rpc.py); use `finish(code, ...)` before it ends."""
    if _tracer is None:
        return NOOP
    from observe_rt.trace.rpc import ServerSpan

    return ServerSpan(_tracer, servicer, method, request, context)


def container_event(container_id: str, name: str, attributes: dict, error: str = "") -> None:
    """A runtime event (OOM kill, exit, shim death) linked to the container's lifecycle."""
    if _tracer is None:
        return
    from observe_rt.trace import lifecycle

    lifecycle.container_event(_tracer, container_id, name, clean(attributes), error)


def executor_steps(path: str) -> None:
    """Child spans for the steps the executor timed in the pod shim (its steps.json)."""
    if _tracer is None:
        return
    from observe_rt.trace import lifecycle

    lifecycle.executor_steps(_tracer, path)


def setup(cfg) -> bool:
    """Turn tracing on when the config or OTEL_* variables ask for it; True when on."""
    from observe_rt.trace.settings import TraceSettings

    settings = TraceSettings.resolve(cfg)
    if not settings.enabled:
        return False
    from observe_rt.trace.provider import build_provider

    install(build_provider(settings))
    return True


def install(provider) -> None:
    """Trace through `provider` (an SDK TracerProvider): setup() and the tests use this."""
    global _tracer, _provider
    _provider = provider
    _tracer = provider.get_tracer("observe_rt")


def shutdown(timeout_s: float = 5.0) -> None:
    """Export what is queued (at most `timeout_s`) and turn tracing off."""
    global _tracer, _provider
    provider, _tracer, _provider = _provider, None, None
    if provider is not None:
        provider.force_flush(int(timeout_s * 1000))
        provider.shutdown()
