"""The daemon's side of the pod shim: start one, and talk to it."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

from observe_rt import errors
from observe_rt.runtime.state import process_alive

_START_TIMEOUT = 15.0


class ShimGone(errors.Unavailable):
    """The shim does not answer: it died, or was never started."""


class ShimClient:
    def __init__(self, directory: Path) -> None:
        self.dir = Path(directory)

    @property
    def socket_path(self) -> Path:
        """Where the shim listens, as it recorded (kept short: unix paths end at 107 bytes)."""
        try:
            return Path(self.info()["socket"])
        except (OSError, ValueError, KeyError):
            return self.dir / "shim.sock"

    @classmethod
    def start(cls, directory: Path, oci_root: str, new_namespaces: set[str], hostname: str,
              log_path: Path, runtime: str = "", sysctls: dict[str, str] | None = None,
              socket_path: Path | None = None) -> tuple[ShimClient, dict]:  # fmt: skip
        """Start a detached shim (own session: it survives the daemon) and wait until ready."""
        directory.mkdir(parents=True, exist_ok=True)
        (directory / "shim.json").unlink(missing_ok=True)
        argv = [
            sys.executable,
            "-m",
            "observe_rt.pod.shim",
            "--dir",
            str(directory),
            "--oci-root",
            oci_root,
            "--hostname",
            hostname,
            "--new-namespaces",
            ",".join(sorted(new_namespaces)),
            "--runtime",
            runtime,
        ]
        argv += [f"--sysctl={path}={value}" for path, value in (sysctls or {}).items()]
        if socket_path:
            argv += ["--socket", str(socket_path)]  # fmt: skip
        with open(log_path, "ab") as log:
            process = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=log, stderr=log,
                                       start_new_session=True, close_fds=True)  # fmt: skip
        client = cls(directory)
        deadline = time.monotonic() + _START_TIMEOUT
        while not (directory / "shim.json").exists():
            if process.poll() is not None:
                raise errors.ObserveRtError(
                    f"pod shim exited with {process.returncode} while starting; see {log_path}"
                )
            if time.monotonic() > deadline:
                process.kill()
                raise errors.Unavailable(f"pod shim did not start in {_START_TIMEOUT:.0f}s")
            time.sleep(0.01)
        return client, client.info()

    def info(self) -> dict:
        with open(self.dir / "shim.json") as f:
            return json.load(f)

    def alive(self) -> bool:
        try:
            info = self.info()
        except (OSError, ValueError):
            return False
        return process_alive(info["pid"], info["start_time"])

    def call(self, op: str, timeout: float = 60.0, **args) -> dict:
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as conn:
                conn.settimeout(timeout)
                conn.connect(str(self.socket_path))
                conn.sendall(json.dumps({"op": op, **args}).encode() + b"\n")
                reply = conn.makefile("rb").readline()
        except (FileNotFoundError, ConnectionRefusedError) as err:
            raise ShimGone(f"pod shim in {self.dir} is not running ({err.strerror})") from None
        except TimeoutError:
            raise errors.Unavailable(f"pod shim in {self.dir}: {op} timed out") from None
        if not reply:
            raise ShimGone(f"pod shim in {self.dir} closed the connection during {op}")
        answer = json.loads(reply)
        if "error" in answer:
            raise _error(answer.get("code", "INTERNAL"), answer["error"])
        return answer

    def attach_stdin(self, container_id: str) -> socket.socket:
        """A connection whose bytes the shim writes to the container's stdin (close: done)."""
        conn = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            conn.settimeout(10)
            conn.connect(str(self.socket_path))
            conn.sendall(json.dumps({"op": "attach", "id": container_id}).encode() + b"\n")
            reply = b""
            while not reply.endswith(b"\n"):  # byte by byte: nothing after the line is ours
                if not (byte := conn.recv(1)):
                    raise ConnectionResetError("it closed the connection during attach")
                reply += byte
        except OSError as err:
            conn.close()
            raise ShimGone(f"pod shim in {self.dir} is not reachable ({err})") from None
        try:
            answer = json.loads(reply)
        except ValueError:
            why = f"pod shim in {self.dir} answered {reply[:80]!r}"
            answer = {"error": why, "code": "UNAVAILABLE"}
        if "error" in answer:
            conn.close()
            raise _error(answer.get("code", "INTERNAL"), answer["error"])
        conn.settimeout(None)
        return conn

    def wait_gone(self, timeout: float = 10.0) -> bool:
        deadline = time.monotonic() + timeout
        while self.alive():
            if time.monotonic() > deadline:
                return False
            time.sleep(0.02)
        return True

    def kill(self) -> None:
        """Last resort when the shim does not answer."""
        try:
            info = self.info()
        except (OSError, ValueError):
            return
        if process_alive(info["pid"], info["start_time"]):
            os.kill(info["pid"], 9)


def _error(code: str, message: str) -> errors.ObserveRtError:
    kinds = {cls.grpc_code: cls for cls in (errors.InvalidArgument, errors.NotFound,
             errors.AlreadyExists, errors.FailedPrecondition, errors.Unavailable)}  # fmt: skip
    error = kinds.get(code, errors.ObserveRtError)(message)
    error.grpc_code = code
    return error
