"""Security regressions through the CRI daemon, with an image pulled with credentials from an
auth-protected registry on 127.0.0.1. The image is built to attack: a static probe for the
syscalls busybox cannot make, an absolute symlink aimed at a host path, and a Volume whose path
climbs out of the rootfs (CVE-2022-23648).

Executor-level classes (fd leaks, cwd through /proc/self/fd, /proc/self/exe, masked paths,
symlinked /proc) are in test_security_executor.py; bad CRI input in test_daemon_bad_input.py.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import os
import shutil
import subprocess
import sys
import threading
import urllib.request
import uuid
from pathlib import Path

import grpc
import pytest

from observe_rt.cri.v1 import api_pb2
from tests.integration.test_daemon_stats import metrics_url
from tests.integration.test_security_executor import security_probe  # noqa: F401 - a fixture
from tests.support import images
from tests.support.daemon import (
    container_config,
    pod_config,
    run_pod,
    running_daemon,
    start_container,
)
from tests.support.registry import htpasswd_auth, running_registry

pytestmark = pytest.mark.root

USER = "alice"
TAG = f"observe-rt-sec-{uuid.uuid4().hex[:8]}"
ESCAPE = Path("/tmp") / f"{TAG}-escape"  # the image's symlink aims here; it must never appear
VOLUME = Path("/tmp") / f"{TAG}-volume"  # a host directory the image's Volume climbs to


def hostile_image(probe: Path):
    extra = images.tar_bytes([
        images.directory("bin"),
        images.regular("bin/security_probe", probe.read_bytes(), 0o755),
        images.link("evil", str(ESCAPE)),
    ])  # fmt: skip
    config = {"Env": ["PATH=/bin"], "Cmd": ["/bin/sh"],
              "Volumes": {f"/../../../../../..{VOLUME}": {}, "/data": {}}}  # fmt: skip
    return images.build_image([images.busybox_layer(), extra], ["gzip", "gzip"],
                              images.host_platform(), config=config)  # fmt: skip


@pytest.fixture(scope="module")
def secure(tmp_path_factory, security_probe):  # noqa: F811 - the imported fixture
    """A daemon that pulled the hostile image from a registry that wants a password."""
    secret = f"pw-{uuid.uuid4().hex}"
    work = tmp_path_factory.mktemp("secure-registry")
    VOLUME.mkdir()
    (VOLUME / "host-secret").write_text("host only\n")
    try:
        with running_registry(work, auth=htpasswd_auth(work, {USER: secret})) as registry, \
             running_daemon() as daemon:  # fmt: skip
            images.push(hostile_image(security_probe), registry.url, "sec/hostile", "1",
                        auth=(USER, secret))  # fmt: skip
            daemon.image = f"{registry.host}/sec/hostile:1"
            auth = api_pb2.AuthConfig(username=USER, password=secret)
            daemon.images().PullImage(
                api_pb2.PullImageRequest(image=api_pb2.ImageSpec(image=daemon.image), auth=auth)
            )
            daemon.secret = secret
            yield daemon
    finally:
        shutil.rmtree(VOLUME, ignore_errors=True)
        shutil.rmtree(ESCAPE, ignore_errors=True)


@pytest.fixture(scope="module")
def app(secure):
    """A running container of the hostile image under the default profile (RuntimeDefault
    seccomp, the 14 default capabilities, masked and readonly paths)."""
    config = pod_config(secure)
    pod_id = run_pod(secure, config)
    mount = api_pb2.Mount(container_path="/evil/mnt", host_path=str(VOLUME.parent / TAG))
    os.makedirs(mount.host_path, exist_ok=True)
    (Path(mount.host_path) / "marker").write_text("mounted\n")
    spec = container_config(secure, "app", "sleep 600", mounts=[mount])
    try:
        yield start_container(secure, pod_id, config, spec)
    finally:
        shutil.rmtree(mount.host_path, ignore_errors=True)


def exec_sync(daemon, cid: str, *cmd: str, timeout: int = 30) -> api_pb2.ExecSyncResponse:
    return daemon.runtime().ExecSync(
        api_pb2.ExecSyncRequest(container_id=cid, cmd=list(cmd), timeout=timeout), timeout=120
    )


def sh(daemon, cid: str, script: str) -> str:
    result = exec_sync(daemon, cid, "sh", "-c", script)
    return result.stdout.decode() + result.stderr.decode()


# --- the workload's confinement ----------------------------------------------------------------


def test_workload_and_exec_hold_no_host_descriptor(secure, app):
    """runc's fd allowlist: the workload and an ExecSync command hold 0, 1 and 2 only, and
    none of them is a host file or directory."""
    script = "for f in /proc/$(pidof sleep)/fd/*; do echo ${f##*/} $(readlink $f); done"
    workload = sh(secure, app, script)
    exec_fds = exec_sync(secure, app, "security_probe", "fds").stdout.decode()
    for listing in (workload, exec_fds.replace("fd ", "")):
        fds = dict(line.partition(" ")[::2] for line in listing.splitlines())
        assert sorted(fds) == ["0", "1", "2"], listing
        assert all(t == "/dev/null" or t.startswith(("pipe:", "socket:")) for t in fds.values()), (
            listing
        )


def test_workload_cannot_mount_load_bpf_unshare_or_ptrace_the_host(secure, app):
    """Default capabilities and RuntimeDefault seccomp: each attempt is refused. Outside
    targets: the pod's shim (pid 1 of the pod's pid namespace, a host process) and the
    daemon's host pid, which means nothing in there."""
    outcomes = {
        "mount": exec_sync(secure, app, "security_probe", "mount"),
        "bpf": exec_sync(secure, app, "security_probe", "bpf"),
        "unshare": exec_sync(secure, app, "security_probe", "unshare"),
        "ptrace": exec_sync(secure, app, "security_probe", "ptrace", "1"),
        "ptrace ": exec_sync(secure, app, "security_probe", "ptrace", str(secure.process.pid)),
    }
    for what, result in outcomes.items():
        line = result.stdout.decode().strip()
        assert result.exit_code == 1 and line.split()[0] == what.strip(), line
        assert line.split()[1] in ("EPERM", "EACCES", "ESRCH"), line
    exes = sh(secure, app, "for p in /proc/[0-9]*; do readlink $p/exe; done | sort -u")
    assert exes.split() == ["/bin/busybox"], exes  # the shim is there, but its exe is hidden


