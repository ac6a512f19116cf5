"""Pure logic behind the fault handling: which errors mean a full disk, and finding the CNI
plugin runs a killed daemon left behind (on a fixture /proc with a real child process)."""

from __future__ import annotations

import errno
import os
import subprocess
import sys
from pathlib import Path

import grpc

from observe_rt import errors
from observe_rt.cri import rpc
from observe_rt.network.cni_exec import stop_plugins_of


def test_a_full_disk_anywhere_in_the_cause_chain_is_resource_exhausted():
    full = OSError(errno.ENOSPC, "No space left on device")
    try:
        try:
            raise full
        except OSError as err:
            raise errors.ObserveRtError(f"RunPodSandbox p: {err}") from err
    except errors.ObserveRtError as wrapped:
        assert rpc.disk_full(wrapped)
        assert rpc.status_code(wrapped) == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert rpc.status_code(OSError(errno.EDQUOT, "quota")) == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert not rpc.disk_full(OSError(errno.EACCES, "denied"))
    assert rpc.status_code(errors.NotFound("x")) == grpc.StatusCode.NOT_FOUND
    assert rpc.status_code(ValueError("bug")) == grpc.StatusCode.INTERNAL


def test_stop_plugins_of_kills_only_runs_for_that_container(tmp_path):
    env = dict(os.environ, CNI_CONTAINERID="pod-a", CNI_COMMAND="ADD", CNI_IFNAME="eth0")
    mine = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"], env=env)
    other = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"],
                             env=dict(env, CNI_CONTAINERID="pod-b"))  # fmt: skip
    net1 = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"],
                            env=dict(env, CNI_IFNAME="net1"))  # fmt: skip
    try:
        proc = tmp_path / "proc"  # the processes' environ, as /proc shows them
        for child in (mine, other, net1):
            (proc / str(child.pid)).mkdir(parents=True)
            environ = Path(f"/proc/{child.pid}/environ").read_bytes()
            (proc / str(child.pid) / "environ").write_bytes(environ)
        (proc / "self").mkdir()
        assert stop_plugins_of("pod-a", "eth0", str(proc)) == [mine.pid]
        assert mine.wait(10) == -9
        assert other.poll() is None and net1.poll() is None  # another pod; another interface
    finally:
        for child in (mine, other, net1):
            child.kill()
            child.wait()
