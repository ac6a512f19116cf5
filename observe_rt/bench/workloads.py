"""The probe benchmark's image: busybox plus two static C workloads and a page to serve.

    bench/workloads:1   the bench busybox layer, then a layer with
                          /bench/syscall_rate   N getppid calls, prints ns per call
                          /bench/http_load      HTTP/1.0 load on 127.0.0.1 (new connection each)
                          /www/index.html       WWW_BYTES bytes for busybox httpd to serve

The C sources live next to this module (workloads/*.c) and are compiled here with
`gcc -static -O2`, so no dynamic loader adds syscalls and the binaries run in any rootfs.
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from pathlib import Path

from observe_rt.bench.cri_image import busybox_layer
from observe_rt.bench.image import build_image, directory, host_platform, push, regular, tar_bytes

SOURCES = Path(__file__).with_name("workloads")
PROGRAMS = ("syscall_rate", "http_load")
REPO = "bench/workloads"
TAG = "1"
WWW_BYTES = 1024  # one small page: the cost is per request (connection, fork), not per byte
HTTPD_PORT = 8080


class WorkloadBuildError(RuntimeError):
    """gcc is missing or a workload does not compile; the message says which."""


def compile_programs(out_dir: Path, sources: Path = SOURCES) -> dict[str, bytes]:
    """name -> static binary of each workload."""
    gcc = shutil.which("gcc")
    if gcc is None:
        raise WorkloadBuildError("gcc not found: `apt-get install gcc libc6-dev` (static glibc)")
    binaries = {}
    for name in PROGRAMS:
        target = out_dir / name
        result = subprocess.run(
            [gcc, "-static", "-O2", "-Wall", "-o", str(target), str(sources / f"{name}.c")],
            capture_output=True, text=True, timeout=120, check=False,
        )  # fmt: skip
        if result.returncode != 0:
            raise WorkloadBuildError(f"gcc {name}.c failed: {result.stderr.strip()[-500:]}")
        binaries[name] = target.read_bytes()
    return binaries


def workloads_layer(binaries: dict[str, bytes]) -> bytes:
    entries = [directory("bench"), directory("www")]
    entries += [regular(f"bench/{name}", data, 0o755) for name, data in sorted(binaries.items())]
    entries.append(regular("www/index.html", b"x" * WWW_BYTES))
    return tar_bytes(entries)


def push_workloads_image(registry_url: str, host: str) -> str:
    """Build the image and push it to the loopback registry; its reference."""
    with tempfile.TemporaryDirectory(prefix="ocb-gcc-") as tmp:
        binaries = compile_programs(Path(tmp))
    env = ["PATH=/bench:/usr/sbin:/usr/bin:/sbin:/bin"]
    image = build_image([busybox_layer(), workloads_layer(binaries)], ["gzip", "gzip"],
                        host_platform(), config={"Env": env, "Cmd": ["/bin/sh"]})  # fmt: skip
    push(image, registry_url, REPO, TAG)
    return f"{host}/{REPO}:{TAG}"


def parse_syscall_rate(output: str) -> float:
    """ns per call from syscall_rate's line "calls N ns_total T ns_per_call X"."""
    fields = _fields(output, "calls")
    return float(fields["ns_per_call"])


def parse_http_load(output: str) -> dict[str, float]:
    """requests, errors, bytes and seconds from http_load's line."""
    fields = _fields(output, "requests")
    return {key: float(fields[key]) for key in ("requests", "errors", "bytes", "seconds")}


def _fields(output: str, first: str) -> dict[str, str]:
    for line in output.splitlines():
        words = line.split()
        if words and words[0] == first and len(words) % 2 == 0:
            return dict(zip(words[::2], words[1::2], strict=True))
    raise ValueError(f"no '{first} ...' line in the workload's output: {output.strip()[:200]!r}")
