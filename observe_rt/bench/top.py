"""`observe-rt bench top`: the live view's own CPU use with N containers up, and the daemon's.

One session (a context manager: clean-up always runs, also after Ctrl-C or SIGTERM):

    /tmp/obt-XXXXXXXX/registry-*/  docker-registry on 127.0.0.1 with bench/busybox:1
    /tmp/obt-XXXXXXXX/o/           observe-rt daemon: config, socket, state, run dir, CNI, IPAM
    cgroup /observe-rt-bench-top-TAG/pod-N     bridge obtTAG (a private /24, no routes)

    containers  N pods of one `sleep 3600` container each (bench cri's pod and container)
    idle        the daemon's CPU time over `seconds`, nobody watching
    top         `observe-rt top --refresh R` in a 160x50 pseudo-terminal (the full Live loop:
                fetch, render, draw); once it shows all N containers, its CPU time (utime +
                stime, every thread) and the daemon's over `seconds`; then `q`
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import os
import pty
import secrets
import shutil
import signal
import struct
import subprocess
import tempfile
import termios
import threading
import time
from collections.abc import Callable
from pathlib import Path

from observe_rt.bench import common

HELP = "CPU use of `observe-rt top` (and of the daemon serving it) with N containers up"
TMP_PREFIX = "obt-"
SCREEN = (50, 160)  # rows, columns of the pseudo-terminal
SHOWN_TIMEOUT_S = 120.0  # until top's screen shows every container
SETTLE_S = 3.0  # collector ticks after the last container starts

OPTIONS = (
    common.Option("--containers", common.count(1), 100, "containers up (one per pod)",
                  always=True),
    common.Option("--seconds", common.count(1), 30, "length of each CPU window"),
    common.Option("--refresh", float, 1.0, "top's --refresh, seconds"),
)  # fmt: skip


def register(benchmarks) -> None:
    common.add_benchmark(benchmarks, "top", HELP, OPTIONS, run_top)


def run_top(args: argparse.Namespace) -> int:
    return common.run(args, "top", OPTIONS, root_reason="the daemon creates namespaces, cgroups",
                      cleaned="pods, daemon, shims, registry, mounts, bridge, cgroups, temp files",
                      measure=_measure, render=render)  # fmt: skip


def _measure(args: argparse.Namespace, errors) -> dict:
    with errors.status("starting the registry and the daemon, pulling busybox"):
        bench = TopBench()
    with bench:
        with common.progress(errors, args.containers, "containers") as advance:
            bench.start_containers(args.containers, advance)
        with errors.status(f"daemon alone for {args.seconds}s, then top for {args.seconds}s"):
            result = bench.measure(args.containers, args.seconds, args.refresh)
        return result | {"benchmark": "top", "host": common.host_info()}


class TopBench(common.Session):
    def __init__(self) -> None:
        from observe_rt.bench.cri_image import push_bench_images
        from observe_rt.bench.cri_runtimes import Network, ObserveRtRuntime
        from observe_rt.bench.cri_setup import pick_subnets
        from observe_rt.bench.registry import start_registry

        self.tmp = Path(tempfile.mkdtemp(prefix=TMP_PREFIX, dir="/tmp"))
        self.session = secrets.token_hex(3)
        self.cgroup_parent = f"/observe-rt-bench-top-{self.session}"
        self.registry = self.runtime = None
        self.pods = 0
        try:
            self.registry = start_registry(self.tmp, access_log=False)
            self.images = push_bench_images(self.registry.url, self.registry.host)
            network = Network(f"obt-{self.session}", f"obt{self.session}", pick_subnets(1)[0])
            self.runtime = ObserveRtRuntime(self.tmp / "o", network, self.cgroup_parent,
                                            common.clean_env())  # fmt: skip
            self.runtime.start(self.images)
        except BaseException:
            self.close()
            raise

    def start_containers(self, count: int, tick: Callable[[], None] | None) -> None:
        from observe_rt.bench.cri import container_config, pod_config

        client = self.runtime.client
        for index in range(count):
            config = pod_config(f"top-{index}", self.session, self.tmp / "logs" / str(index),
                                f"{self.cgroup_parent}/pod-{index}")  # fmt: skip
            pod_id = client.run_pod_sandbox(config)
            self.pods += 1
            cid = client.create_container(pod_id, container_config(self.images.busybox), config)
            client.start_container(cid)
            if tick is not None:
                tick()
        time.sleep(SETTLE_S)

    def measure(self, containers: int, seconds: int, refresh: float) -> dict:
        from observe_rt.bench import cri_calls

        url = cri_calls.metrics_url(self.runtime.log.read_text(errors="replace"))
        if url is None:
            raise RuntimeError("the daemon logged no metrics URL")
        api = url.removesuffix("/metrics")
        daemon = self.runtime.daemon_pid()
        idle = _window({"daemon": daemon}, seconds)
        with TopProcess(api, str(self.runtime.socket), refresh) as top:
            top.wait_for(f"containers ({containers}/{containers})", SHOWN_TIMEOUT_S)
            watched = _window({"top": top.process.pid, "daemon": daemon}, seconds)
            drawn = top.bytes_read
        return {
            "containers": containers, "refresh_s": refresh, "screen": list(SCREEN),
            "top": cri_calls.cpu_entry(watched["top"]),
            "daemon_idle": cri_calls.cpu_entry(idle["daemon"]),
            "daemon_with_top": cri_calls.cpu_entry(watched["daemon"]),
            "top_output_bytes": drawn,
        }  # fmt: skip

    def close(self) -> None:
        if self.runtime is not None:
            self.runtime.close()
        if self.registry is not None:
            self.registry.stop()
        shutil.rmtree(self.tmp, ignore_errors=True)


def _window(pids: dict[str, int], seconds: float) -> dict:
    """CPU time of each process over one window of `seconds` (all read together)."""
    from observe_rt.bench import cri_calls

    before = {name: cri_calls.read_cpu_ticks(pid) for name, pid in pids.items()}
    start = time.monotonic()
    time.sleep(seconds)
    after = {name: cri_calls.read_cpu_ticks(pid) for name, pid in pids.items()}
    window = round(time.monotonic() - start, 3)
    gone = [name for name in pids if before[name] is None or after[name] is None]
    if gone:
        raise RuntimeError(f"exited during the measurement: {', '.join(gone)}")
    return {name: cri_calls.CpuWindow(after[name] - before[name], cri_calls.clock_ticks_per_s(),
                                      window) for name in pids}  # fmt: skip


class TopProcess:
    """`observe-rt top` on a pseudo-terminal of SCREEN size; its output is drained (and only
    the tail kept) so drawing never blocks."""

    def __init__(self, api: str, socket: str, refresh: float) -> None:
        from observe_rt.bench.runtimes import observe_rt_argv

        self.argv = [*observe_rt_argv(), "top", "--api", api, "--socket", socket,
                     "--refresh", str(refresh)]  # fmt: skip
        self.tail = b""
        self.bytes_read = 0
        self.process: subprocess.Popen | None = None
        self._master = -1

    def __enter__(self) -> TopProcess:
        master, slave = pty.openpty()
        fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", *SCREEN, 0, 0))
        env = {k: v for k, v in common.clean_env().items() if k not in ("COLUMNS", "LINES")}
        self.process = subprocess.Popen(self.argv, stdin=slave, stdout=slave, stderr=slave,
                                        env=env | {"TERM": "xterm-256color"},
                                        start_new_session=True)  # fmt: skip
        os.close(slave)
        self._master = master
        threading.Thread(target=self._drain, daemon=True, name="top-output").start()
        return self

    def _drain(self) -> None:
        while True:
            try:
                chunk = os.read(self._master, 65536)
            except OSError:
                return
            if not chunk:
                return
            self.bytes_read += len(chunk)
            self.tail = (self.tail + chunk)[-262144:]

    def wait_for(self, text: str, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while text.encode() not in self.tail:
            if self.process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"top never showed {text!r}: {self.tail[-300:]!r}")
            time.sleep(0.2)

    def __exit__(self, *exc) -> None:
        with contextlib.suppress(OSError):
            os.write(self._master, b"q")
        try:
            self.process.wait(10)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()
        with contextlib.suppress(OSError):
            os.close(self._master)


# --- the report ----------------------------------------------------------------------------------

COLUMNS = ("process", "CPU ms per s", "% of one core", "window s")


def rows(result: dict) -> list[tuple[str, ...]]:
    entries = (("observe-rt top", result["top"]),
               ("daemon, nobody watching", result["daemon_idle"]),
               ("daemon, top watching", result["daemon_with_top"]))  # fmt: skip
    return [(name, f"{e['cpu_ms_per_s']:.1f}", f"{e['cpu_ms_per_s'] / 10:.2f}%",
             f"{e['window_s']:.1f}") for name, e in entries]  # fmt: skip


def command_line(args: argparse.Namespace) -> str:
    return common.command_line("top", args, OPTIONS)


def render(result: dict, console) -> None:
    title = (f"{result['containers']} containers, top refreshing every {result['refresh_s']:g}s "
             f"on a {result['screen'][1]}x{result['screen'][0]} terminal")  # fmt: skip
    notes = (
        "CPU time = utime + stime of the whole process (every thread), from /proc/<pid>/stat; "
        f"clock tick {result['top']['clock_tick_ms']:g} ms.",
        f"Measured by: {result['command']}",
    )
    common.render(console, ((title, COLUMNS, rows(result), 1),), notes)
