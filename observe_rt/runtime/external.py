"""Another OCI runtime (runc, crun) as a CRI runtime handler, driven like the built-in executor.

The pod shim calls the same five operations on either: create (with the workload's stdio),
start, kill, delete, and whether the memory cgroup OOM-killed the container. The bundle is the
same one the built-in executor would run.
"""

from __future__ import annotations

import json
import os
import subprocess
import tempfile
import time
from dataclasses import dataclass

from observe_rt.errors import DeadlineExceeded, FailedPrecondition, NotFound, ObserveRtError
from observe_rt.runtime import cgroups


@dataclass
class Created:
    pid: int


class ExternalRuntime:
    def __init__(self, binary: str, root: str) -> None:
        self.binary = binary
        self.root = root
        os.makedirs(root, mode=0o711, exist_ok=True)
        self.bundles: dict[str, str] = {}

    def _run(self, *args: str, stdio=(None, None, None)) -> None:
        """Run one command. The runtime hands its stdio to the container, so its own messages
        are read from --log, never from a pipe the container would keep open."""
        with tempfile.NamedTemporaryFile("r", prefix="oci-log-", dir=self.root) as log:
            result = subprocess.run(
                [self.binary, "--root", self.root, "--log", log.name, "--log-format", "json",
                 *args],
                stdin=stdio[0], stdout=stdio[1], stderr=stdio[2], timeout=60, check=False,
            )  # fmt: skip
            if result.returncode == 0:
                return
            messages = [json.loads(line).get("msg", "") for line in log if line.strip()]
        message = "; ".join(m for m in messages if m) or f"exit status {result.returncode}"
        kind = NotFound if "does not exist" in message else FailedPrecondition
        raise kind(f"{os.path.basename(self.binary)} {args[0]}: {message}")

    def create(self, container_id: str, bundle: str, stdio=(None, None, None)) -> Created:
        pid_file = os.path.join(bundle, f"{container_id}.pid")
        self._run("create", "--bundle", bundle, "--pid-file", pid_file, container_id, stdio=stdio)
        self.bundles[container_id] = bundle
        with open(pid_file) as f:
            return Created(int(f.read().strip()))

    def start(self, container_id: str) -> None:
        self._run("start", container_id)

    def kill(self, container_id: str, sig: int = 15, all_processes: bool = False) -> None:
        self._run("kill", *(["--all"] if all_processes else []), container_id, str(sig))

    def delete(self, container_id: str, force: bool = False) -> None:
        self._run("delete", *(["--force"] if force else []), container_id)

    def exec_sync(self, container_id: str, args: list[str], timeout: float):
        """`<runtime> exec`, with the same output cap and timeout as the built-in ExecSync."""
        from observe_rt.runtime.exec import OUTPUT_LIMIT, ExecResult, collect_output

        out_r, out_w = os.pipe()
        err_r, err_w = os.pipe()
        process = subprocess.Popen(
            [self.binary, "--root", self.root, "exec", container_id, *args],
            stdin=subprocess.DEVNULL, stdout=out_w, stderr=err_w, start_new_session=True,
        )  # fmt: skip
        os.close(out_w)
        os.close(err_w)
        deadline = time.monotonic() + timeout if timeout > 0 else None
        stdout, stderr, truncated = collect_output(out_r, err_r, deadline, OUTPUT_LIMIT)
        if stdout is None:
            os.killpg(process.pid, 9)
            process.wait()
            raise DeadlineExceeded(f"command timed out after {timeout:g}s and was killed")
        return ExecResult(process.wait(), stdout, stderr, truncated)

    def oom_killed(self, container_id: str) -> bool:
        """From the container's own memory cgroup, found through its bundle's cgroupsPath."""
        bundle = self.bundles.get(container_id)
        if bundle is None:
            return False
        try:
            with open(os.path.join(bundle, "config.json")) as f:
                path = json.load(f)["linux"]["cgroupsPath"]
            plan = cgroups.plan(None, path, cgroups.detect_layout(), container_id)
            return cgroups.CgroupManager(plan).oom_kill_count() > 0
        except (OSError, KeyError, ValueError, ObserveRtError):
            return False
