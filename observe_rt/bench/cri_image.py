"""The two images `bench cri` pulls: busybox for the workload, and a pause image for containerd.

Both share one layer built from the host's static busybox (every applet linked, /etc/passwd and
/etc/group, the usual empty directories), so the registry holds it once:

    bench/busybox:1   Cmd ["/bin/sh"]; the benchmark's container runs `sleep 3600` in it
    bench/pause:1     containerd's sandbox image: sleeps until SIGTERM/SIGINT, then exits 0

containerd's CRI plugin needs a sandbox image for every pod; observe-rt's pod shim holds the
pod's namespaces itself and pulls only busybox.
"""

from __future__ import annotations

import subprocess
from dataclasses import dataclass

from observe_rt.bench.bundle import BUSYBOX
from observe_rt.bench.image import (
    Image,
    build_image,
    directory,
    host_platform,
    link,
    push,
    regular,
    tar_bytes,
)

BUSYBOX_REPO = "bench/busybox"
PAUSE_REPO = "bench/pause"
TAG = "1"
# The sandbox process: a shell that sleeps in the background and waits, so a SIGTERM reaches the
# trap at once (a foreground sleep would delay it) and the shell exits 0, as pause does.
PAUSE_SCRIPT = 'trap "exit 0" TERM INT; while :; do sleep 3600 & wait; done'
PAUSE_ENTRYPOINT = ["/bin/sh", "-c", PAUSE_SCRIPT]
PASSWD = b"root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/false\n"
GROUP = b"root:x:0:\nnobody:x:65534:\n"


@dataclass(frozen=True)
class BenchImages:
    busybox: str  # references as a CRI client names them: 127.0.0.1:PORT/bench/busybox:1
    pause: str


def applets(busybox: str = BUSYBOX) -> list[str]:
    out = subprocess.run([busybox, "--list"], capture_output=True, text=True, check=True)
    return sorted(name for name in out.stdout.split() if name and name != "busybox")


def busybox_layer(busybox: str = BUSYBOX, names: list[str] | None = None) -> bytes:
    """One uncompressed layer: bin/busybox, a symlink per applet, a minimal /etc and empty dirs."""
    with open(busybox, "rb") as f:
        binary = f.read()
    entries = [directory(name) for name in ("bin", "dev", "etc", "proc", "root", "sys")]
    entries += [directory("tmp", 0o1777), regular("bin/busybox", binary, 0o755)]
    entries += [link(f"bin/{name}", "busybox") for name in (names or applets(busybox))]
    entries += [regular("etc/passwd", PASSWD), regular("etc/group", GROUP)]
    return tar_bytes(entries)


def bench_images(layer: bytes) -> dict[str, Image]:
    """Repository -> image: both on the same gzip layer, differing only in their config."""
    platform = host_platform()
    env = ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"]
    return {
        BUSYBOX_REPO: build_image([layer], ["gzip"], platform,
                                  config={"Env": env, "Cmd": ["/bin/sh"]}),
        PAUSE_REPO: build_image([layer], ["gzip"], platform,
                                config={"Env": env, "Entrypoint": PAUSE_ENTRYPOINT}),
    }  # fmt: skip


def push_bench_images(registry_url: str, host: str) -> BenchImages:
    """Build both images and push them to the loopback registry at `registry_url`."""
    images = bench_images(busybox_layer())
    for repository, image in images.items():
        push(image, registry_url, repository, TAG)
    return BenchImages(f"{host}/{BUSYBOX_REPO}:{TAG}", f"{host}/{PAUSE_REPO}:{TAG}")