def test_masked_and_readonly_paths_cannot_be_written(secure, app):
    script = (
        "stat -c '%t:%T' /proc/keys; head -c 1 /proc/keys | wc -c; ls -A /sys/firmware | wc -l;"
        "for p in /proc/sys/kernel/domainname /proc/sys/kernel/core_pattern /sys/firmware/x"
        " /proc/sys/kernel/hostname /proc/sys/vm/drop_caches; do"
        " (echo 1 > $p) 2>&1 | sed 's/.*: //'; done"
    )
    assert sh(secure, app, script).splitlines() == [
        "1:3", "0", "0", *["Read-only file system"] * 5,
    ]  # fmt: skip


def test_exec_never_shows_the_host_runtime_through_proc_exe(secure, app):
    """CVE-2019-5736: while ExecSync enters the container, a process in it watches every
    /proc/<pid>/exe: none may be the runtime's host binary, none may be opened for writing;
    the host's interpreter is unchanged afterwards."""
    interpreter = Path(os.path.realpath(sys.executable))
    before = hashlib.sha256(interpreter.read_bytes()).hexdigest()
    watch = ("end=$(($(date +%s)+20)); while [ $(date +%s) -lt $end ]; do "
             "for p in /proc/[0-9]*; do e=$(readlink $p/exe 2>/dev/null) || continue; "
             'case "$e" in /bin/*) ;; *) echo "LEAK $p $e"; '
             '(echo x >> $p/exe) 2>/dev/null && echo "WROTE $p";; esac; done; done')  # fmt: skip
    found = []
    watcher = threading.Thread(target=lambda: found.append(sh(secure, app, watch)))
    watcher.start()
    try:
        for _ in range(15):
            assert exec_sync(secure, app, "true").exit_code == 0
    finally:
        watcher.join(120)
    assert found == [""], found
    assert hashlib.sha256(interpreter.read_bytes()).hexdigest() == before


# --- mounts and image volumes ------------------------------------------------------------------


