"""Security regressions of the executor (`observe-rt oci`), one CVE class each (REFERENCES.md).

Already covered elsewhere, not repeated here:
- only fds 0 1 2 in a `run` container, masked and readonly paths under the default spec, seccomp
  blocking, capabilities: test_runc_parity.test_default_spec_confinement_matches_runc;
- the init is non-dumpable until the workload's exec (no /proc/<init>/exe to the host
  interpreter, CVE-2019-5736): test_executor.test_create_is_non_dumpable_until_exec;
- a mount destination through an image symlink stays in the rootfs (CVE-2021-30465 class):
  test_executor.test_mount_destination_symlink_cannot_escape_rootfs;
- sysctl injection (CVE-2022-0811): test_bad_input.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.integration.test_executor import wait_status

pytestmark = pytest.mark.root

WORKLOADS = Path(__file__).resolve().parents[1] / "support" / "workloads"


@pytest.fixture(scope="session")
def security_probe(tmp_path_factory) -> Path:
    """tests/support/workloads/security_probe.c, built static for busybox rootfses."""
    if shutil.which("gcc") is None:
        pytest.skip("gcc is needed to build the security probe")
    binary = tmp_path_factory.mktemp("security-probe") / "security_probe"
    source = WORKLOADS / "security_probe.c"
    subprocess.run(["gcc", "-static", "-O1", "-o", binary, source], check=True)
    return binary


@pytest.fixture
def rootfs(busybox_rootfs, security_probe, tmp_path) -> Path:
    """A private copy of the busybox rootfs with the probe, for tests that plant traps in it."""
    root = tmp_path / "rootfs"
    shutil.copytree(busybox_rootfs, root, symlinks=True)
    shutil.copy(security_probe, root / "bin" / "security_probe")
    return root


@contextlib.contextmanager
def host_descriptors():
    """Inheritable descriptors of host objects, as a careless runtime would leak them: the
    cgroup root (CVE-2024-21626 used that one) and a host file."""
    fds = [os.open("/sys/fs/cgroup", os.O_RDONLY | os.O_DIRECTORY), os.open("/etc/hostname", 0)]
    try:
        for fd in fds:
            os.set_inheritable(fd, True)
        yield tuple(fds)
    finally:
        for fd in fds:
            os.close(fd)


def bind(source: Path, destination: str) -> dict:
    return {"destination": destination, "type": "bind", "source": str(source),
            "options": ["rbind", "rw"]}  # fmt: skip


def test_no_host_descriptor_reaches_the_workload_after_create_and_start(
    ort, bundles, rootfs, tmp_path
):
    """runc's fd allowlist check: the workload holds 0, 1, 2 and nothing else, even when the
    runtime was started holding host descriptors."""
    out = tmp_path / "out"
    out.mkdir()
    spec = bundles.spec(["sh", "-c", "security_probe fds > /out/fds"])
    spec["root"]["path"] = str(rootfs)
    spec["mounts"].append(bind(out, "/out"))
    container_id, bundle = bundles.write(spec)
    with host_descriptors() as leaked:
        ort("create", container_id, "--bundle", str(bundle), check=True, pass_fds=leaked)
        ort("start", container_id, check=True, pass_fds=leaked)
    assert wait_status(ort, container_id, "stopped", timeout=60)["status"] == "stopped"
    fds = dict(line.split(" ", 2)[1:] for line in (out / "fds").read_text().splitlines())
    assert sorted(fds) == ["0", "1", "2"], fds
    assert fds["1"] == "/out/fds" and fds["0"] == "/dev/null", fds


def test_cwd_through_proc_self_fd_cannot_reach_the_host(ort, bundles, rootfs):
    """CVE-2024-21626: process.cwd = /proc/self/fd/N, N a descriptor the init still holds,
    put the workload's cwd on the host. Each N either fails to start, with a message, or
    leaves a cwd from which '..' climbs only to the container's own root."""
    climb = "stat -c %d:%i /; cd ../../../../../../../../../..; stat -c %d:%i ."
    with host_descriptors() as leaked:
        for number in range(3, 16):
            spec = bundles.spec(["sh", "-c", climb])
            spec["root"]["path"] = str(rootfs)
            spec["process"]["cwd"] = f"/proc/self/fd/{number}"
            container_id, bundle = bundles.write(spec)
            result = ort("run", container_id, "--bundle", str(bundle), pass_fds=leaked)
            if result.returncode != 0:
                assert result.stderr.strip(), f"fd {number}: failed without a message"
                continue
            root, top = result.stdout.split()
            assert root == top, f"cwd /proc/self/fd/{number} climbed out of the container"


