"""What every CRI RPC shares: errors become gRPC status codes with the message kept.

An ObserveRtError carries its status code (errors.py); anything else is a bug and answers
INTERNAL with the exception's text, so the daemon keeps serving. The daemon adds logging,
tracing and readiness here, in one place, when it wraps its servicers.
"""

from __future__ import annotations

import errno
import functools
import logging
import time

import grpc

from observe_rt import trace
from observe_rt.errors import ObserveRtError

log = logging.getLogger("observe_rt.cri")
# Called after every RPC with (method, seconds, status code name): the metrics exporter.
observers: list = []


def _observe(method: str, seconds: float, code: str) -> None:
    for observer in observers:
        try:
            observer(method, seconds, code)
        except Exception:  # noqa: BLE001 - metrics must never fail a call
            log.exception("RPC observer failed")


def disk_full(error: BaseException | None) -> bool:
    """ENOSPC or EDQUOT anywhere in the error's chain of causes."""
    seen: set[int] = set()
    while error is not None and id(error) not in seen:  # a chain may loop (raise e from e)
        if isinstance(error, OSError) and error.errno in (errno.ENOSPC, errno.EDQUOT):
            return True
        seen.add(id(error))
        error = error.__cause__ or error.__context__
    return False


def status_code(error: BaseException) -> grpc.StatusCode:
    if disk_full(error):  # not a bug: the node needs space; the kubelet backs off and retries
        return grpc.StatusCode.RESOURCE_EXHAUSTED
    if isinstance(error, ObserveRtError):
        return getattr(grpc.StatusCode, error.grpc_code, grpc.StatusCode.INTERNAL)
    return grpc.StatusCode.INTERNAL


def unary(method):
    """Decorate a servicer method: log it, and turn raised errors into a status code."""

    @functools.wraps(method)
    def wrapper(self, request, context):
        started = time.monotonic()
        # The server span (a no-op while tracing is off) joins the caller's trace.
        with trace.server_span(self, method.__name__, request, context) as call:
            try:
                response = method(self, request, context)
            except Exception as error:  # noqa: BLE001 - every failure becomes a status
                code = status_code(error)
                if code == grpc.StatusCode.INTERNAL:
                    log.exception("%s failed", method.__name__)
                else:
                    log.info("%s: %s: %s", method.__name__, code.name, error)
                call.finish(code, error)
                _observe(method.__name__, time.monotonic() - started, code.name)
                message = str(error) or type(error).__name__
                if code == grpc.StatusCode.RESOURCE_EXHAUSTED:
                    message += " (the runtime's state or image disk is full: free space and retry)"
                context.abort(code, message)
            call.finish(grpc.StatusCode.OK, response=response)
        seconds = time.monotonic() - started
        _observe(method.__name__, seconds, "OK")
        log.debug("%s ok in %.1f ms", method.__name__, seconds * 1000)
        return response

    return wrapper