def test_mount_through_an_image_symlink_and_image_volumes_stay_inside(secure, app):
    """The CRI mount /evil/mnt goes where the image's /evil link points inside the rootfs, not
    to the host path it names; the image Volume that climbs out gets no mount at all."""
    assert sh(secure, app, "cat /evil/mnt/marker") == "mounted\n"
    assert sh(secure, app, f"readlink /evil; cat {ESCAPE}/mnt/marker") == f"{ESCAPE}\nmounted\n"
    assert not ESCAPE.exists()
    assert "host only" not in sh(secure, app, f"cat {VOLUME}/host-secret /data/host-secret")
    assert sorted(os.listdir(VOLUME)) == ["host-secret"]


# --- the daemon's own files --------------------------------------------------------------------


def test_socket_and_state_are_private_to_root(secure, app):
    """Another user, with the daemon's directories as reachable as /var/lib and /run are,
    cannot connect to the CRI socket, list the state, or read any file in it by path."""
    for path in (Path(secure.socket), secure.state_dir, secure.run_dir):
        assert os.stat(path).st_mode & 0o007 == 0 or path.is_dir(), f"{path} open to others"
    files = [p for top in (secure.state_dir, secure.run_dir) for p in top.rglob("*")
             if p.is_file() and not p.is_symlink()]  # fmt: skip
    probe = (
        "import os, socket, sys\n"
        "opened = []\n"
        f"s = socket.socket(socket.AF_UNIX)\n"
        f"try: s.connect({secure.socket!r}); opened.append('socket')\n"
        "except OSError: pass\n"
        f"for d in ({str(secure.state_dir)!r}, {str(secure.run_dir)!r}):\n"
        "    try: os.listdir(d); opened.append(d)\n"
        "    except OSError: pass\n"
        "for path in sys.stdin.read().splitlines():\n"
        "    try: open(path, 'rb').close(); opened.append(path)\n"
        "    except OSError: pass\n"
        "print('\\n'.join(opened))\n"
    )
    mode = os.stat(secure.root).st_mode
    os.chmod(secure.root, 0o711)  # as reachable as /var/lib or /run
    try:
        result = subprocess.run(
            ["/usr/bin/python3", "-I", "-c", probe], input="\n".join(map(str, files)),
            user=65534, group=65534, extra_groups=[], capture_output=True, text=True, timeout=60,
        )  # fmt: skip
    finally:
        os.chmod(secure.root, mode)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == [], f"readable by nobody: {result.stdout}"


def test_registry_credentials_appear_in_no_log_state_metric_or_command_line(secure, app):
    """The password (and its base64 forms) is in none of the daemon's files (state, run dir,
    logs, shim logs), not in /metrics, not in any process's command line or environment, and
    not in the message of a pull that fails for a wrong password."""
    wrong = f"wrong-{uuid.uuid4().hex}"
    with pytest.raises(grpc.RpcError) as err:
        secure.images().PullImage(api_pb2.PullImageRequest(
            image=api_pb2.ImageSpec(image=secure.image.replace(":1", ":2")),
            auth=api_pb2.AuthConfig(auth=base64.b64encode(f"{USER}:{wrong}".encode()).decode()),
        ))  # fmt: skip
    assert err.value.code() == grpc.StatusCode.UNAUTHENTICATED, err.value.details()
    assert wrong not in err.value.details()
    secrets = [s.encode() for s in (secure.secret, wrong)]
    secrets += [base64.b64encode(f"{USER}:{s}".encode()) for s in (secure.secret, wrong)]
    leaks = [str(path) for path in secure.root.rglob("*")
             if path.is_file() and not path.is_symlink() and _holds(path, secrets)]  # fmt: skip
    assert leaks == [], f"credentials found in {leaks}"
    metrics = urllib.request.urlopen(metrics_url(secure), timeout=30).read()
    assert not any(s in metrics for s in secrets)
    for pid in [secure.process.pid, *secure.shim_pids()]:
        for name in ("cmdline", "environ"):
            with contextlib.suppress(FileNotFoundError):
                assert not _holds(Path(f"/proc/{pid}/{name}"), secrets), f"{pid} {name}"


def _holds(path: Path, needles: list[bytes]) -> bool:
    try:
        data = path.read_bytes()
    except OSError:
        return False
    return any(needle in data for needle in needles)
