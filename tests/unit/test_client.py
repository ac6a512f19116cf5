"""CriClient and the `observe-rt ps|pods|logs|inspect|version` commands against a fake runtime.

The fake implements only the RPCs the client sends, served by a real gRPC server on a unix
socket; every other RPC answers UNIMPLEMENTED (the generated servicer's default).
"""

from __future__ import annotations

import argparse
import hashlib
import itertools
import json
import os
import shutil
import tempfile
import threading
import time
from concurrent import futures

import grpc
import pytest

from observe_rt.client import DEFAULT_SOCKET, SOCKET_ENV, CriClient, cli
from observe_rt.client.cri_client import socket_target
from observe_rt.cri.v1 import api_pb2, api_pb2_grpc
from observe_rt.errors import InvalidArgument, NotFound, ObserveRtError
from observe_rt.pod.logs import CriLogWriter

T0 = 1_700_000_000_000_000_000


# --- the fake runtime ------------------------------------------------------------------------


class FakeState:
    """Pods, containers and images, and the requests and deadlines seen."""

    def __init__(self) -> None:
        self.pods: dict[str, api_pb2.PodSandbox] = {}
        self.containers: dict[str, api_pb2.ContainerStatus] = {}
        self.container_pod: dict[str, str] = {}
        self.images: dict[str, api_pb2.Image] = {}
        self.calls: list[tuple[str, object]] = []
        self.deadlines: dict[str, float] = {}
        self._ids = itertools.count(1)

    def new_id(self) -> str:
        return hashlib.sha256(str(next(self._ids)).encode()).hexdigest()

    def seen(self, name: str, request, context) -> None:
        self.calls.append((name, request))
        self.deadlines[name] = context.time_remaining()


def _abort_unknown(context, kind: str, object_id: str):
    context.abort(grpc.StatusCode.NOT_FOUND, f"{kind} {object_id!r} not found")


def _labels_match(labels, selector) -> bool:
    return all(labels.get(key) == value for key, value in selector.items())


