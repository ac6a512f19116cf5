"""`observe-rt ps | pods | logs | inspect | version`: a small crictl for nodes without one.

Every command talks to the runtime through CriClient on `--socket` (default: $OBSERVE_RT_SOCKET,
else /run/observe-rt/observe-rt.sock). A container or pod may be named by its full id, any
unique prefix of it (as crictl allows), or its unique name.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import sys
import time

from observe_rt import __version__
from observe_rt.client import DEFAULT_SOCKET, SOCKET_ENV
from observe_rt.errors import InvalidArgument, NotFound, ObserveRtError

SHORT_ID = 13  # crictl's truncated id length
CONTAINER_STATES = {0: "Created", 1: "Running", 2: "Exited", 3: "Unknown"}
POD_STATES = {0: "Ready", 1: "NotReady"}
CONTAINER_RUNNING = 1
FOLLOW_CHECK_SECONDS = 1.0


class RuntimeCallFailed(ObserveRtError):
    """A CRI call answered with an error status; the message names the code and details."""


def register(sub: argparse._SubParsersAction) -> None:
    """Add the ps, pods, logs, inspect and version commands to `sub`."""
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--socket",
        metavar="PATH",
        help=f"the runtime's CRI socket (default ${SOCKET_ENV} or {DEFAULT_SOCKET})",
    )

    ps = sub.add_parser("ps", parents=[common], help="list containers (running ones unless -a)")
    ps.add_argument("-a", "--all", action="store_true", help="show containers in every state")
    ps.add_argument("-p", "--pod", help="only the containers of this pod")
    _add_listing_options(ps)
    ps.set_defaults(func=_ps)

    pods = sub.add_parser("pods", parents=[common], help="list pods")
    _add_listing_options(pods)
    pods.set_defaults(func=_pods)

    logs = sub.add_parser("logs", parents=[common], help="print a container's log")
    logs.add_argument("-f", "--follow", action="store_true", help="keep printing new lines")
    logs.add_argument("--tail", type=int, metavar="N", help="only the last N lines")
    logs.add_argument("-t", "--timestamps", action="store_true", help="show each line's time")
    logs.add_argument("container", metavar="CONTAINER")
    logs.set_defaults(func=_logs)

    inspect = sub.add_parser(
        "inspect", parents=[common], help="a container's or pod's status and verbose info as JSON"
    )
    inspect.add_argument("id", metavar="ID")
    inspect.set_defaults(func=_inspect)

    version = sub.add_parser("version", parents=[common], help="the runtime's name and versions")
    version.set_defaults(func=_version)

    stats = sub.add_parser("stats", parents=[common], help="containers' CPU, memory and disk")
    stats.add_argument("-w", "--watch", action="store_true", help="refresh every second")
    stats.add_argument("--no-trunc", action="store_true", help="do not shorten ids")
    stats.set_defaults(func=_stats)


def _add_listing_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("-q", "--quiet", action="store_true", help="full ids only")
    parser.add_argument("--no-trunc", action="store_true", help="do not shorten ids")


def socket_path(args: argparse.Namespace) -> str:
    return getattr(args, "socket", None) or os.environ.get(SOCKET_ENV) or DEFAULT_SOCKET


def _with_client(command):
    """Run `command(client, args)`; a failed CRI call becomes an error the CLI prints."""

    @functools.wraps(command)
    def run(args: argparse.Namespace) -> int:
        import grpc

        from observe_rt.client.cri_client import CriClient

        path = socket_path(args)
        with CriClient(path) as client:
            try:
                return command(client, args)
            except grpc.RpcError as error:
                raise RuntimeCallFailed(describe_rpc_error(error, path)) from None

    return run


def describe_rpc_error(error, path: str) -> str:
    import grpc

    code, details = error.code(), error.details()
    if code == grpc.StatusCode.UNAVAILABLE:
        return f"cannot reach the runtime on {path} ({details}); is `observe-rt daemon` running?"
    return f"{code.name}: {details}"


# --- commands --------------------------------------------------------------------------------


@_with_client
def _stats(client, args) -> int:
    """crictl stats' columns, from the daemon's latest sample (CPU % of one core)."""
    from observe_rt.cri.v1 import api_pb2

    short = _shortener(args.no_trunc)
    while True:
        names = {c.id: c.metadata.name for c in client.list_containers()}
        found = client.runtime.ListContainerStats(api_pb2.ListContainerStatsRequest()).stats
        rows = [
            (short(s.attributes.id), names.get(s.attributes.id, s.attributes.metadata.name),
             f"{s.cpu.usage_nano_cores.value / 1e7:.2f}",
             human_bytes(s.memory.working_set_bytes.value),
             human_bytes(s.writable_layer.used_bytes.value),
             str(s.writable_layer.inodes_used.value))
            for s in sorted(found, key=lambda s: s.attributes.id)
        ]  # fmt: skip
        print_table(("CONTAINER", "NAME", "CPU %", "MEM", "DISK", "INODES"), rows)
        if not args.watch:
            return 0
        time.sleep(1)
        print()


def human_bytes(value: float) -> str:
    """1234567 -> 1.2MB, in decimal units as crictl and docker print sizes."""
    for unit in ("B", "kB", "MB", "GB"):
        if value < 1000 or unit == "GB":
            return f"{value:.0f}{unit}" if unit == "B" else f"{value:.1f}{unit}"
        value /= 1000
    return str(value)


@_with_client
def _ps(client, args) -> int:
    state = None if args.all else CONTAINER_RUNNING
    pod_id = resolve_pod(client, args.pod) if args.pod else ""
    containers = sorted(
        client.list_containers(pod_id=pod_id, state=state),
        key=lambda c: c.created_at,
        reverse=True,
    )
    if args.quiet:
        _print_ids(c.id for c in containers)
        return 0
    short, now = _shortener(args.no_trunc), time.time_ns()
    rows = [_container_row(c, short, now) for c in containers]
    headers = ("CONTAINER ID", "IMAGE", "CREATED", "STATE", "NAME", "ATTEMPT", "POD ID")
    print_table(headers, rows)
    return 0


@_with_client
def _pods(client, args) -> int:
    pods = sorted(client.list_pod_sandbox(), key=lambda p: p.created_at, reverse=True)
    if args.quiet:
        _print_ids(p.id for p in pods)
        return 0
    short, now = _shortener(args.no_trunc), time.time_ns()
    rows = [_pod_row(p, short, now) for p in pods]
    print_table(("POD ID", "CREATED", "STATE", "NAME", "NAMESPACE", "ATTEMPT"), rows)
    return 0


@_with_client
def _logs(client, args) -> int:
    from observe_rt.pod.logs import read_cri_log

    container_id = resolve_container(client, args.container)
    path = client.container_status(container_id).status.log_path
    if not path:
        raise NotFound(f"container {container_id} has no log file (no log_path was set)")
    until = ContainerStopped(client, container_id) if args.follow else None
    try:
        for line in read_cri_log(path, follow=args.follow, tail=args.tail, until=until):
            text = f"{line.timestamp} {line.text}" if args.timestamps else line.text
            print(
                text, file=sys.stderr if line.stream == "stderr" else sys.stdout, flush=args.follow
            )
    except FileNotFoundError:
        raise NotFound(f"log file {path} of container {container_id} does not exist") from None
    except PermissionError:
        raise ObserveRtError(f"not allowed to read {path}; run as root") from None
    except KeyboardInterrupt:
        return 130
    return 0


@_with_client
def _inspect(client, args) -> int:
    from google.protobuf import json_format

    kind, object_id = resolve_any(client, args.id)
    if kind == "container":
        response = client.container_status(object_id, verbose=True)
    else:
        response = client.pod_sandbox_status(object_id, verbose=True)
    document = json_format.MessageToDict(response)
    info = document.get("info", {})
    for key, value in info.items():
        info[key] = _json_or_text(value)
    print(json.dumps(document, indent=2, sort_keys=False))
    return 0


@_with_client
def _version(client, args) -> int:
    response = client.version()
    print(f"Version:  {response.version}")
    print(f"RuntimeName:  {response.runtime_name}")
    print(f"RuntimeVersion:  {response.runtime_version}")
    print(f"RuntimeApiVersion:  {response.runtime_api_version}")
    print(f"ClientVersion:  observe-rt {__version__}")
    return 0


# --- resolving what the user named -----------------------------------------------------------


def _match(wanted: str, candidates: list[tuple[str, str]], kind: str) -> str | None:
    """The id among (id, name) pairs that `wanted` names: full id, id prefix, or name."""
    if not wanted:
        raise InvalidArgument(f"an empty {kind} id names nothing")
    ids = [object_id for object_id, _ in candidates]
    if wanted in ids:
        return wanted
    for found in (
        [i for i in ids if i.startswith(wanted)],
        [i for i, name in candidates if name == wanted],
    ):
        if len(found) > 1:
            raise InvalidArgument(
                f"{wanted!r} names {len(found)} {kind}s ({', '.join(found)}); give more of the id"
            )
        if found:
            return found[0]
    return None


def resolve_container(client, wanted: str) -> str:
    candidates = [(c.id, c.metadata.name) for c in client.list_containers()]
    found = _match(wanted, candidates, "container")
    if found is None:
        raise NotFound(f"no container has the id or name {wanted!r}")
    return found


def resolve_pod(client, wanted: str) -> str:
    candidates = [(p.id, p.metadata.name) for p in client.list_pod_sandbox()]
    found = _match(wanted, candidates, "pod")
    if found is None:
        raise NotFound(f"no pod has the id or name {wanted!r}")
    return found


def resolve_any(client, wanted: str) -> tuple[str, str]:
    """("container" | "pod", id): containers are looked at first, as crictl inspect does."""
    containers = [(c.id, c.metadata.name) for c in client.list_containers()]
    found = _match(wanted, containers, "container")
    if found is not None:
        return "container", found
    pods = [(p.id, p.metadata.name) for p in client.list_pod_sandbox()]
    found = _match(wanted, pods, "pod")
    if found is not None:
        return "pod", found
    raise NotFound(f"no container or pod has the id or name {wanted!r}")


class ContainerStopped:
    """For `logs -f`: true once the container is no longer running (or gone).

    Asks the runtime at most once per `every` seconds, however often it is called.
    """

    def __init__(self, client, container_id: str, every: float | None = None) -> None:
        self.client = client
        self.container_id = container_id
        self.every = FOLLOW_CHECK_SECONDS if every is None else every
        self._last_check: float | None = None

    def __call__(self) -> bool:
        import grpc

        now = time.monotonic()
        if self._last_check is not None and now - self._last_check < self.every:
            return False
        self._last_check = now
        try:
            state = self.client.container_status(self.container_id).status.state
        except grpc.RpcError as error:
            if error.code() == grpc.StatusCode.NOT_FOUND:
                return True
            raise
        return state != CONTAINER_RUNNING


# --- output ----------------------------------------------------------------------------------


def print_table(headers: tuple[str, ...], rows: list[tuple[str, ...]]) -> None:
    widths = [max(len(cell) for cell in column) for column in zip(headers, *rows, strict=True)]
    for row in (headers, *rows):
        print(
            "   ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
        )


def _container_row(c, short, now: int) -> tuple[str, ...]:
    state = CONTAINER_STATES.get(c.state, str(c.state))
    return (short(c.id), _image_name(c, short), ago(c.created_at, now), state,
            c.metadata.name, str(c.metadata.attempt), short(c.pod_sandbox_id))  # fmt: skip


def _pod_row(p, short, now: int) -> tuple[str, ...]:
    state = POD_STATES.get(p.state, str(p.state))
    return (short(p.id), ago(p.created_at, now), state,
            p.metadata.name, p.metadata.namespace, str(p.metadata.attempt))  # fmt: skip


def _print_ids(ids) -> None:
    for object_id in ids:
        print(object_id)


def _shortener(no_trunc: bool):
    if no_trunc:
        return lambda text: text
    return lambda text: text[:SHORT_ID]


def _image_name(container, short) -> str:
    """The image as the user asked for it; a bare digest is shortened like an id."""
    image = container.image.image or container.image_ref
    if image.startswith("sha256:"):
        return short(image.removeprefix("sha256:"))
    return image


def ago(created_ns: int, now_ns: int) -> str:
    """How long ago, in crictl's words ("5 seconds ago", "About an hour ago")."""
    if created_ns <= 0:
        return "-"
    seconds = max(0, (now_ns - created_ns) // 1_000_000_000)
    return _human_duration(seconds) + " ago"


def _human_duration(seconds: int) -> str:
    minutes, hours = seconds // 60, seconds // 3600
    if seconds < 1:
        return "Less than a second"
    if seconds < 60:
        return "1 second" if seconds == 1 else f"{seconds} seconds"
    if minutes < 60:
        return "About a minute" if minutes == 1 else f"{minutes} minutes"
    if hours < 2:
        return "About an hour"
    if hours < 48:
        return f"{hours} hours"
    if hours < 24 * 7 * 2:
        return f"{hours // 24} days"
    if hours < 24 * 30 * 2:
        return f"{hours // (24 * 7)} weeks"
    if hours < 24 * 365 * 2:
        return f"{hours // (24 * 30)} months"
    return f"{hours // (24 * 365)} years"


def _json_or_text(value: str):
    """Verbose info values are JSON documents by convention; show them as such when they are."""
    try:
        return json.loads(value)
    except ValueError:
        return value
