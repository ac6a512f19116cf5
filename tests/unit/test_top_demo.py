"""`make run`'s demo (observe_rt/demo.py), its pure parts: the image archive, the container
configs, and the kubelet-like restart of exited containers (fake CRI client)."""

from __future__ import annotations

import json
import tarfile
from types import SimpleNamespace

import pytest

from observe_rt import demo
from observe_rt.cri.v1 import api_pb2


class FakeClient:
    def __init__(self, containers: list[api_pb2.Container]) -> None:
        self.containers = containers
        self.created: list[tuple[str, str, int]] = []
        self.removed: list[str] = []

    def list_containers(self, pod_id: str = ""):
        return [c for c in self.containers if c.pod_sandbox_id == pod_id]

    def create_container(self, pod_id, config, pod_config):
        self.created.append((pod_id, config.metadata.name, config.metadata.attempt))
        return f"{config.metadata.name}-{config.metadata.attempt}"

    def start_container(self, container_id):
        pass

    def remove_container(self, container_id):
        self.removed.append(container_id)

    def pod_sandbox_status(self, pod_id):
        return SimpleNamespace(status=SimpleNamespace(network=SimpleNamespace(ip="10.9.0.3")))


def _container(cid: str, pod: str, name: str, attempt: int, state: int) -> api_pb2.Container:
    metadata = api_pb2.ContainerMetadata(name=name, attempt=attempt)
    return api_pb2.Container(id=cid, pod_sandbox_id=pod, state=state, metadata=metadata)


@pytest.fixture
def clock(monkeypatch):
    now = SimpleNamespace(value=1000.0)
    monkeypatch.setattr(demo.time, "monotonic", lambda: now.value)
    return now


def test_exited_workload_restarts_after_the_backoff_keeping_one_dead_attempt(clock):
    running, exited = api_pb2.CONTAINER_RUNNING, api_pb2.CONTAINER_EXITED
    client = FakeClient([
        _container("burner-0", "shop", "cpu-burner", 0, running),
        _container("hog-0", "shop", "memory-hog", 0, exited),
        _container("hog-1", "shop", "memory-hog", 1, exited),
        _container("server-0", "server", "server", 0, running),
        _container("client-0", "client", "client", 0, running),
    ])  # fmt: skip
    run = demo.Demo("unit1")
    run.runtime = SimpleNamespace(client=client)
    run.pods = {"shop": ("shop", None), "tcp-server": ("server", None),
                "tcp-client": ("client", None)}  # fmt: skip
    run.restart_exited()
    assert client.created == []  # the exit was just seen: back off first
    clock.value += demo.RESTART_BACKOFF_S
    run.restart_exited()
    assert client.created == [("shop", "memory-hog", 2)]
    assert client.removed == ["hog-0"]  # the newest dead attempt stays, as with the kubelet


def test_container_configs_carry_the_limits_and_the_server_address():
    burner, hog, _, client = demo.WORKLOADS
    cpu = demo._container_config(burner, 0, {}).linux.resources
    assert (cpu.cpu_quota, cpu.cpu_period, cpu.memory_limit_in_bytes) == (50_000, 100_000, 0)
    memory = demo._container_config(hog, 3, {}).linux.resources
    assert memory.memory_limit_in_bytes == 48 << 20
    config = demo._container_config(client, 0, {"SERVER": "10.9.0.3"})
    assert [(e.key, e.value) for e in config.envs] == [("SERVER", "10.9.0.3")]
    assert (config.metadata.attempt, config.log_path) == (0, "client_0.log")
    assert config.command[:2] == ["sh", "-c"] and "$SERVER:8080" in config.command[2]


def test_image_archive_is_an_oci_layout_naming_the_demo_image(tmp_path):
    archive = demo.image_archive(tmp_path / "demo.tar")
    with tarfile.open(archive) as tar:
        names = tar.getnames()
        index = json.load(tar.extractfile("index.json"))
    assert "oci-layout" in names
    (manifest,) = index["manifests"]
    assert manifest["annotations"]["org.opencontainers.image.ref.name"] == demo.IMAGE
    assert f"blobs/sha256/{manifest['digest'].split(':')[1]}" in names


def test_tag_must_be_short_and_plain():
    with pytest.raises(ValueError, match="--tag"):
        demo.Demo("Bad/Tag")