class FakeRuntime(api_pb2_grpc.RuntimeServiceServicer):
    def __init__(self, state: FakeState) -> None:
        self.s = state

    def Version(self, request, context):
        self.s.seen("Version", request, context)
        return api_pb2.VersionResponse(
            version="0.1.0", runtime_name="fake-rt", runtime_version="9.9",
            runtime_api_version=request.version,
        )  # fmt: skip

    def Status(self, request, context):
        self.s.seen("Status", request, context)
        conditions = [
            api_pb2.RuntimeCondition(type="RuntimeReady", status=True),
            api_pb2.RuntimeCondition(type="NetworkReady", status=False, reason="NoCNIConfig"),
        ]
        info = {"config": json.dumps({"cgroupDriver": "cgroupfs"})} if request.verbose else {}
        return api_pb2.StatusResponse(
            status=api_pb2.RuntimeStatus(conditions=conditions), info=info
        )

    def RunPodSandbox(self, request, context):
        self.s.seen("RunPodSandbox", request, context)
        if not request.config.metadata.name:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, "config.metadata.name is empty")
        pod_id = self.s.new_id()
        self.s.pods[pod_id] = api_pb2.PodSandbox(
            id=pod_id, metadata=request.config.metadata, state=api_pb2.SANDBOX_READY,
            created_at=T0 + len(self.s.pods), labels=request.config.labels,
            runtime_handler=request.runtime_handler,
        )  # fmt: skip
        return api_pb2.RunPodSandboxResponse(pod_sandbox_id=pod_id)

    def StopPodSandbox(self, request, context):
        self.s.seen("StopPodSandbox", request, context)
        pod = self.s.pods.get(request.pod_sandbox_id) or _abort_unknown(
            context, "pod", request.pod_sandbox_id
        )
        pod.state = api_pb2.SANDBOX_NOTREADY
        for container_id, pod_id in self.s.container_pod.items():
            if pod_id == pod.id:
                self.s.containers[container_id].state = api_pb2.CONTAINER_EXITED
        return api_pb2.StopPodSandboxResponse()

    def RemovePodSandbox(self, request, context):
        self.s.seen("RemovePodSandbox", request, context)
        self.s.pods.pop(request.pod_sandbox_id, None)  # CRI: removing a missing pod succeeds
        return api_pb2.RemovePodSandboxResponse()

    def PodSandboxStatus(self, request, context):
        self.s.seen("PodSandboxStatus", request, context)
        pod = self.s.pods.get(request.pod_sandbox_id) or _abort_unknown(
            context, "pod", request.pod_sandbox_id
        )
        status = api_pb2.PodSandboxStatus(
            id=pod.id, metadata=pod.metadata, state=pod.state, created_at=pod.created_at,
            network=api_pb2.PodSandboxNetworkStatus(ip="10.88.0.2"), labels=pod.labels,
        )  # fmt: skip
        info = {"info": json.dumps({"pid": 4242})} if request.verbose else {}
        return api_pb2.PodSandboxStatusResponse(status=status, info=info)

    def ListPodSandbox(self, request, context):
        self.s.seen("ListPodSandbox", request, context)
        want = request.filter
        items = [
            pod for pod in self.s.pods.values()
            if (not want.id or pod.id == want.id)
            and (not want.HasField("state") or pod.state == want.state.state)
            and _labels_match(pod.labels, want.label_selector)
        ]  # fmt: skip
        return api_pb2.ListPodSandboxResponse(items=items)

    def CreateContainer(self, request, context):
        self.s.seen("CreateContainer", request, context)
        if request.pod_sandbox_id not in self.s.pods:
            _abort_unknown(context, "pod", request.pod_sandbox_id)
        name = request.config.metadata.name
        for container_id, pod_id in self.s.container_pod.items():
            if (
                pod_id == request.pod_sandbox_id
                and self.s.containers[container_id].metadata.name == name
            ):  # noqa: E501
                context.abort(grpc.StatusCode.ALREADY_EXISTS, f"container name {name!r} in use")
        container_id = self.s.new_id()
        log_path = ""
        if request.sandbox_config.log_directory and request.config.log_path:
            log_path = os.path.join(request.sandbox_config.log_directory, request.config.log_path)
        self.s.containers[container_id] = api_pb2.ContainerStatus(
            id=container_id, metadata=request.config.metadata, state=api_pb2.CONTAINER_CREATED,
            created_at=T0 + 10 + len(self.s.containers), image=request.config.image,
            image_ref="sha256:" + "ab" * 32, labels=request.config.labels, log_path=log_path,
        )  # fmt: skip
        self.s.container_pod[container_id] = request.pod_sandbox_id
        return api_pb2.CreateContainerResponse(container_id=container_id)

    def _container(self, container_id, context) -> api_pb2.ContainerStatus:
        return self.s.containers.get(container_id) or _abort_unknown(
            context, "container", container_id
        )

    def StartContainer(self, request, context):
        self.s.seen("StartContainer", request, context)
        self._container(request.container_id, context).state = api_pb2.CONTAINER_RUNNING
        return api_pb2.StartContainerResponse()

    def StopContainer(self, request, context):
        self.s.seen("StopContainer", request, context)
        container = self._container(request.container_id, context)
        container.state, container.exit_code, container.reason = (
            api_pb2.CONTAINER_EXITED, 137, "Error",
        )  # fmt: skip
        return api_pb2.StopContainerResponse()

    def RemoveContainer(self, request, context):
        self.s.seen("RemoveContainer", request, context)
        self.s.containers.pop(request.container_id, None)
        self.s.container_pod.pop(request.container_id, None)
        return api_pb2.RemoveContainerResponse()

    def ContainerStatus(self, request, context):
        self.s.seen("ContainerStatus", request, context)
        container = self._container(request.container_id, context)
        info = {}
        if request.verbose:
            spec = {"linux": {"cgroupsPath": "/kubepods/" + container.id[:12]}}
            info = {"info": json.dumps({"runtimeSpec": spec, "pid": 99}), "note": "plain text"}
        return api_pb2.ContainerStatusResponse(status=container, info=info)

    def ListContainers(self, request, context):
        self.s.seen("ListContainers", request, context)
        want = request.filter
        found = []
        for container_id, status in self.s.containers.items():
            pod_id = self.s.container_pod[container_id]
            if (
                (not want.id or container_id == want.id)
                and (not want.pod_sandbox_id or pod_id == want.pod_sandbox_id)
                and (not want.HasField("state") or status.state == want.state.state)
                and _labels_match(status.labels, want.label_selector)
            ):
                found.append(_listed(status, pod_id))
        return api_pb2.ListContainersResponse(containers=found)

    def ExecSync(self, request, context):
        self.s.seen("ExecSync", request, context)
        container = self._container(request.container_id, context)
        if container.state != api_pb2.CONTAINER_RUNNING:
            context.abort(grpc.StatusCode.FAILED_PRECONDITION, "container is not running")
        code = 1 if request.cmd[0] == "false" else 0
        return api_pb2.ExecSyncResponse(
            stdout=" ".join(request.cmd[1:]).encode(), stderr=b"", exit_code=code
        )

    def ReopenContainerLog(self, request, context):
        self.s.seen("ReopenContainerLog", request, context)
        self._container(request.container_id, context)
        return api_pb2.ReopenContainerLogResponse()


