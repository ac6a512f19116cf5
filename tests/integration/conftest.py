"""Integration tier: root, the real kernel. Each test gets its own state roots and cgroup parent."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import uuid
from pathlib import Path

import pytest

from observe_rt.cri.v1 import api_pb2
from tests.support import footprint, images
from tests.support.bundles import BundleFactory, make_busybox_rootfs, remove_cgroup_tree
from tests.support.daemon import running_daemon
from tests.support.faults import FaultyCni, Witness
from tests.support.registry import running_registry

OBSERVE_RT = str(Path(sys.executable).with_name("observe-rt"))
RUNC = shutil.which("runc") or "/usr/sbin/runc"


def pytest_collection_modifyitems(items):
    if os.geteuid() != 0:
        skip = pytest.mark.skip(reason="integration tests need root and the real kernel")
        for item in items:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def busybox_rootfs(tmp_path_factory) -> Path:
    return make_busybox_rootfs(tmp_path_factory.mktemp("rootfs") / "rootfs")


@pytest.fixture
def cgroup_parent():
    parent = f"/observe-rt-test-{uuid.uuid4().hex[:8]}"
    yield parent
    remove_cgroup_tree(parent)


@pytest.fixture
def bundles(tmp_path, busybox_rootfs, cgroup_parent) -> BundleFactory:
    return BundleFactory(tmp_path / "bundles", busybox_rootfs, cgroup_parent)


class Cli:
    """Runs an OCI-style runtime CLI (observe-rt oci or runc) with a private state root."""

    def __init__(self, argv: list[str], root: Path) -> None:
        self.argv = argv
        self.root = root

    def __call__(self, *args: str, check: bool = False, timeout: float = 60, **kw):
        # Files, not pipes: a created container inherits them and would hold a pipe open
        # long after the runtime exited, as it does with runc.
        with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
            code = subprocess.run(
                [*self.argv, "--root", str(self.root), *args],
                stdin=subprocess.DEVNULL, stdout=out, stderr=err, timeout=timeout, **kw,
            ).returncode  # fmt: skip
            out.seek(0), err.seek(0)
            result = subprocess.CompletedProcess(args, code, out.read(), err.read())
        if check and result.returncode != 0:
            raise AssertionError(f"{args} failed ({result.returncode}): {result.stderr}")
        return result

    def cleanup(self) -> None:
        if not self.root.exists():
            return
        for container_id in os.listdir(self.root):
            self("delete", "--force", container_id)


@pytest.fixture
def ort(tmp_path):
    cli = Cli([OBSERVE_RT, "oci"], tmp_path / "ort-state")
    yield cli
    cli.cleanup()


@pytest.fixture
def runc(tmp_path):
    cli = Cli([RUNC], tmp_path / "runc-state")
    yield cli
    cli.cleanup()


# --- a real daemon, for the CRI tests ---------------------------------------------------


@pytest.fixture(scope="module")
def daemon_registry(tmp_path_factory):
    with running_registry(tmp_path_factory.mktemp("daemon-registry")) as running:
        images.push(images.busybox_image(), running.url, "test/busybox", "1")
        yield running


@pytest.fixture(scope="module")
def daemon(daemon_registry):
    with running_daemon() as running:
        image = f"{daemon_registry.host}/test/busybox:1"
        running.images().PullImage(api_pb2.PullImageRequest(image=api_pb2.ImageSpec(image=image)))
        running.image = image
        yield running


# --- the fault tests' shared set-up (test_faults*.py) ---------------------------------------


@pytest.fixture(scope="module")
def faulty(daemon) -> FaultyCni:
    """The daemon's CNI chain with a plugin the test can make fail or hang."""
    return FaultyCni.install(daemon)


@pytest.fixture(scope="module")
def witness(daemon, faulty) -> Witness:
    """A pod that must live through every fault of the module."""
    return Witness.start(daemon)


@pytest.fixture
def baseline(daemon, faulty, witness) -> dict:
    """The host as it is before the fault: only the witness pod."""
    faulty.set()
    return footprint.inventory(daemon, counters=False)
