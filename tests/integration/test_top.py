"""`make run`'s demo in a real terminal (tmux): a real daemon with the demo pods, and
`observe-rt top` in front. The view must show the OOM kill, the CPU burner on top when sorted by
CPU, and the client's flow to the server; Ctrl-C must leave nothing behind.

One demo for the module (it takes ~20 s to start and the memory hog ~15 s to be OOM-killed);
the tests run in file order and the last one stops it.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import secrets
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from observe_rt.bench.bundle import cgroup_dirs, remove_cgroup_tree
from observe_rt.bench.containerd import mounts_under, unmount_under
from observe_rt.bench.cri_memory import command_lines
from tests.support.tmux import TmuxSession

OBSERVE_RT = str(Path(sys.executable).with_name("observe-rt"))
START_TIMEOUT = 180
FIRST_ROW = re.compile(r"^│ (demo/\S+)", re.MULTILINE)


class DemoRun:
    def __init__(self, tag: str, pane: TmuxSession) -> None:
        self.tag, self.pane = tag, pane
        self.base = Path(f"/tmp/ortd-{tag}")
        self.bridge = f"ortdemo{tag}"
        self.cgroup_parent = f"/observe-rt-demo-{tag}"
        self.info: dict = {}

    def processes(self) -> list[int]:
        marker = str(self.base) + "/"
        return [pid for pid, argv in command_lines().items()
                if pid != os.getpid() and any(marker in arg for arg in argv)]  # fmt: skip

    def leftovers(self) -> list[str]:
        found = [f"dir {self.base}"] if self.base.exists() else []
        found += [f"cgroup {d}" for d in cgroup_dirs(self.cgroup_parent)]
        found += [f"process {pid}" for pid in self.processes()]
        with open("/proc/self/mountinfo") as f:
            found += [f"mount {m}" for m in mounts_under(f.read(), self.base)]
        link = subprocess.run(["ip", "link", "show", self.bridge], capture_output=True)
        found += [f"bridge {self.bridge}"] if link.returncode == 0 else []
        return found

    def force_clean(self) -> None:
        """After a failure: what the demo should have removed itself."""
        for pid in self.processes():
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        remove_cgroup_tree(self.cgroup_parent)
        unmount_under(self.base)
        subprocess.run(["ip", "link", "del", self.bridge], capture_output=True, check=False)
        shutil.rmtree(self.base, ignore_errors=True)


def table_rows(screen: str) -> list[str]:
    return FIRST_ROW.findall(screen)


@pytest.fixture(scope="module")
def demo():
    tag = secrets.token_hex(3)
    argv = [sys.executable, "-m", "observe_rt.demo", "--tag", tag]
    with TmuxSession(f"ort-top-{tag}", argv, width=170, height=50) as pane:
        run = DemoRun(tag, pane)
        try:
            pane.wait_for(lambda s: "containers (4/4)" in s and len(table_rows(s)) == 4,
                          START_TIMEOUT, "the demo's four containers")  # fmt: skip
            run.info = json.loads((run.base / "demo.json").read_text())
            yield run
        finally:
            if not pane.exited():
                pane.send("C-c")
                with contextlib.suppress(AssertionError):
                    pane.wait_for(lambda s: "demo: done" in s, 90, "the demo's clean-up")
            run.force_clean()


def _pod_ips(socket: str) -> dict[str, str]:
    from observe_rt.client.cri_client import CriClient

    with CriClient(socket) as client:
        return {p.metadata.name: client.pod_sandbox_status(p.id).status.network.ip
                for p in client.list_pod_sandbox()}  # fmt: skip


def test_the_oom_kill_of_the_memory_hog_and_its_restart(demo):
    demo.pane.wait_for(
        lambda s: re.search(r"OOM\s+demo/shop/memory-hog  OOM killer stopped pid \d+", s),
        180, "an OOM event of the memory hog")  # fmt: skip
    demo.pane.wait_for(lambda s: "demo/shop/memory-hog  exited: OOMKilled, code 137" in s, 60,
                       "the memory hog's exit, OOMKilled")  # fmt: skip
    screen = demo.pane.wait_for(
        lambda s: re.search(r"│ demo/shop/memory-hog\s+\w+\s+[1-9]\d*\s", s), 120,
        "the memory hog's row with a restart")  # fmt: skip
    row = next(line for line in screen.splitlines() if "│ demo/shop/memory-hog" in line)
    oom_column = row.split()[8]  # │ name state restarts cpu% cpu%lim mem mem%lim OOM
    assert int(oom_column) >= 1, row


def test_cpu_burner_on_top_when_sorted_by_cpu(demo):
    demo.pane.send("s")
    demo.pane.wait_for(lambda s: "sort: mem" in s, 30, "sort: mem after s")
    for _ in range(6):  # mem -> syscalls -> errors -> oom -> net -> name -> cpu
        demo.pane.send("s")
    demo.pane.wait_for(lambda s: "sort: cpu" in s, 30, "sort: cpu after a full cycle")
    # The machine is shared: wait for a refresh where the burner leads (it is a busy loop).
    screen = demo.pane.wait_for(lambda s: table_rows(s)[:1] == ["demo/shop/cpu-burner"], 90,
                                "the CPU burner as the first row")  # fmt: skip
    burner = next(line for line in screen.splitlines() if "│ demo/shop/cpu-burner" in line)
    assert float(burner.split()[4]) > 0  # CPU% of the node


def test_flow_between_client_and_server(demo):
    ips = _pod_ips(demo.info["socket"])
    client, server = ips["tcp-client"], ips["tcp-server"]
    assert client and server and client != server
    demo.pane.send("/")
    demo.pane.send("-l", "client")
    demo.pane.send("Enter")
    flow = re.compile(rf"flow .* active {re.escape(client)}:\d+ → {re.escape(server)}:8080")
    screen = demo.pane.wait_for(lambda s: flow.search(s), 60, "the client's flow to the server")
    assert "detail: demo/tcp-client/client" in screen
    assert table_rows(screen) == ["demo/tcp-client/client"]
    demo.pane.send("Escape")
    demo.pane.wait_for(lambda s: len(table_rows(s)) == 4, 30, "all rows again")


def test_once_and_json_read_the_same_daemon(demo):
    api, socket = demo.info["api"], demo.info["socket"]
    doc = json.loads(subprocess.run([OBSERVE_RT, "top", "--json", "--api", api], check=True,
                                    capture_output=True, text=True, timeout=60).stdout)  # fmt: skip
    names = {c["name"] for c in doc["containers"]}
    assert {"cpu-burner", "client", "server"} <= names
    assert doc["probes"]["available"] in (True, False)
    once = subprocess.run([OBSERVE_RT, "top", "--once", "--api", api, "--socket", socket,
                           "--sort", "name"], check=True, capture_output=True, text=True,
                          timeout=60, env={**os.environ, "COLUMNS": "170"}).stdout  # fmt: skip
    assert table_rows(once) == ["demo/shop/cpu-burner", "demo/shop/memory-hog",
                                "demo/tcp-client/client", "demo/tcp-server/server"]  # fmt: skip


def test_daemon_down_is_said_and_retried(demo):
    closed = f"http://127.0.0.1:{_closed_port()}"
    argv = [OBSERVE_RT, "top", "--api", closed, "--socket", "/nonexistent"]
    once = subprocess.run([*argv, "--once"], capture_output=True, text=True, timeout=60)
    assert once.returncode == 1
    assert "is `observe-rt daemon` running?" in once.stderr
    with TmuxSession(f"ort-down-{demo.tag}", [*argv, "--refresh", "0.5"], 150, 40) as pane:
        first = pane.wait_for(lambda s: "daemon unreachable" in s, 30, "the daemon-down line")
        assert "(retrying)" in first
        time.sleep(2)  # several refreshes later it still runs and still says so
        assert not pane.exited() and "daemon unreachable" in pane.screen()
        pane.send("q")
        pane.wait_for(lambda s: "daemon unreachable" not in s, 30, "top quit with q")


def test_ctrl_c_stops_the_demo_and_leaves_nothing_behind(demo):
    assert demo.leftovers()  # it is running: there is something to clean
    demo.pane.send("C-c")
    demo.pane.wait_for(lambda s: "demo: done, nothing left behind" in s, 120, "the clean-up")
    assert demo.leftovers() == []


def _closed_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
