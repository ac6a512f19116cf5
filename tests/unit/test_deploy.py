"""deploy/: the files operators install agree with the daemon's defaults and with each other."""

from __future__ import annotations

import dataclasses
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from observe_rt import config
from observe_rt.cri.runtime_service import RuntimeServicer
from observe_rt.cri.v1 import api_pb2

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
DEFAULTS = config.DaemonConfig()


def _yaml_keys(path: Path) -> dict[str, str]:
    """Top-level `key: value` lines of a flat YAML file (no PyYAML needed for these)."""
    found = re.findall(r"^([A-Za-z-]+):\s*(\S.*)$", path.read_text(), re.M)
    return dict(found)


def _unit(path: Path) -> dict[str, str]:
    return dict(re.findall(r"^(\w+)=(.*)$", path.read_text(), re.M))


def test_config_example_documents_every_key_with_its_default():
    path = DEPLOY / "config.toml"
    assert config.load(str(path)) == DEFAULTS.with_overrides(
        runtime_handlers={"runc": "/usr/sbin/runc"}
    )
    lines = path.read_text().splitlines()
    for field in dataclasses.fields(config.DaemonConfig):
        if field.name == "runtime_handlers":
            index = lines.index("[runtime_handlers]")
        else:
            # A key whose default is "unset" (None) is shown commented out.
            starts = (f"{field.name} = ", f"# {field.name} = ")
            index = next(i for i, line in enumerate(lines) if line.startswith(starts))
        assert lines[index - 1].startswith("# "), f"{field.name} has no comment above it"


def test_systemd_unit_keeps_containers_across_daemon_restarts():
    unit = _unit(DEPLOY / "systemd" / "observe-rt.service")
    assert unit["KillMode"] == "process"  # shims live in the daemon's cgroup
    assert unit["Restart"] == "always"
    assert unit["ExecStart"].endswith("observe-rt daemon --config /etc/observe-rt/config.toml")
    assert unit["Delegate"] == "yes"


@pytest.mark.skipif(not shutil.which("systemd-analyze"), reason="systemd-analyze not installed")
def test_systemd_unit_verifies(tmp_path):
    text = (DEPLOY / "systemd" / "observe-rt.service").read_text()
    binary = str(Path(sys.executable).with_name("observe-rt"))
    unit = tmp_path / "observe-rt.service"
    unit.write_text(text.replace("/opt/observe-rt/.venv/bin/observe-rt", binary))
    result = subprocess.run(["systemd-analyze", "verify", str(unit)],
                            capture_output=True, text=True, timeout=60)  # fmt: skip
    problems = [line for line in result.stderr.splitlines() if "observe-rt.service" in line]
    assert problems == [], result.stderr


def test_kubelet_and_crictl_use_the_daemon_socket_and_driver():
    endpoint = f"unix://{DEFAULTS.socket}"
    kubelet = _yaml_keys(DEPLOY / "kubelet" / "kubelet-config.yaml")
    assert kubelet["kind"] == "KubeletConfiguration"
    assert kubelet["containerRuntimeEndpoint"] == endpoint
    assert kubelet["imageServiceEndpoint"] == endpoint
    crictl = _yaml_keys(DEPLOY / "crictl.yaml")
    assert crictl["runtime-endpoint"] == crictl["image-endpoint"] == endpoint
    # The driver the kubelet is told must be the one the runtime reports in RuntimeConfig.
    answer = RuntimeServicer.RuntimeConfig.__wrapped__(None, None, None)
    reported = api_pb2.CgroupDriver.Name(answer.linux.cgroup_driver).lower()
    assert kubelet["cgroupDriver"] == reported == "cgroupfs"


def test_scrape_config_targets_the_default_metrics_address():
    text = (DEPLOY / "prometheus" / "prometheus.yml").read_text()
    assert f'targets: ["{DEFAULTS.metrics_address}"]' in text


def test_operator_guide_names_every_deploy_file():
    guide = (DEPLOY / "README.md").read_text()
    files = [p.relative_to(DEPLOY).as_posix() for p in DEPLOY.rglob("*")
             if p.is_file() and p.name != "README.md"]  # fmt: skip
    assert [f for f in files if f not in guide] == []