def _listed(status: api_pb2.ContainerStatus, pod_id: str) -> api_pb2.Container:
    return api_pb2.Container(
        id=status.id, pod_sandbox_id=pod_id, metadata=status.metadata, image=status.image,
        image_ref=status.image_ref, state=status.state, created_at=status.created_at,
        labels=status.labels,
    )  # fmt: skip


class FakeImages(api_pb2_grpc.ImageServiceServicer):
    def __init__(self, state: FakeState) -> None:
        self.s = state

    def PullImage(self, request, context):
        self.s.seen("PullImage", request, context)
        name = request.image.image
        if "missing" in name:
            context.abort(grpc.StatusCode.NOT_FOUND, f"{name}: not found in the registry")
        image_id = "sha256:" + hashlib.sha256(name.encode()).hexdigest()
        self.s.images[name] = api_pb2.Image(id=image_id, repo_tags=[name], size=1234)
        return api_pb2.PullImageResponse(image_ref=image_id)

    def ListImages(self, request, context):
        self.s.seen("ListImages", request, context)
        wanted = request.filter.image.image
        images = [img for name, img in self.s.images.items() if not wanted or name == wanted]
        return api_pb2.ListImagesResponse(images=images)

    def ImageStatus(self, request, context):
        self.s.seen("ImageStatus", request, context)
        image = self.s.images.get(request.image.image)
        if image is None:
            return api_pb2.ImageStatusResponse()  # CRI: a missing image is no error
        info = {"info": json.dumps({"chainID": "sha256:cd"})} if request.verbose else {}
        return api_pb2.ImageStatusResponse(image=image, info=info)

    def RemoveImage(self, request, context):
        self.s.seen("RemoveImage", request, context)
        self.s.images.pop(request.image.image, None)
        return api_pb2.RemoveImageResponse()

    def ImageFsInfo(self, request, context):
        self.s.seen("ImageFsInfo", request, context)
        usage = api_pb2.FilesystemUsage(
            timestamp=T0,
            fs_id=api_pb2.FilesystemIdentifier(mountpoint="/var/lib/observe-rt/images"),
            used_bytes=api_pb2.UInt64Value(value=sum(i.size for i in self.s.images.values())),
        )
        return api_pb2.ImageFsInfoResponse(image_filesystems=[usage])


@pytest.fixture
def runtime():
    """(state, socket path) of a fake CRI runtime serving on a unix socket."""
    directory = tempfile.mkdtemp(prefix="ort-cri-")  # short: socket paths max out at 107 bytes
    path = os.path.join(directory, "cri.sock")
    state = FakeState()
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    api_pb2_grpc.add_RuntimeServiceServicer_to_server(FakeRuntime(state), server)
    api_pb2_grpc.add_ImageServiceServicer_to_server(FakeImages(state), server)
    assert server.add_insecure_port(f"unix://{path}") == 1
    server.start()
    yield state, path
    server.stop(grace=None)
    shutil.rmtree(directory, ignore_errors=True)


@pytest.fixture
def client(runtime):
    _, path = runtime
    with CriClient(path, timeout=5) as c:
        yield c


def pod_config(name: str = "web", namespace: str = "default", log_directory: str = ""):
    return api_pb2.PodSandboxConfig(
        metadata=api_pb2.PodSandboxMetadata(name=name, namespace=namespace, uid=name + "-uid"),
        labels={"app": name},
        log_directory=log_directory,
    )


