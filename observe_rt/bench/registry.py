"""Debian's docker-registry on 127.0.0.1 with its own temporary config.

Shared by `bench pull` and the integration tests (tests/support/registry.py re-exports these),
so both pull from a registry started the same way:

    with running_registry(tmp) as registry: ...     # registry.url == "http://127.0.0.1:PORT"

The registry listens on a free loopback port and is stopped on exit, also on failure.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import socket
import ssl
import subprocess
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

REGISTRY_BIN = "/usr/bin/docker-registry"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass
class RunningRegistry:
    url: str
    root: Path
    process: subprocess.Popen = field(repr=False)
    log: Path = field(repr=False)

    @property
    def host(self) -> str:
        return urlsplit(self.url).netloc

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


@contextlib.contextmanager
def running_registry(
    workdir: Path, storage: Path | None = None, auth: dict | None = None, tls=None, **options
):
    registry = start_registry(workdir, storage, auth, tls, **options)
    try:
        yield registry
    finally:
        registry.stop()


def registry_config(
    port: int, storage: Path, auth: dict | None = None, tls=None, access_log: bool = True
) -> dict:
    """docker-registry's config.yml (as a dict) for a loopback registry on `port`."""
    config = {
        "version": 0.1,
        "log": {"level": "info", "formatter": "text", "accesslog": {"disabled": not access_log}},
        "storage": {"filesystem": {"rootdirectory": str(storage)}, "delete": {"enabled": True}},
        "http": {"addr": f"127.0.0.1:{port}", "secret": "observe-rt-tests"},
        "health": {"storagedriver": {"enabled": False}},
    } | ({"auth": auth} if auth else {})
    if tls:
        config["http"]["tls"] = {"certificate": str(tls[0]), "key": str(tls[1])}
    return config


def start_registry(
    workdir: Path,
    storage: Path | None = None,
    auth: dict | None = None,
    tls=None,
    access_log: bool = True,
) -> RunningRegistry:
    """Start docker-registry with its own config.yml; `storage` may be shared with another.

    auth: the config's `auth:` section; tls: (certificate, key) paths to serve HTTPS;
    access_log=False keeps the log small when gigabytes go through (benchmarks).
    """
    workdir = Path(workdir) / f"registry-{uuid.uuid4().hex[:6]}"
    workdir.mkdir(parents=True)
    storage = storage or workdir / "storage"
    storage.mkdir(parents=True, exist_ok=True)
    port = free_port()
    config_file = workdir / "config.yml"
    config = registry_config(port, storage, auth, tls, access_log)
    config_file.write_text(json.dumps(config, indent=1))  # JSON is YAML
    log = workdir / "registry.log"
    with open(log, "wb") as out:
        process = subprocess.Popen(
            [REGISTRY_BIN, "serve", str(config_file)],
            stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
        )  # fmt: skip
    scheme = "https" if tls else "http"
    registry = RunningRegistry(f"{scheme}://127.0.0.1:{port}", storage, process, log)
    try:
        wait_until_serving(registry)
    except BaseException:
        registry.stop()
        raise
    return registry


def wait_until_serving(registry: RunningRegistry, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if registry.process.poll() is not None:
            raise RuntimeError(f"docker-registry exited: {registry.log.read_text()[-2000:]}")
        try:
            conn = http.client.HTTPConnection(registry.host, timeout=1)
            if registry.url.startswith("https"):
                unverified = ssl._create_unverified_context()  # only asks "is it up?"
                conn = http.client.HTTPSConnection(registry.host, timeout=1, context=unverified)
            conn.request("GET", "/v2/")
            conn.getresponse().read()
            conn.close()
            return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"docker-registry did not serve in {timeout}s: {registry.log.read_text()}")