def test_proc_self_exe_is_the_workloads_binary_and_cannot_be_written(ort, bundles):
    """CVE-2019-5736: /proc/<pid>/exe of every process the container sees is its own binary,
    and writing through it fails; the host's runtime interpreter is unchanged."""
    interpreter = Path(os.path.realpath(sys.executable))
    before = hashlib.sha256(interpreter.read_bytes()).hexdigest()
    script = ("for p in /proc/[0-9]*; do readlink $p/exe; done | sort -u; "
              "(echo x >> /proc/1/exe) 2>&1 | sed 's/.*: //'")  # fmt: skip
    container_id, bundle = bundles.write(bundles.spec(["sh", "-c", script]))
    result = ort("run", container_id, "--bundle", str(bundle))
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines == ["/bin/busybox", "Text file busy"], lines
    assert hashlib.sha256(interpreter.read_bytes()).hexdigest() == before


def test_masked_and_readonly_paths_through_image_symlinks_stay_in_the_rootfs(
    ort, bundles, rootfs, tmp_path
):
    """A masked or readonly path that is an absolute symlink in the image is masked (made
    readonly) where the link points inside the rootfs; the host path of the same name is
    neither masked nor touched."""
    tag = f"observe-rt-mask-{os.getpid()}-{tmp_path.name}"
    host = Path("/tmp") / tag
    host.mkdir()
    try:
        (host / "host-file").write_text("host\n")
        for name in ("masked", "readonly"):
            (rootfs / "tmp" / tag / name).mkdir(parents=True)
            (rootfs / "tmp" / tag / name / "image-file").write_text("image\n")
            os.symlink(f"/tmp/{tag}/{name}", rootfs / f"evil-{name}")
        spec = bundles.spec(["sh", "-c", "ls -A /evil-masked/; cat /evil-readonly/image-file; "
                             "(touch /evil-readonly/new) 2>&1 | sed 's/.*: //'"])  # fmt: skip
        spec["root"]["path"] = str(rootfs)
        spec["linux"]["maskedPaths"].append("/evil-masked")
        spec["linux"]["readonlyPaths"].append("/evil-readonly")
        container_id, bundle = bundles.write(spec)
        result = ort("run", container_id, "--bundle", str(bundle))
        assert result.returncode == 0, result.stderr
        assert result.stdout.splitlines() == ["image", "Read-only file system"]
        assert sorted(os.listdir(host)) == ["host-file"]
        with open("/proc/self/mountinfo") as mountinfo:
            assert str(host) not in mountinfo.read()
    finally:
        shutil.rmtree(host)


def test_dev_null_swapped_for_a_symlink_never_masks_with_a_host_file(
    ort, bundles, rootfs, tmp_path
):
    """CVE-2025-31133: masking binds /dev/null over the masked files. With an image /dev/null
    that links to a host file, the container must not get that file over /proc/keys."""
    victim = tmp_path / "victim"
    victim.write_text("host secret\n")
    (rootfs / "dev").mkdir(exist_ok=True)
    with contextlib.suppress(FileNotFoundError):
        os.unlink(rootfs / "dev" / "null")
    os.symlink(str(victim), rootfs / "dev" / "null")
    spec = bundles.spec(["sh", "-c", "stat -c '%F %t:%T' /proc/keys; head -c 64 /proc/keys"])
    spec["root"]["path"] = str(rootfs)
    spec["mounts"] = [m for m in spec["mounts"] if m["destination"] != "/dev"]  # the image's /dev
    container_id, bundle = bundles.write(spec)
    result = ort("run", container_id, "--bundle", str(bundle))
    assert "host secret" not in result.stdout
    if result.returncode == 0:
        assert result.stdout.splitlines() == ["character special file 1:3"]
    else:
        assert "/dev/null" in result.stderr, result.stderr
    assert victim.read_text() == "host secret\n"


@pytest.mark.parametrize("kernel_fs", ["proc", "sys"])
def test_proc_or_sys_as_an_image_symlink_is_refused(ort, bundles, rootfs, kernel_fs):
    """An image that makes /proc (or /sys) a symlink would get procfs mounted at the link's
    target, and /proc/sys (or /sys/firmware) left unprotected, since those paths then lead
    through a symlink: /proc/sys writable by the container's root is a host escape
    (kernel.core_pattern). As runc does, proc and sysfs go on ordinary directories only."""
    shutil.rmtree(rootfs / kernel_fs, ignore_errors=True)
    os.symlink(f"/x{kernel_fs}", rootfs / kernel_fs)
    spec = bundles.spec(["sh", "-c", "echo test > /proc/sys/kernel/domainname; ls /sys/firmware"])
    spec["root"]["path"] = str(rootfs)
    container_id, bundle = bundles.write(spec)
    result = ort("run", container_id, "--bundle", str(bundle))
    assert result.returncode != 0
    assert f"on /{kernel_fs}: the rootfs has a symlink" in result.stderr, result.stderr
    assert "acpi" not in result.stdout
