"""Exception types of observe-rt, each meaning one kind of failure.

The CRI server maps each to one gRPC status code (the `grpc_code` name); the command line
prints the message and exits non-zero. Messages name the field or object at fault so a person
can act on them.
"""


class ObserveRtError(Exception):
    grpc_code = "INTERNAL"


class InvalidArgument(ObserveRtError):
    """The request or config is malformed (a field has a wrong value)."""

    grpc_code = "INVALID_ARGUMENT"


class NotFound(ObserveRtError):
    grpc_code = "NOT_FOUND"


class AlreadyExists(ObserveRtError):
    grpc_code = "ALREADY_EXISTS"


class FailedPrecondition(ObserveRtError):
    """The object exists but is in the wrong state for the operation."""

    grpc_code = "FAILED_PRECONDITION"


class Unavailable(ObserveRtError):
    grpc_code = "UNAVAILABLE"


class DeadlineExceeded(ObserveRtError):
    grpc_code = "DEADLINE_EXCEEDED"


class Unimplemented(ObserveRtError):
    """An optional CRI RPC this runtime does not offer."""

    grpc_code = "UNIMPLEMENTED"