def container_config(name: str = "app", image: str = "busybox:latest", log_path: str = ""):
    return api_pb2.ContainerConfig(
        metadata=api_pb2.ContainerMetadata(name=name, attempt=1),
        image=api_pb2.ImageSpec(image=image),
        command=["sleep", "100"],
        labels={"tier": name},
        log_path=log_path,
    )


def make_pod_with_container(client, name="web", container="app", log_directory="", start=True):
    config = pod_config(name, log_directory=log_directory)
    pod_id = client.run_pod_sandbox(config)
    log_path = f"{container}/0.log" if log_directory else ""
    container_id = client.create_container(
        pod_id, container_config(container, log_path=log_path), config
    )
    if start:
        client.start_container(container_id)
    return pod_id, container_id


# --- the client ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "given, target",
    [
        ("/run/observe-rt/observe-rt.sock", "unix:///run/observe-rt/observe-rt.sock"),
        ("unix:///run/x.sock", "unix:///run/x.sock"),
        ("unix:rel.sock", "unix:rel.sock"),
    ],
)
def test_socket_target(given, target):
    assert socket_target(given) == target


def test_relative_socket_path_becomes_absolute(monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    assert socket_target("cri.sock") == f"unix://{tmp_path}/cri.sock"


def test_defaults():
    assert DEFAULT_SOCKET == "/run/observe-rt/observe-rt.sock"
    assert CriClient().socket_path == DEFAULT_SOCKET  # no connection is made until a call


def test_version_and_status(runtime, client):
    state, _ = runtime
    version = client.version()
    assert (version.runtime_name, version.runtime_api_version) == ("fake-rt", "v1")
    assert state.calls[-1] == ("Version", api_pb2.VersionRequest(version="v1"))
    status = client.status(verbose=True)
    ready = {c.type: c.status for c in status.status.conditions}
    assert ready == {"RuntimeReady": True, "NetworkReady": False}
    assert json.loads(status.info["config"]) == {"cgroupDriver": "cgroupfs"}


def test_pod_and_container_lifecycle(runtime, client):
    state, _ = runtime
    pod_id, container_id = make_pod_with_container(client, start=False)
    assert [p.id for p in client.list_pod_sandbox()] == [pod_id]
    assert client.pod_sandbox_status(pod_id).status.network.ip == "10.88.0.2"
    assert client.container_status(container_id).status.state == api_pb2.CONTAINER_CREATED
    client.start_container(container_id)
    running = client.list_containers(state=api_pb2.CONTAINER_RUNNING)
    assert [(c.id, c.pod_sandbox_id, c.metadata.name) for c in running] == [
        (container_id, pod_id, "app")
    ]
    result = client.exec_sync(container_id, ["echo", "hello", "there"], timeout=3)
    assert (result.stdout, result.exit_code) == (b"hello there", 0)
    assert client.exec_sync(container_id, ["false"]).exit_code == 1
    client.reopen_container_log(container_id)
    client.stop_container(container_id, timeout=2)
    stopped = client.container_status(container_id).status
    assert (stopped.state, stopped.exit_code) == (api_pb2.CONTAINER_EXITED, 137)
    assert client.list_containers(state=api_pb2.CONTAINER_RUNNING) == []
    client.remove_container(container_id)
    client.stop_pod_sandbox(pod_id)
    assert client.pod_sandbox_status(pod_id).status.state == api_pb2.SANDBOX_NOTREADY
    client.remove_pod_sandbox(pod_id)
    assert client.list_pod_sandbox() == []
    assert [name for name, _ in state.calls if name == "StopContainer"] == ["StopContainer"]


def test_list_filters_reach_the_runtime(runtime, client):
    state, _ = runtime
    web, web_app = make_pod_with_container(client, "web")
    db, _ = make_pod_with_container(client, "db", start=False)
    client.stop_pod_sandbox(db)
    assert [p.id for p in client.list_pod_sandbox(state=api_pb2.SANDBOX_READY)] == [web]
    assert [p.id for p in client.list_pod_sandbox(labels={"app": "db"})] == [db]
    assert [p.id for p in client.list_pod_sandbox(pod_id=web)] == [web]
    assert [c.id for c in client.list_containers(pod_id=web)] == [web_app]
    assert [c.id for c in client.list_containers(container_id=web_app)] == [web_app]
    assert len(client.list_containers(labels={"tier": "app"})) == 2
    request = state.calls[-1][1]
    assert not request.filter.HasField("state")  # unset means every state, not CREATED (0)


def test_errors_surface_as_rpc_errors(client):
    with pytest.raises(grpc.RpcError) as error:
        client.container_status("nope")
    assert error.value.code() == grpc.StatusCode.NOT_FOUND
    assert "nope" in error.value.details()
    with pytest.raises(grpc.RpcError) as error:
        client.run_pod_sandbox(api_pb2.PodSandboxConfig())
    assert error.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    pod_id, _ = make_pod_with_container(client)
    config = pod_config()
    with pytest.raises(grpc.RpcError) as error:
        client.create_container(pod_id, container_config("app"), config)
    assert error.value.code() == grpc.StatusCode.ALREADY_EXISTS


def test_rpcs_the_fake_lacks_answer_unimplemented(client):
    with pytest.raises(grpc.RpcError) as error:
        client.runtime.ListContainerStats(api_pb2.ListContainerStatsRequest(), timeout=5)
    assert error.value.code() == grpc.StatusCode.UNIMPLEMENTED


def test_waiting_calls_get_their_cri_timeout_on_top_of_the_deadline(runtime):
    state, path = runtime
    with CriClient(path, timeout=2) as client:
        _, container_id = make_pod_with_container(client)
        client.exec_sync(container_id, ["true"], timeout=30)
        client.stop_container(container_id, timeout=30)
        client.version()
    assert state.deadlines["ExecSync"] > 25
    assert state.deadlines["StopContainer"] > 25
    assert state.deadlines["Version"] < 3  # the plain timeout (plus clock slack)


def test_images(runtime, client):
    state, _ = runtime
    image_ref = client.pull_image("127.0.0.1:5000/busybox:1", auth=api_pb2.AuthConfig(auth="eA=="))
    assert image_ref.startswith("sha256:")
    assert state.calls[-1][1].auth.auth == "eA=="
    client.pull_image("127.0.0.1:5000/pause:1")
    assert len(client.list_images()) == 2
    assert [i.id for i in client.list_images("127.0.0.1:5000/busybox:1")] == [image_ref]
    status = client.image_status("127.0.0.1:5000/busybox:1", verbose=True)
    assert status.image.id == image_ref and "info" in status.info
    (fs,) = client.image_fs_info().image_filesystems
    assert fs.used_bytes.value == 2 * 1234
    client.remove_image("127.0.0.1:5000/busybox:1")
    assert not client.image_status("127.0.0.1:5000/busybox:1").HasField("image")
    with pytest.raises(grpc.RpcError) as error:
        client.pull_image("127.0.0.1:5000/missing:1")
    assert error.value.code() == grpc.StatusCode.NOT_FOUND


def test_wait_ready(runtime, tmp_path):
    _, path = runtime
    with CriClient(path) as client:
        client.wait_ready(timeout=5)
    with CriClient(str(tmp_path / "absent.sock")) as client, pytest.raises(TimeoutError):
        client.wait_ready(timeout=0.2)


def test_package_exports_client_lazily():
    import observe_rt.client as package

    assert package.CriClient is CriClient
    with pytest.raises(AttributeError):
        _ = package.NoSuchThing


# --- the command line ------------------------------------------------------------------------


def run_cli(argv: list[str], capsys) -> tuple[int, str, str]:
    parser = argparse.ArgumentParser(prog="observe-rt")
    sub = parser.add_subparsers(dest="command", required=True)
    cli.register(sub)
    args = parser.parse_args(argv)
    code = args.func(args)
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def table(out: str) -> list[list[str]]:
    """Rows of a printed table, cells split on the 3-space column gaps."""
    return [
        [cell.strip() for cell in line.split("   ") if cell.strip()] for line in out.splitlines()
    ]


def test_ps_shows_running_containers_and_all_with_a(runtime, client, capsys):
    _, path = runtime
    _, running = make_pod_with_container(client, "web")
    pod_id, created = make_pod_with_container(client, "db", "sql", start=False)
    code, out, _ = run_cli(["ps", "--socket", path], capsys)
    assert code == 0
    rows = table(out)
    assert rows[0] == ["CONTAINER ID", "IMAGE", "CREATED", "STATE", "NAME", "ATTEMPT", "POD ID"]
    assert len(rows) == 2
    assert rows[1][0] == running[:13] and rows[1][1:2] == ["busybox:latest"]
    assert rows[1][3:6] == ["Running", "app", "1"]
    assert rows[1][2].endswith(" ago")
    _, out, _ = run_cli(["ps", "-a", "--socket", path], capsys)
    assert [row[0] for row in table(out)[1:]] == [created[:13], running[:13]]  # newest first
    _, out, _ = run_cli(["ps", "-aq", "--pod", "db", "--socket", path], capsys)
    assert out.split() == [created]
    _, out, _ = run_cli(["ps", "--no-trunc", "--socket", path], capsys)
    assert table(out)[1][0] == running


def test_pods_table(runtime, client, capsys):
    _, path = runtime
    web, _ = make_pod_with_container(client, "web")
    db, _ = make_pod_with_container(client, "db")
    client.stop_pod_sandbox(db)
    _, out, _ = run_cli(["pods", "--socket", path], capsys)
    rows = table(out)
    assert rows[0] == ["POD ID", "CREATED", "STATE", "NAME", "NAMESPACE", "ATTEMPT"]
    assert [(r[0], r[2], r[3], r[4], r[5]) for r in rows[1:]] == [
        (db[:13], "NotReady", "db", "default", "0"),
        (web[:13], "Ready", "web", "default", "0"),
    ]
    _, out, _ = run_cli(["pods", "-q", "--socket", path], capsys)
    assert out.split() == [db, web]


def test_socket_comes_from_the_environment(runtime, client, capsys, monkeypatch):
    _, path = runtime
    make_pod_with_container(client)
    monkeypatch.setenv(SOCKET_ENV, path)
    _, out, _ = run_cli(["pods", "-q"], capsys)
    assert len(out.split()) == 1


def test_unreachable_runtime_is_a_clear_error(tmp_path, capsys):
    absent = str(tmp_path / "absent.sock")
    with pytest.raises(ObserveRtError, match="cannot reach the runtime on .*absent.sock"):
        run_cli(["version", "--socket", absent], capsys)


def test_version_command(runtime, capsys):
    _, path = runtime
    _, out, _ = run_cli(["version", "--socket", path], capsys)
    assert out.splitlines()[:4] == [
        "Version:  0.1.0",
        "RuntimeName:  fake-rt",
        "RuntimeVersion:  9.9",
        "RuntimeApiVersion:  v1",
    ]
    assert out.splitlines()[4].startswith("ClientVersion:  observe-rt ")


def _container_with_log(client, tmp_path, start=True):
    pod_id, container_id = make_pod_with_container(
        client, log_directory=str(tmp_path / "pods"), start=start
    )
    log_path = client.container_status(container_id).status.log_path
    return container_id, CriLogWriter(log_path, max_line=8)


def test_logs_prints_each_stream_to_its_own(runtime, client, tmp_path, capsys):
    _, path = runtime
    container_id, writer = _container_with_log(client, tmp_path)
    writer.write("stdout", "out one, long enough to be split ✓\nout two\n".encode())
    writer.write("stderr", b"err one\n")
    writer.write("stdout", b"last")
    writer.close()
    code, out, err = run_cli(["logs", "--socket", path, container_id[:6]], capsys)
    assert code == 0
    assert out == "out one, long enough to be split ✓\nout two\nlast\n"
    assert err == "err one\n"
    _, out, err = run_cli(["logs", "--socket", path, "--tail", "2", "app"], capsys)
    assert (out, err) == ("last\n", "err one\n")
    _, out, _ = run_cli(["logs", "-t", "--tail", "1", "--socket", path, container_id], capsys)
    stamp, text = out.rstrip("\n").split(" ", 1)
    assert text == "last" and stamp.endswith("Z") and "T" in stamp


@pytest.mark.timeout(30)
def test_logs_follow_stops_when_the_container_exits(runtime, client, tmp_path, capsys, monkeypatch):
    _, path = runtime
    monkeypatch.setattr(cli, "FOLLOW_CHECK_SECONDS", 0.05)
    container_id, writer = _container_with_log(client, tmp_path)
    writer.write("stdout", b"first\n")

    def workload() -> None:
        time.sleep(0.3)
        writer.write("stdout", b"second\n")
        writer.close()
        time.sleep(0.2)
        client.stop_container(container_id)

    thread = threading.Thread(target=workload)
    thread.start()
    code, out, _ = run_cli(["logs", "-f", "--socket", path, container_id], capsys)
    thread.join()
    assert (code, out) == (0, "first\nsecond\n")


def test_logs_errors(runtime, client, tmp_path, capsys):
    _, path = runtime
    _, no_log = make_pod_with_container(client, "nolog")
    with pytest.raises(NotFound, match="no log file"):
        run_cli(["logs", "--socket", path, no_log], capsys)
    container_id, writer = _container_with_log(client, tmp_path)
    writer.close()
    os.unlink(client.container_status(container_id).status.log_path)
    with pytest.raises(NotFound, match="does not exist"):
        run_cli(["logs", "--socket", path, container_id], capsys)
    with pytest.raises(NotFound, match="no container"):
        run_cli(["logs", "--socket", path, "zzz"], capsys)


def test_inspect_container_and_pod(runtime, client, capsys):
    _, path = runtime
    pod_id, container_id = make_pod_with_container(client)
    _, out, _ = run_cli(["inspect", "--socket", path, container_id[:10]], capsys)
    document = json.loads(out)
    assert document["status"]["id"] == container_id
    assert document["status"]["state"] == "CONTAINER_RUNNING"
    spec = document["info"]["info"]["runtimeSpec"]
    assert spec["linux"]["cgroupsPath"].startswith("/kubepods/")
    assert document["info"]["note"] == "plain text"
    _, out, _ = run_cli(["inspect", "--socket", path, pod_id], capsys)
    document = json.loads(out)
    assert document["status"]["id"] == pod_id
    assert document["status"]["network"]["ip"] == "10.88.0.2"
    assert document["info"]["info"] == {"pid": 4242}


def test_inspect_resolution_errors(runtime, client, capsys):
    _, path = runtime
    make_pod_with_container(client, "web")
    make_pod_with_container(client, "db")  # a second container named "app"
    with pytest.raises(InvalidArgument, match="names 2 containers"):
        run_cli(["inspect", "--socket", path, "app"], capsys)
    with pytest.raises(InvalidArgument, match="empty"):
        run_cli(["inspect", "--socket", path, ""], capsys)
    with pytest.raises(NotFound, match="no container or pod"):
        run_cli(["inspect", "--socket", path, "not-there"], capsys)


def test_runtime_errors_keep_their_code_in_the_message(runtime, client, capsys):
    _, path = runtime
    _, container_id = make_pod_with_container(client)
    client.stop_container(container_id)  # exec into an exited container: FAILED_PRECONDITION
    error = pytest.raises(grpc.RpcError, client.exec_sync, container_id, ["true"]).value
    message = cli.describe_rpc_error(error, path)
    assert message == "FAILED_PRECONDITION: container is not running"


def test_id_matching_rules():
    candidates = [("abc123", "web"), ("abd456", "db"), ("ffff00", "abc")]
    assert cli._match("abc123", candidates, "pod") == "abc123"  # a full id wins
    assert cli._match("abd", candidates, "pod") == "abd456"  # a unique prefix
    assert cli._match("abc", candidates, "pod") == "abc123"  # prefixes before names
    assert cli._match("db", candidates, "pod") == "abd456"  # then names
    assert cli._match("zz", candidates, "pod") is None
    with pytest.raises(InvalidArgument, match="names 2 pods .*give more of the id"):
        cli._match("ab", candidates, "pod")


@pytest.mark.parametrize(
    "seconds, text",
    [
        (0, "Less than a second ago"),
        (1, "1 second ago"),
        (42, "42 seconds ago"),
        (90, "About a minute ago"),
        (600, "10 minutes ago"),
        (3600, "About an hour ago"),
        (5 * 3600, "5 hours ago"),
        (3 * 86400, "3 days ago"),
        (20 * 86400, "2 weeks ago"),
        (90 * 86400, "3 months ago"),
        (800 * 86400, "2 years ago"),
    ],
)
def test_ago_reads_like_crictl(seconds, text):
    assert cli.ago(T0, T0 + seconds * 1_000_000_000) == text
    assert cli.ago(0, T0) == "-"
